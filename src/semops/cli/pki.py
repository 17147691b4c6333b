"""`semops pki`: the scheme's certificate authority, as a shell over `semops.crypto.pki`.

This module reads the clock, makes keys and serial numbers, and touches files; every
decision about what a certificate contains or whether it is valid is made by the pure
`semops.crypto.pki`. Private keys are created with `O_CREAT | O_EXCL` and mode 0600, so a
key file is never readable by others, not even for an instant, and an existing key is
never overwritten. Errors are one readable line on stderr; never a traceback, never key
material. Exit codes: 0 success, 1 operating failure (refused, invalid, missing file),
2 bad input (as for any usage error).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Final, NoReturn

import typer
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from rich.console import Console
from rich.markup import escape

from semops.core.errors import SemopsError
from semops.crypto import pki, public_jwk, thumbprint

ROOT_KEY_FILE: Final = "root-ca.key"
ROOT_CERT_FILE: Final = "root-ca.crt"
DEFAULT_ROOT_NAME: Final = "SEMOPS Root CA"
DEFAULT_HOSTS: Final = ("localhost",)
DEFAULT_IPS: Final = ("127.0.0.1",)
SECRET_FILE_MODE: Final = 0o600
PUBLIC_FILE_MODE: Final = 0o644
KEY_DIR_MODE: Final = 0o700
EXIT_FAILURE: Final = 1
EXIT_BAD_INPUT: Final = 2

pki_app = typer.Typer(
    help="Scheme PKI: root CA and participant certificates.", no_args_is_help=True
)

# Consoles look up sys.stdout/sys.stderr when printing, so test runners can capture them.
# No emoji codes: a fingerprint's ":AB:" would otherwise print as a picture.
_out = Console(soft_wrap=True, highlight=False, emoji=False)
_err = Console(stderr=True, soft_wrap=True, highlight=False, emoji=False)

# Errors an operator can cause (bad files, bad input, refused certificates). Anything else
# is a bug and should be loud.
_EXPECTED_ERRORS: Final = (SemopsError, ValueError, TypeError, OSError, UnsupportedAlgorithm)


class RoleChoice(StrEnum):
    ROUTER = "router"
    PROCESSOR = "processor"


class UsageChoice(StrEnum):
    SIGN = "sign"
    ENCRYPT = "encrypt"


_ROLES: Final[dict[RoleChoice, pki.Role]] = {
    RoleChoice.ROUTER: "router",
    RoleChoice.PROCESSOR: "processor",
}
_USAGES: Final[dict[UsageChoice, pki.Usage]] = {
    UsageChoice.SIGN: "sign",
    UsageChoice.ENCRYPT: "encrypt",
}


# --- Output and errors --------------------------------------------------------------------


def _fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    _err.print(f"[bold red]error:[/bold red] {escape(message)}")
    raise typer.Exit(code)


def _describe(error: BaseException) -> str:
    if isinstance(error, SemopsError):
        return f"{error.detail} ({error.code})"
    if isinstance(error, FileExistsError):
        return f"{error.filename} already exists; refusing to overwrite it"
    if isinstance(error, FileNotFoundError):
        return f"{error.filename} does not exist"
    if isinstance(error, OSError):
        return f"{error.filename}: {error.strerror}" if error.filename else str(error.strerror)
    return str(error).splitlines()[0] if str(error) else type(error).__name__


@contextmanager
def _errors_exit(code: int = EXIT_FAILURE) -> Iterator[None]:
    """Turn an expected error into one line on stderr and an exit code."""
    try:
        yield
    except _EXPECTED_ERRORS as error:
        _fail(_describe(error), code)


def _field(label: str, value: str) -> None:
    _out.print(f"[bold]{label:<12}[/bold] {escape(value)}")


# --- Files --------------------------------------------------------------------------------


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create `path` with `mode` from the first instant; refuse if anything is there."""
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, mode)
    with os.fdopen(fd, "wb") as file:
        # The umask can only have removed bits from `mode`; make it exact before any data.
        os.fchmod(file.fileno(), mode)
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _make_private_dir(directory: Path) -> None:
    """Create `directory` as 0700 (exactly, whatever the umask); leave an existing one be."""
    if not directory.is_dir():
        directory.mkdir(mode=KEY_DIR_MODE, parents=True)
        directory.chmod(KEY_DIR_MODE)


def _refuse_existing(*paths: Path) -> None:
    for path in paths:
        if path.exists() or path.is_symlink():
            _fail(f"{path} already exists; refusing to overwrite it")


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _now() -> datetime:
    return datetime.now(UTC)


def _load_certificate(path: Path) -> x509.Certificate:
    return pki.load_certificate_pem(path.read_bytes())


# --- Commands -----------------------------------------------------------------------------


@pki_app.command("init")
def init(
    directory: Annotated[
        Path, typer.Option("--dir", help="Directory for root-ca.key and root-ca.crt.")
    ],
    name: Annotated[str, typer.Option("--name", help="Common name of the root.")] = (
        DEFAULT_ROOT_NAME
    ),
) -> None:
    """Create the scheme root CA: a P-256 key (0600) and its self-signed certificate."""
    key_path, cert_path = directory / ROOT_KEY_FILE, directory / ROOT_CERT_FILE
    _refuse_existing(key_path, cert_path)
    with _errors_exit(EXIT_BAD_INPUT):
        key = _new_key()
        cert = pki.make_root_ca(key, name, _now(), x509.random_serial_number())
    with _errors_exit():
        _make_private_dir(directory)
        _write_new(key_path, pki.private_key_pem(key), SECRET_FILE_MODE)
        _write_new(cert_path, pki.certificate_pem(cert), PUBLIC_FILE_MODE)
    _out.print(f"[green]Root CA created[/green] in {escape(str(directory))}")
    _field("key", f"{key_path} (keep offline, mode 0600)")
    _field("certificate", str(cert_path))
    _field("expires", cert.not_valid_after_utc.isoformat())
    _field("sha256", pki.certificate_fingerprint(cert))


@pki_app.command("issue")
def issue(
    party_id: Annotated[
        str, typer.Argument(metavar="PARTY_ID", help="Participant id: 2-32 chars of a-z, 0-9, '-'.")
    ],
    role: Annotated[RoleChoice, typer.Option("--role", help="The participant's role.")],
    directory: Annotated[Path, typer.Option("--dir", help="Directory of the root CA.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Output directory [default: DIR/PARTY_ID].")
    ] = None,
    hosts: Annotated[
        list[str] | None, typer.Option("--host", help="DNS name for TLS (repeatable).")
    ] = None,
    ips: Annotated[
        list[str] | None, typer.Option("--ip", help="IP address for TLS (repeatable).")
    ] = None,
) -> None:
    """Issue a participant's signing/TLS and encryption certificates from the root in DIR."""
    with _errors_exit(EXIT_BAD_INPUT):
        pki.check_party_id(party_id)
        pki.network_names(hosts or DEFAULT_HOSTS, ips or DEFAULT_IPS)
    out_dir = out if out is not None else directory / party_id
    key_path, cert_path = out_dir / f"{party_id}.key", out_dir / f"{party_id}.crt"
    enc_key_path, enc_cert_path = out_dir / f"{party_id}.enc.key", out_dir / f"{party_id}.enc.crt"
    _refuse_existing(key_path, cert_path, enc_key_path, enc_cert_path)
    with _errors_exit():
        ca_key = pki.load_private_key_pem((directory / ROOT_KEY_FILE).read_bytes())
        root_pem = (directory / ROOT_CERT_FILE).read_bytes()
        ca_cert = pki.load_certificate_pem(root_pem)
        now, sign_key, enc_key = _now(), _new_key(), _new_key()
        cert = pki.issue_party_certificate(
            ca_key,
            ca_cert,
            sign_key.public_key(),
            party_id,
            _ROLES[role],
            now,
            x509.random_serial_number(),
            hostnames=hosts or DEFAULT_HOSTS,
            ip_addresses=ips or DEFAULT_IPS,
        )
        enc_cert = pki.issue_encryption_certificate(
            ca_key,
            ca_cert,
            enc_key.public_key(),
            party_id,
            _ROLES[role],
            now,
            x509.random_serial_number(),
        )
        _make_private_dir(out_dir)
        _copy_trust_anchor(root_pem, out_dir / ROOT_CERT_FILE)
        _write_new(key_path, pki.private_key_pem(sign_key), SECRET_FILE_MODE)
        _write_new(cert_path, pki.certificate_pem(cert), PUBLIC_FILE_MODE)
        _write_new(enc_key_path, pki.private_key_pem(enc_key), SECRET_FILE_MODE)
        _write_new(enc_cert_path, pki.certificate_pem(enc_cert), PUBLIC_FILE_MODE)
    _out.print(f"[green]Issued[/green] {escape(party_id)} ({role.value}) in {escape(str(out_dir))}")
    _field("signing/TLS", f"{key_path} + {cert_path.name}")
    _field("encryption", f"{enc_key_path} + {enc_cert_path.name}")
    _field("trust anchor", str(out_dir / ROOT_CERT_FILE))
    _field("expires", cert.not_valid_after_utc.isoformat())


def _copy_trust_anchor(root_pem: bytes, target: Path) -> None:
    """Put the root beside the service's keys; an existing copy must be the same root."""
    if target.exists():
        if target.read_bytes() != root_pem:
            _fail(f"{target} holds a different root; refusing to overwrite it")
        return
    _write_new(target, root_pem, PUBLIC_FILE_MODE)


@pki_app.command("verify")
def verify(
    cert_path: Annotated[Path, typer.Argument(metavar="CERT", help="Certificate (PEM).")],
    root_path: Annotated[Path, typer.Option("--root", help="Scheme root certificate (PEM).")],
    party: Annotated[
        str | None, typer.Option("--party", help="Require this participant id.")
    ] = None,
    usage: Annotated[
        UsageChoice | None, typer.Option("--usage", help="Require this key usage.")
    ] = None,
) -> None:
    """Check that CERT chains to the root and is valid now; exit 1 if not."""
    with _errors_exit():
        identity = pki.validate_chain(
            _load_certificate(cert_path),
            _load_certificate(root_path),
            _now(),
            expected_party=party,
            expected_usage=_USAGES[usage] if usage is not None else None,
        )
    _out.print("[green]valid[/green]")
    _field("party", identity.party_id)
    _field("role", identity.role)
    _field("usage", identity.usage)
    _field("expires", identity.not_after.isoformat())


@pki_app.command("show")
def show(
    cert_path: Annotated[Path, typer.Argument(metavar="CERT", help="Certificate (PEM).")],
) -> None:
    """Print a certificate's subject, names, validity and fingerprint (no checks)."""
    with _errors_exit():
        cert = _load_certificate(cert_path)
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = [_general_name(name) for name in san]
        except x509.ExtensionNotFound:
            names = []
        _field("subject", cert.subject.rfc4514_string())
        _field("issuer", cert.issuer.rfc4514_string())
        _field("serial", f"{cert.serial_number:x}")
        _field("names", ", ".join(names) if names else "(none)")
        _field("not before", cert.not_valid_before_utc.isoformat())
        _field("not after", cert.not_valid_after_utc.isoformat())
        _field("sha256", pki.certificate_fingerprint(cert))
        public = cert.public_key()
        if isinstance(public, ec.EllipticCurvePublicKey) and isinstance(public.curve, ec.SECP256R1):
            # What `semops merchant serve --processor-key-pin` takes (RFC 7638).
            _field("key pin", thumbprint(public_jwk(public)))


def _general_name(name: x509.GeneralName) -> str:
    kinds = {
        x509.DNSName: "DNS",
        x509.IPAddress: "IP",
        x509.UniformResourceIdentifier: "URI",
        x509.RFC822Name: "email",
    }
    return f"{kinds.get(type(name), type(name).__name__)}:{name.value}"


__all__ = ["pki_app"]
