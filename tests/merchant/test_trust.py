"""The notice key is trusted only if it chains to the scheme root, or matches the pin (H2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from semops.core.errors import SemopsError
from semops.core.limits import PARTY_CERT_VALIDITY_DAYS
from semops.crypto import KeyUse, derive_key, derive_private_key, thumbprint
from semops.crypto.pki import certificate_key_record as _certificate_key_record
from semops.crypto.pki import (
    certificate_pem,
    issue_encryption_certificate,
    issue_party_certificate,
    make_root_ca,
)
from semops.merchant.main import SettingsRefused, check_settings
from semops.merchant.service import MerchantSettings
from semops.merchant.trust import ProcessorTrust, trusted_keys
from semops.protocol import DirectoryKey

from .fakes import PROCESSOR, ROOT_KEY, SIGN_KEY, SchemePki, seed

NOW = 1_800_000_000


def certificate_key_record(owner: str, certificate: Any) -> Any:
    return _certificate_key_record(owner, certificate, KeyUse.SIGN)


PKI = SchemePki(NOW)
TRUST = ProcessorTrust(PROCESSOR, PKI.root)
AT = datetime.fromtimestamp(NOW, UTC)


def _refused(document: Any, trust: ProcessorTrust = TRUST, now: int = NOW) -> str:
    with pytest.raises(SemopsError) as caught:
        trusted_keys(document, trust, now)
    return caught.value.code


def _document(certificate: Any, listed: Any = None, processor_id: str = PROCESSOR) -> Any:
    record = listed or certificate_key_record(processor_id, certificate)
    return {
        **PKI.keys_document(),
        "processor_id": processor_id,
        "signing_key": DirectoryKey.from_record(record).model_dump(mode="json"),
        "signing_certificate": certificate_pem(certificate).decode("ascii"),
    }


def test_the_processors_certified_key_is_trusted() -> None:
    (record,) = trusted_keys(PKI.keys_document(), TRUST, NOW)
    assert record.kid == SIGN_KEY.kid and record.owner == PROCESSOR
    assert record.not_after == int(PKI.certificate.not_valid_after_utc.timestamp())


def test_a_second_certificate_the_root_issued_for_the_processor_is_not_trusted() -> None:
    """The combination the review found: an old or rogue certificate of this very processor
    (chains to the root, names the processor) swapped in on the link. Only the key the
    router-signed directory lists as the processor's active one is trusted."""
    rogue = derive_key(PROCESSOR, KeyUse.SIGN, seed("second certificate"))
    second = issue_party_certificate(
        ROOT_KEY, PKI.root, rogue.key.public_key(), PROCESSOR, "processor", AT, 7
    )
    assert _refused(_document(second)) == "key_unknown"


def test_a_key_or_certificate_the_router_revoked_is_not_trusted() -> None:
    assert _refused(PKI.keys_document(key_status="revoked")) == "key_revoked"
    serial = f"{PKI.certificate.serial_number:x}"
    assert _refused(PKI.keys_document(revoked_serials=(serial,))) == "certificate_revoked"


def test_a_key_without_a_directory_signed_by_the_schemes_router_is_not_trusted() -> None:
    document = PKI.keys_document()
    assert _refused({**document, "directory": None}) == "directory_invalid"
    # The processor's own certificate is not a router's: its "directory" is refused.
    processor_signed = {
        **document,
        "router_certificate": certificate_pem(PKI.certificate).decode("ascii"),
    }
    assert _refused(processor_signed) == "directory_invalid"
    stale = NOW + 2 * 86_400
    assert _refused(document, now=stale) == "message_expired"


def test_a_key_without_its_certificate_is_not_trusted() -> None:
    document = PKI.keys_document()
    del document["signing_certificate"]
    assert _refused(document) == "certificate_invalid"
    assert _refused({**document, "signing_certificate": "not a certificate"}) == (
        "certificate_invalid"
    )


def test_a_certificate_from_another_root_is_not_trusted() -> None:
    """The on-path attacker's own root, with a name like the scheme's: refused."""
    attacker_root_key = derive_private_key(seed("attacker root"))
    attacker_root = make_root_ca(attacker_root_key, "SEMOPS test root", AT, 1)
    attacker = derive_key(PROCESSOR, KeyUse.SIGN, seed("attacker"))
    forged = issue_party_certificate(
        attacker_root_key, attacker_root, attacker.key.public_key(), PROCESSOR, "processor", AT, 9
    )
    assert _refused(_document(forged)) == "certificate_invalid"


def test_another_processors_certificate_or_document_is_not_trusted() -> None:
    other = derive_key("bank-a", KeyUse.SIGN, seed("bank-a"))
    certificate = issue_party_certificate(
        ROOT_KEY, PKI.root, other.key.public_key(), "bank-a", "processor", AT, 3
    )
    assert _refused(_document(certificate, processor_id="bank-a")) == "key_unknown"
    mixed = {**_document(certificate, processor_id="bank-a"), "processor_id": PROCESSOR}
    assert _refused(mixed) == "certificate_invalid"


def test_an_encryption_certificate_is_not_a_signing_key() -> None:
    certificate = issue_encryption_certificate(
        ROOT_KEY, PKI.root, SIGN_KEY.key.public_key(), PROCESSOR, "processor", AT, 4
    )
    assert _refused(_document(certificate, certificate_key_record(PROCESSOR, PKI.certificate)))


def test_a_listed_key_that_is_not_the_certified_one_is_not_trusted() -> None:
    other = derive_key(PROCESSOR, KeyUse.SIGN, seed("listed"))
    document = _document(PKI.certificate, other.public_record(0, 2**34))
    assert _refused(document) == "key_unknown"


def test_an_expired_certificate_is_not_trusted() -> None:
    later = NOW + (PARTY_CERT_VALIDITY_DAYS + 1) * 86400
    assert _refused(PKI.keys_document(), now=later) == "certificate_invalid"
    assert _refused(PKI.keys_document(), now=NOW - int(timedelta(days=2).total_seconds()))


def test_a_pinned_key_is_trusted_and_no_other() -> None:
    pin = thumbprint(SIGN_KEY.public_record(0, 1).jwk)
    pinned = ProcessorTrust(PROCESSOR, key_pin=pin)
    (record,) = trusted_keys(PKI.keys_document(), pinned, NOW)
    assert record.kid == SIGN_KEY.kid
    other = derive_key(PROCESSOR, KeyUse.SIGN, seed("not pinned"))
    document = {
        "processor_id": PROCESSOR,
        "signing_key": DirectoryKey.from_record(other.public_record(0, 2**34)).model_dump(
            mode="json"
        ),
    }
    assert _refused(document, pinned) == "key_unknown"
    # With both, a key must chain and match the pin.
    both = ProcessorTrust(PROCESSOR, PKI.root, thumbprint(other.public_record(0, 1).jwk))
    assert _refused(PKI.keys_document(), both) == "key_unknown"


def test_a_trust_anchor_is_set_up_completely_or_not_at_all() -> None:
    with pytest.raises(ValueError, match="trust anchor"):
        ProcessorTrust(PROCESSOR)
    with pytest.raises(ValueError, match="processor's id"):
        ProcessorTrust(None, PKI.root)
    with pytest.raises(ValueError, match="thumbprint"):
        ProcessorTrust(PROCESSOR, key_pin="sha256:abc")


def _settings(**changes: Any) -> MerchantSettings:
    values: dict[str, Any] = {
        "merchant_id": "corner-shop",
        "data_dir": Path("/nonexistent"),
        "processor_url": "http://127.0.0.1:8510",
        "api_token_file": Path("/run/secrets/token"),
        "root_ca_file": Path("/run/secrets/root-ca.crt"),
        "processor_id": PROCESSOR,
    }
    return MerchantSettings(**{**values, **changes})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"api_token_file": None}, "--api-token-file"),
        ({"api_token_file": None, "development": True, "host": "0.0.0.0"}, "loopback"),
        ({"development": True, "host": "192.168.1.20"}, "loopback"),
        ({"root_ca_file": None}, "trust anchor"),
        ({"processor_id": None}, "--processor-id"),
        ({"processor_url": "http://processor.example"}, "https"),
        ({"processor_url": "https://processor.example/?x="}, "query"),
    ],
)
def test_settings_that_would_leave_money_open_are_refused(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(SettingsRefused, match=message):
        check_settings(_settings(**changes))


def test_development_on_loopback_and_a_pinned_key_are_enough() -> None:
    pin = thumbprint(SIGN_KEY.public_record(0, 1).jwk)
    check_settings(_settings(api_token_file=None, development=True))
    check_settings(_settings(root_ca_file=None, processor_id=None, processor_key_pin=pin))
    check_settings(_settings(processor_url="https://processor.example"))
