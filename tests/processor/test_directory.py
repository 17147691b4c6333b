"""Keys, settings, the directory and registration: trust starts at the root certificate."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from semops.cli.processor import processor_app
from semops.core.errors import SemopsError
from semops.crypto import KeyRing, KeyUse
from semops.processor import ProcessorSettings, load_keys
from semops.processor.directory import DirectoryCache, RouterLink, verify_directory_document
from semops.processor.keys import certificate_record
from semops.protocol import Directory, ParticipantRegistration, open_signed, sign
from tests.processor.network import ROUTER_URL, START, Network, Pki

pytestmark = pytest.mark.anyio
BROKEN_PEM = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"


# --- keys ------------------------------------------------------------------------------------


def test_keys_load_and_secrets_are_made_once_and_private(tmp_path: Path) -> None:
    pki = Pki()
    pki.issue("bank-a", "processor", tmp_path)
    keys = load_keys(tmp_path, "bank-a", START)
    assert keys.sign_key.kid == certificate_record("bank-a", keys.sign_certificate, KeyUse.SIGN).kid
    assert keys.enc_record().use is KeyUse.ENCRYPT
    assert len(keys.pin_key) >= 32 and len(keys.reference_key) >= 32
    assert keys.pin_key != keys.reference_key
    for name in ("pin.key", "reference.key", "operator.token"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600
    again = load_keys(tmp_path, "bank-a", START)
    assert (again.pin_key, again.reference_key, again.operator_token) == (
        keys.pin_key,
        keys.reference_key,
        keys.operator_token,
    )
    assert "bank-a" in repr(keys) and keys.operator_token not in repr(keys)


def test_keys_of_another_party_are_refused(tmp_path: Path) -> None:
    pki = Pki()
    pki.issue("bank-a", "processor", tmp_path)
    with pytest.raises(SemopsError) as refused:
        load_keys(tmp_path, "bank-a", START + 400 * 86400)  # after the certificate expired
    assert refused.value.code == "certificate_invalid"
    other = tmp_path / "other"
    pki.issue("bank-b", "processor", other)
    for suffix in (".crt", ".key", ".enc.crt", ".enc.key"):
        os.replace(other / f"bank-b{suffix}", tmp_path / f"bank-b{suffix}")
    (tmp_path / "bank-b.crt").write_bytes((tmp_path / "bank-a.crt").read_bytes())
    with pytest.raises(SemopsError):  # bank-a's certificate under bank-b's name
        load_keys(tmp_path, "bank-b", START)


def test_a_private_key_that_does_not_match_its_certificate_is_refused(tmp_path: Path) -> None:
    pki = Pki()
    pki.issue("bank-a", "processor", tmp_path)
    spare = tmp_path / "spare"
    pki.issue("bank-a", "processor", spare)
    (tmp_path / "bank-a.key").unlink()
    os.replace(spare / "bank-a.key", tmp_path / "bank-a.key")
    with pytest.raises(ValueError, match="does not belong"):
        load_keys(tmp_path, "bank-a", START)


def test_a_secret_readable_by_others_is_refused(tmp_path: Path) -> None:
    from semops.service.files import SecretFileError

    pki = Pki()
    pki.issue("bank-a", "processor", tmp_path)
    load_keys(tmp_path, "bank-a", START)
    (tmp_path / "pin.key").chmod(0o644)
    with pytest.raises(SecretFileError):
        load_keys(tmp_path, "bank-a", START)


def test_settings_name_the_endpoints() -> None:
    settings = ProcessorSettings(
        processor_id="bank-a",
        kind="bank",
        display_name="Bank A",
        data_dir=Path("/srv/bank-a"),
        router_url=ROUTER_URL,
        scheme_port=9443,
        public_port=9080,
    )
    assert settings.endpoint == "https://127.0.0.1:9443"
    assert settings.wallet_url == "http://127.0.0.1:9080"
    assert settings.database_url == "sqlite+aiosqlite:////srv/bank-a/bank-a.db"
    assert settings.tls.certificate == Path("/srv/bank-a/bank-a.crt")
    proxied = ProcessorSettings(
        processor_id="bank-a",
        kind="bank",
        display_name="Bank A",
        data_dir=Path("/srv"),
        router_url=ROUTER_URL,
        scheme_url="https://bank-a.example:443/",
        public_url="https://wallet.bank-a.example/",
        db_url="postgresql+asyncpg://db/bank_a",
    )
    assert proxied.endpoint == "https://bank-a.example:443"
    assert proxied.wallet_url == "https://wallet.bank-a.example"
    assert proxied.database_url == "postgresql+asyncpg://db/bank_a"


# --- the directory ---------------------------------------------------------------------------


async def test_registration_is_signed_with_the_certified_key(network: Network) -> None:
    bank = await network.add("bank-a", register=False)
    token = bank.processor.directory.registration()
    keys = bank.processor.context.keys
    ring = KeyRing([keys.sign_record()])
    message = open_signed(token, ParticipantRegistration, ring, network.clock.now()).message
    assert message.participant_id == "bank-a"
    assert message.endpoint == bank.processor.settings.endpoint
    assert message.sign_certificate == keys.pem(keys.sign_certificate)
    assert message.enc_certificate == keys.pem(keys.enc_certificate)


async def test_an_older_directory_never_replaces_a_newer_one(network: Network) -> None:
    bank = await network.add("bank-a")
    old = verify_directory_document(network.router.document(), bank.processor.context.keys, START)
    newer = verify_directory_document(network.router.document(), bank.processor.context.keys, START)
    bank.processor.directory.install(newer)
    bank.processor.directory.install(old)
    assert bank.processor.directory.current().directory.serial == newer.directory.serial


async def test_a_directory_from_another_scheme_is_refused(network: Network, tmp_path: Path) -> None:
    bank = await network.add("bank-a")
    foreign = Network(tmp_path / "foreign")
    try:
        document = foreign.router.document()
        with pytest.raises(SemopsError) as refused:
            verify_directory_document(document, bank.processor.context.keys, START)
        assert refused.value.code == "certificate_invalid"
    finally:
        await foreign.close()


async def test_a_directory_signed_with_another_key_is_refused(network: Network) -> None:
    bank = await network.add("bank-a")
    document = network.router.document()
    # Re-sign the same directory with a processor key: the router certificate's key no
    # longer verifies it.
    claims = open_signed(
        document["directory"], Directory, network.router.ring(), START, expected_signer="router"
    ).message
    from semops.crypto import KeyUse as Use
    from semops.crypto import derive_key
    from tests.processor.network import seed

    impostor = derive_key("router", Use.SIGN, seed("impostor router"))
    forged = {**document, "directory": sign(claims, impostor)}
    with pytest.raises(SemopsError) as refused:
        verify_directory_document(forged, bank.processor.context.keys, START)
    assert refused.value.code == "key_unknown"
    with pytest.raises(SemopsError) as broken:
        verify_directory_document(
            {
                **document,
                "router_certificate": BROKEN_PEM,
            },
            bank.processor.context.keys,
            START,
        )
    assert broken.value.code == "certificate_invalid"


async def test_unknown_kids_trigger_a_bounded_number_of_refreshes(network: Network) -> None:
    bank = await network.add("bank-a")
    cache = bank.processor.directory
    fetches = len([call for call in network.router.calls if call == ("GET", "/v1/directory")])
    assert await cache.refresh_if_allowed() is True
    assert await cache.refresh_if_allowed() is False  # too soon after the last one
    after = len([call for call in network.router.calls if call == ("GET", "/v1/directory")])
    assert after == fetches + 1


async def test_a_failed_refresh_keeps_the_directory(network: Network) -> None:
    bank = await network.add("bank-a")
    before = bank.processor.directory.current()
    network.router.mode = "down"
    assert await bank.processor.directory.refresh_if_allowed() is False
    assert bank.processor.directory.current() is before
    with pytest.raises(SemopsError):
        await bank.processor.directory.refresh()


async def test_a_router_answer_that_is_not_a_directory_is_refused(network: Network) -> None:
    bank = await network.add("bank-a", register=False)

    class Garbage:
        async def request(self, *args: object, **kwargs: object) -> tuple[int, str, bytes]:
            return 200, "application/json", b"not json"

        async def close(self) -> None:
            return None

    cache = DirectoryCache(
        bank.processor.settings,
        bank.processor.context.keys,
        RouterLink(Garbage(), ROUTER_URL),
        network.clock,
    )
    with pytest.raises(SemopsError) as refused:
        await cache.refresh()
    assert refused.value.code == "directory_invalid"
    assert not cache.ready
    with pytest.raises(SemopsError) as unavailable:
        cache.current()
    assert unavailable.value.code == "unavailable"


async def test_the_processor_rejoins_when_the_router_forgot_it(network: Network) -> None:
    bank = await network.add("bank-a")
    del network.router.entries["bank-a"]
    posts = len([c for c in network.router.calls if c[1] == "/v1/participants"])
    await bank.processor._refresh_directory()
    assert len([c for c in network.router.calls if c[1] == "/v1/participants"]) == posts + 1


# --- the command line ------------------------------------------------------------------------


def test_the_serve_command_documents_its_options() -> None:
    result = CliRunner().invoke(processor_app, ["serve", "--help"])
    assert result.exit_code == 0
    for option in (
        "--id",
        "--data-dir",
        "--router-url",
        "--kind",
        "--db",
        "--public-port",
        "--scheme-port",
        "--currency",
        "--public-url",
        "--scheme-url",
    ):
        assert option in result.output


def test_the_serve_command_refuses_missing_or_bad_options() -> None:
    runner = CliRunner()
    missing = runner.invoke(processor_app, ["serve", "--id", "bank-a"])
    assert missing.exit_code == 2
    bad_kind = runner.invoke(
        processor_app,
        [
            "serve",
            "--id",
            "x1",
            "--data-dir",
            "/nonexistent",
            "--router-url",
            ROUTER_URL,
            "--kind",
            "crypto-exchange",
        ],
    )
    assert bad_kind.exit_code == 2


def test_wallet_config_is_json_serialisable_for_every_field(tmp_path: Path) -> None:
    pki = Pki()
    pki.issue("bank-a", "processor", tmp_path)
    keys = load_keys(tmp_path, "bank-a", START)
    assert json.loads(json.dumps({"kid": keys.enc_record().kid}))["kid"].startswith("bank-a:")
