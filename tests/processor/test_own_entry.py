"""A processor checks its own directory entry at every install (processor/directory.py).

Issue 11, H1: a second certificate re-registered bank-a's keys and endpoint and bank-a
never noticed. Now every directory a processor installs is compared with what it
registered; a difference raises the alarm (error log line, the gauge
`semops_processor_directory_entry_mismatch`, a banner on the back office's overview), a
key the directory lists as revoked is refused by the processor's own ring even when it is
its own, and wallets are never told to seal to a key that is not the processor's.
"""

from __future__ import annotations

from typing import Any

import pytest

from semops.core.errors import E, SemopsError
from semops.crypto import KeyRing, KeyUse, derive_key, read_unverified_claims
from semops.processor.directory import DirectoryCache, previous_key_file
from semops.protocol import (
    DirectoryEntry,
    DirectoryKey,
    ParticipantRegistration,
    endorsement_signer,
    open_signed,
    parse_claims,
)
from semops.service.files import write_private_key
from semops.wallet.core import verify_config
from tests.processor.network import START, Network, Node, seed
from tests.processor.test_backoffice import BO, signed_in

pytestmark = pytest.mark.anyio


def gauge(node: Node) -> float:
    value = node.processor.context.metrics.directory_entry_mismatch._value.get()  # type: ignore[attr-defined]
    return float(value)


async def listed_as(network: Network, node: Node, **changes: Any) -> tuple[str, ...]:
    """Publish our entry with `changes` (on top of what we registered) and install it."""
    entry = network.router.entries[node.id]
    network.router.entries[node.id] = entry.model_copy(
        update={"endpoint": node.processor.settings.endpoint} | changes
    )
    await network.refresh_all()
    return node.processor.directory.entry_differences


def stranger_keys(party: str) -> tuple[DirectoryKey, DirectoryKey]:
    sign = derive_key(party, KeyUse.SIGN, seed("a second certificate's signing key"))
    enc = derive_key(party, KeyUse.ENCRYPT, seed("a second certificate's encryption key"))
    return (
        DirectoryKey.from_record(sign.public_record(START - 60, START + 86400)),
        DirectoryKey.from_record(enc.public_record(START - 60, START + 86400)),
    )


async def test_an_entry_as_registered_raises_no_alarm(network: Network) -> None:
    bank = await network.add("bank-a")
    assert await listed_as(network, bank) == ()
    assert gauge(bank) == 0


async def test_an_entry_taken_over_raises_the_alarm_until_it_is_restored(
    network: Network,
) -> None:
    bank = await network.add("bank-a")
    ours = network.router.entries["bank-a"].keys
    differences = await listed_as(
        network, bank, keys=stranger_keys("bank-a"), endpoint="https://attacker.test:443"
    )
    assert differences == ("sign_key", "enc_key", "endpoint")
    assert gauge(bank) == 3
    office = await signed_in(bank)
    page = await office.get(f"{BO}/")
    assert page.status_code == 200
    assert 'id="directory-alarm"' in page.text and "sign_key, enc_key, endpoint" in page.text
    # The operator puts our entry back: the alarm clears at the next install.
    assert await listed_as(network, bank, keys=ours) == ()
    assert gauge(bank) == 0
    page = await office.get(f"{BO}/")
    assert 'id="directory-alarm"' not in page.text
    await office.aclose()


async def test_our_own_revoked_key_is_refused_by_our_own_ring(network: Network) -> None:
    bank = await network.add("bank-a")
    kid = bank.processor.context.keys.sign_record().kid
    # Before any directory lists us, our own keys are known (on-us works from the start).
    entry = network.router.entries["bank-a"]
    revoked = tuple(
        key.model_copy(update={"status": "revoked"}) if key.kid == kid else key
        for key in entry.keys
    )
    assert await listed_as(network, bank, keys=revoked) == ("sign_key_revoked",)
    with pytest.raises(SemopsError) as refused:
        bank.processor.directory.ring.resolve(kid, KeyUse.SIGN, START)
    assert refused.value.spec is E.KEY_REVOKED


async def test_wallets_are_told_only_our_own_encryption_key(network: Network) -> None:
    bank = await network.add("bank-a")
    own = bank.processor.context.keys.enc_record().kid
    entry: DirectoryEntry = network.router.entries["bank-a"]
    sign_key = next(key for key in entry.keys if key.use == "sig")
    await listed_as(network, bank, keys=(sign_key, stranger_keys("bank-a")[1]))
    document = bank.processor.config_document()
    assert document["encryption_key"]["kid"] == own
    # The directory says otherwise: a wallet refuses the configuration (fails closed).
    with pytest.raises(SemopsError) as refused:
        verify_config(document, START)
    assert refused.value.spec is E.DIRECTORY_INVALID


async def test_with_a_previous_key_the_registration_is_endorsed_by_it(network: Network) -> None:
    """A rotation: the router still knows bank-a.previous.key; the new key signs the
    registration and the previous one endorses it (protocol.sign_registration)."""
    bank = await network.add("bank-a")
    keys = bank.processor.context.keys
    plain = parse_claims(
        read_unverified_claims(bank.processor.directory.registration()), ParticipantRegistration
    )
    assert plain.endorsement is None  # nothing to endorse without a previous key
    previous = derive_key("bank-a", KeyUse.SIGN, seed("bank-a's previous signing key"))
    write_private_key(previous_key_file(bank.data_dir, "bank-a"), previous.key)
    cache = DirectoryCache(
        bank.processor.settings, keys, bank.processor.directory.link, network.clock
    )
    token = cache.registration()
    registration = parse_claims(read_unverified_claims(token), ParticipantRegistration)
    record = previous.public_record(START - 60, START + 600)
    assert endorsement_signer(registration, record, START) == previous.kid
    # The registration itself is signed by the key of the certificate it carries.
    open_signed(token, ParticipantRegistration, KeyRing([keys.sign_record()]), START)
