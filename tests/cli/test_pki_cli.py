"""`semops pki`: files, modes, refusals and exit codes, in-process and as a real process."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner, Result

from semops.cli import app
from semops.cli import pki as cli_pki
from semops.crypto import pki, public_jwk, thumbprint

runner = CliRunner()
SEMOPS = Path(sys.executable).parent / "semops"


def run(*args: str | Path) -> Result:
    return runner.invoke(app, ["pki", *(str(arg) for arg in args)])


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def public_bytes(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def assert_clean_failure(result: Result, exit_code: int, *needles: str) -> None:
    """One readable line on stderr: no traceback, no key material."""
    assert result.exit_code == exit_code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert "PRIVATE KEY" not in result.output
    for needle in needles:
        assert needle in result.stderr, result.stderr


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "ca"
    assert run("init", "--dir", directory).exit_code == 0
    return directory


@pytest.fixture
def other_ca_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "other-ca"
    assert run("init", "--dir", directory, "--name", "Other Root").exit_code == 0
    return directory


@pytest.fixture(params=[0o000, 0o277], ids=["umask-000", "umask-277"])
def odd_umask(request: pytest.FixtureRequest) -> Iterator[None]:
    """A umask that adds nothing, and one that would take the owner's write bit."""
    previous = os.umask(request.param)
    try:
        yield
    finally:
        os.umask(previous)


# --- init ---------------------------------------------------------------------------------


def test_init_makes_a_0600_root_key_and_its_certificate(tmp_path: Path) -> None:
    directory = tmp_path / "ca"
    result = run("init", "--dir", directory, "--name", "Test Root")
    assert result.exit_code == 0, result.output
    key_path, cert_path = directory / "root-ca.key", directory / "root-ca.crt"
    assert mode(key_path) == 0o600
    assert mode(directory) == 0o700
    key = pki.load_private_key_pem(key_path.read_bytes())
    cert = pki.load_certificate_pem(cert_path.read_bytes())
    assert public_bytes(cert.public_key()) == public_bytes(key.public_key())
    assert cert.subject.rfc4514_string() == "O=SEMOPS,CN=Test Root"
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert pki.certificate_fingerprint(cert) in result.stdout
    assert "PRIVATE KEY" not in result.output


def test_init_modes_are_exact_whatever_the_umask(tmp_path: Path, odd_umask: None) -> None:
    result = run("init", "--dir", tmp_path / "ca")
    assert result.exit_code == 0, result.output
    assert mode(tmp_path / "ca") == 0o700
    assert mode(tmp_path / "ca" / "root-ca.key") == 0o600
    assert mode(tmp_path / "ca" / "root-ca.crt") == 0o644


def test_output_is_printed_verbatim(tmp_path: Path) -> None:
    """Rich must not turn ':AB:' in a path or fingerprint into an emoji, nor eat '[b]'."""
    directory = tmp_path / "ca:ab:[b]x"
    result = run("init", "--dir", directory)
    assert result.exit_code == 0, result.output
    assert str(directory) in result.stdout


def test_private_files_are_never_opened_over_an_existing_file(tmp_path: Path) -> None:
    """The O_EXCL guard itself, beneath the friendlier existence check."""
    path = tmp_path / "taken.key"
    path.write_bytes(b"keep me")
    with pytest.raises(FileExistsError):
        cli_pki._write_new(path, b"new key", 0o600)
    assert path.read_bytes() == b"keep me"
    link = tmp_path / "link.key"
    link.symlink_to(tmp_path / "target")
    with pytest.raises(FileExistsError):
        cli_pki._write_new(link, b"new key", 0o600)
    assert not (tmp_path / "target").exists()


def test_init_refuses_to_overwrite_an_existing_root(ca_dir: Path) -> None:
    key_before = (ca_dir / "root-ca.key").read_bytes()
    cert_before = (ca_dir / "root-ca.crt").read_bytes()
    result = run("init", "--dir", ca_dir)
    assert_clean_failure(result, 1, "refusing to overwrite")
    assert (ca_dir / "root-ca.key").read_bytes() == key_before
    assert (ca_dir / "root-ca.crt").read_bytes() == cert_before


def test_init_refuses_when_a_stray_key_file_exists(tmp_path: Path) -> None:
    (tmp_path / "root-ca.key").write_bytes(b"someone else's key")
    assert_clean_failure(run("init", "--dir", tmp_path), 1, "refusing to overwrite")
    assert (tmp_path / "root-ca.key").read_bytes() == b"someone else's key"
    assert not (tmp_path / "root-ca.crt").exists()


def test_init_refuses_a_key_path_that_is_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    (tmp_path / "root-ca.key").symlink_to(target)
    assert_clean_failure(run("init", "--dir", tmp_path), 1, "refusing to overwrite")
    assert not target.exists()


def test_init_bad_name_is_bad_input(tmp_path: Path) -> None:
    assert_clean_failure(run("init", "--dir", tmp_path, "--name", "x" * 65), 2, "root name")
    assert not (tmp_path / "root-ca.key").exists()


# --- issue --------------------------------------------------------------------------------


def test_issue_makes_both_key_pairs_and_copies_the_trust_anchor(ca_dir: Path) -> None:
    result = run("issue", "bank-a", "--role", "processor", "--dir", ca_dir)
    assert result.exit_code == 0, result.output
    out = ca_dir / "bank-a"
    assert sorted(path.name for path in out.iterdir()) == [
        "bank-a.crt",
        "bank-a.enc.crt",
        "bank-a.enc.key",
        "bank-a.key",
        "root-ca.crt",
    ]
    assert mode(out / "bank-a.key") == 0o600
    assert mode(out / "bank-a.enc.key") == 0o600
    assert (out / "root-ca.crt").read_bytes() == (ca_dir / "root-ca.crt").read_bytes()
    root = pki.load_certificate_pem((out / "root-ca.crt").read_bytes())
    now = datetime.now(UTC)
    sign_cert = pki.load_certificate_pem((out / "bank-a.crt").read_bytes())
    enc_cert = pki.load_certificate_pem((out / "bank-a.enc.crt").read_bytes())
    sign = pki.validate_chain(sign_cert, root, now, expected_party="bank-a", expected_usage="sign")
    enc = pki.validate_chain(enc_cert, root, now, expected_party="bank-a", expected_usage="encrypt")
    assert sign.role == enc.role == "processor"
    sign_key = pki.load_private_key_pem((out / "bank-a.key").read_bytes())
    enc_key = pki.load_private_key_pem((out / "bank-a.enc.key").read_bytes())
    assert public_bytes(sign_key.public_key()) == public_bytes(sign_cert.public_key())
    assert public_bytes(enc_key.public_key()) == public_bytes(enc_cert.public_key())
    assert public_bytes(sign_key.public_key()) != public_bytes(enc_key.public_key())
    assert sign_cert.serial_number != enc_cert.serial_number
    assert "PRIVATE KEY" not in result.output


def test_issue_modes_are_exact_whatever_the_umask(ca_dir: Path, odd_umask: None) -> None:
    assert run("issue", "router", "--role", "router", "--dir", ca_dir).exit_code == 0
    assert mode(ca_dir / "router" / "router.key") == 0o600
    assert mode(ca_dir / "router" / "router.enc.key") == 0o600
    assert mode(ca_dir / "router") == 0o700


def test_issue_with_out_hosts_and_ips(ca_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "svc"
    result = run(
        "issue",
        "mno-1",
        "--role",
        "processor",
        "--dir",
        ca_dir,
        "--out",
        out,
        "--host",
        "mno-1.example",
        "--host",
        "localhost",
        "--ip",
        "10.1.2.3",
    )
    assert result.exit_code == 0, result.output
    cert = pki.load_certificate_pem((out / "mno-1.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mno-1.example", "localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.1.2.3"]
    assert not (ca_dir / "mno-1").exists()


def test_issue_defaults_to_localhost_and_loopback(ca_dir: Path) -> None:
    assert run("issue", "bank-a", "--role", "processor", "--dir", ca_dir).exit_code == 0
    cert = pki.load_certificate_pem((ca_dir / "bank-a" / "bank-a.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


@pytest.mark.parametrize("party_id", ["A", "x", "Bank", "bank_a", "bank.a", "b" * 33, "bank-"])
def test_issue_bad_party_id_is_exit_2_with_a_message(ca_dir: Path, party_id: str) -> None:
    result = run("issue", party_id, "--role", "processor", "--dir", ca_dir)
    assert_clean_failure(result, 2, "party id")
    assert sorted(path.name for path in ca_dir.iterdir()) == ["root-ca.crt", "root-ca.key"]


def test_issue_bad_ip_or_host_is_exit_2(ca_dir: Path) -> None:
    result = run("issue", "bank-a", "--role", "processor", "--dir", ca_dir, "--ip", "1.2.3")
    assert_clean_failure(result, 2, "not an IP address")
    result = run("issue", "bank-a", "--role", "processor", "--dir", ca_dir, "--host", "a_b")
    assert_clean_failure(result, 2, "not a host name")
    assert not (ca_dir / "bank-a").exists()


def test_issue_unknown_role_is_exit_2(ca_dir: Path) -> None:
    result = run("issue", "bank-a", "--role", "merchant", "--dir", ca_dir)
    assert result.exit_code == 2
    assert not (ca_dir / "bank-a").exists()


def test_issue_refuses_to_overwrite_a_party(ca_dir: Path) -> None:
    assert run("issue", "bank-a", "--role", "processor", "--dir", ca_dir).exit_code == 0
    key_before = (ca_dir / "bank-a" / "bank-a.key").read_bytes()
    result = run("issue", "bank-a", "--role", "processor", "--dir", ca_dir)
    assert_clean_failure(result, 1, "refusing to overwrite")
    assert (ca_dir / "bank-a" / "bank-a.key").read_bytes() == key_before


def test_issue_without_a_root_is_a_clean_failure(tmp_path: Path) -> None:
    result = run("issue", "bank-a", "--role", "processor", "--dir", tmp_path / "nothing")
    assert_clean_failure(result, 1, "does not exist")
    assert len(result.stderr.strip().splitlines()) == 1


def test_issue_refuses_an_out_dir_holding_another_root(
    ca_dir: Path, other_ca_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "svc"
    out.mkdir()
    (out / "root-ca.crt").write_bytes((other_ca_dir / "root-ca.crt").read_bytes())
    result = run("issue", "bank-a", "--role", "processor", "--dir", ca_dir, "--out", out)
    assert_clean_failure(result, 1, "different root")
    assert sorted(path.name for path in out.iterdir()) == ["root-ca.crt"]


def test_issue_with_a_corrupt_root_key_is_a_clean_failure(ca_dir: Path) -> None:
    (ca_dir / "root-ca.key").write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n")
    result = run("issue", "bank-a", "--role", "processor", "--dir", ca_dir)
    assert_clean_failure(result, 1, "error:")
    assert not (ca_dir / "bank-a" / "bank-a.key").exists()


def test_issue_with_a_mismatched_root_key_is_refused(ca_dir: Path, other_ca_dir: Path) -> None:
    (ca_dir / "root-ca.key").unlink()
    (ca_dir / "root-ca.key").write_bytes((other_ca_dir / "root-ca.key").read_bytes())
    result = run("issue", "bank-a", "--role", "processor", "--dir", ca_dir)
    assert_clean_failure(result, 1, "does not belong")


# --- verify and show ----------------------------------------------------------------------


def test_verify_prints_the_identity(ca_dir: Path) -> None:
    assert run("issue", "router", "--role", "router", "--dir", ca_dir).exit_code == 0
    result = run("verify", ca_dir / "router" / "router.enc.crt", "--root", ca_dir / "root-ca.crt")
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()[1:]}
    assert lines["party"] == "router"
    assert lines["role"] == "router"
    assert lines["usage"] == "encrypt"
    assert lines["expires"].startswith(str(datetime.now(UTC).year + 1))


def test_verify_a_certificate_from_another_root_exits_1(ca_dir: Path, other_ca_dir: Path) -> None:
    assert run("issue", "bank-a", "--role", "processor", "--dir", other_ca_dir).exit_code == 0
    result = run("verify", other_ca_dir / "bank-a" / "bank-a.crt", "--root", ca_dir / "root-ca.crt")
    assert_clean_failure(result, 1, "certificate_invalid")
    assert len(result.stderr.strip().splitlines()) == 1


def test_verify_checks_expected_party_and_usage(ca_dir: Path) -> None:
    assert run("issue", "bank-a", "--role", "processor", "--dir", ca_dir).exit_code == 0
    cert, root = ca_dir / "bank-a" / "bank-a.crt", ca_dir / "root-ca.crt"
    assert (
        run("verify", cert, "--root", root, "--party", "bank-a", "--usage", "sign").exit_code == 0
    )
    assert_clean_failure(run("verify", cert, "--root", root, "--party", "bank-b"), 1, "party")
    assert_clean_failure(run("verify", cert, "--root", root, "--usage", "encrypt"), 1, "signing")


def test_verify_a_key_file_leaks_nothing(ca_dir: Path) -> None:
    key_path = ca_dir / "root-ca.key"
    result = run("verify", key_path, "--root", ca_dir / "root-ca.crt")
    assert_clean_failure(result, 1, "error:")
    key_body = key_path.read_text().splitlines()[1]
    assert key_body not in result.output


def test_verify_a_missing_file_is_a_clean_failure(ca_dir: Path) -> None:
    result = run("verify", ca_dir / "nope.crt", "--root", ca_dir / "root-ca.crt")
    assert_clean_failure(result, 1, "does not exist")


def test_show_prints_subject_names_validity_and_fingerprint(ca_dir: Path) -> None:
    assert run("issue", "bank-a", "--role", "processor", "--dir", ca_dir).exit_code == 0
    path = ca_dir / "bank-a" / "bank-a.crt"
    result = run("show", path)
    assert result.exit_code == 0, result.output
    cert = pki.load_certificate_pem(path.read_bytes())
    assert "OU=processor,O=SEMOPS,CN=bank-a" in result.stdout
    assert "URI:urn:semops:processor:bank-a" in result.stdout
    assert "DNS:localhost" in result.stdout
    assert "IP:127.0.0.1" in result.stdout
    assert cert.not_valid_after_utc.isoformat() in result.stdout
    assert pki.certificate_fingerprint(cert) in result.stdout
    # The pin `semops merchant serve --processor-key-pin` takes: the key's RFC 7638 thumbprint.
    assert thumbprint(public_jwk(cert.public_key())) in result.stdout  # type: ignore[arg-type]


def test_show_garbage_is_a_clean_failure(tmp_path: Path) -> None:
    path = tmp_path / "junk.crt"
    path.write_bytes(b"junk")
    assert_clean_failure(run("show", path), 1, "error:")


# --- The real command, as a separate process ----------------------------------------------


def semops(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SEMOPS), "pki", *(str(arg) for arg in args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_real_process_init_issue_verify(tmp_path: Path) -> None:
    assert SEMOPS.exists(), f"console script missing: {SEMOPS}"
    ca, other = tmp_path / "ca", tmp_path / "other"

    done = semops("init", "--dir", ca)
    assert done.returncode == 0, done.stderr
    assert mode(ca / "root-ca.key") == 0o600

    again = semops("init", "--dir", ca)
    assert again.returncode == 1
    assert "refusing to overwrite" in again.stderr
    assert "Traceback" not in again.stderr

    done = semops("issue", "bank-a", "--role", "processor", "--dir", ca)
    assert done.returncode == 0, done.stderr
    assert mode(ca / "bank-a" / "bank-a.key") == 0o600
    assert mode(ca / "bank-a" / "bank-a.enc.key") == 0o600

    bad = semops("issue", "Bank_A", "--role", "processor", "--dir", ca)
    assert bad.returncode == 2
    assert "party id" in bad.stderr
    assert "Traceback" not in bad.stderr

    done = semops("verify", ca / "bank-a" / "bank-a.crt", "--root", ca / "bank-a" / "root-ca.crt")
    assert done.returncode == 0, done.stderr
    assert "bank-a" in done.stdout and "processor" in done.stdout and "sign" in done.stdout

    assert semops("init", "--dir", other).returncode == 0
    refused = semops("verify", ca / "bank-a" / "bank-a.crt", "--root", other / "root-ca.crt")
    assert refused.returncode == 1
    assert "certificate_invalid" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert "PRIVATE KEY" not in refused.stdout + refused.stderr
