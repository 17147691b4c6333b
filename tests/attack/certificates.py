"""Certificates an attacker (or a careless operator) obtains from the scheme root, and the
registrations made with them: issued by the very command the operator runs (`semops pki
issue`), into a folder of the attacker's own."""

from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path

from semops.cli import pki as pki_cli
from semops.core.limits import AUTH_TTL_MAX_S
from semops.crypto import KeyUse, PrivateKey, private_key_for
from semops.crypto.pki import load_certificate_pem
from semops.protocol import ParticipantRegistration, sign_registration
from semops.service.files import read_private_key
from semops.service.tls import TlsFiles


def issue(data_dir: Path, party: str, out: Path, role: str = "processor") -> TlsFiles:
    """Another certificate pair for `party` from the scheme root in DATA/pki, into `out`."""
    with contextlib.redirect_stdout(io.StringIO()):
        pki_cli.issue(
            party_id=party,
            role=pki_cli.RoleChoice(role),
            directory=data_dir / "pki",
            out=out,
            hosts=None,
            ips=None,
        )
    return TlsFiles.in_directory(out, party)


def sign_key(folder: Path, party: str) -> PrivateKey:
    return private_key_for(party, KeyUse.SIGN, read_private_key(folder / f"{party}.key"))


def serial_of(folder: Path, party: str, *, enc: bool = False) -> int:
    name = f"{party}.enc.crt" if enc else f"{party}.crt"
    return load_certificate_pem((folder / name).read_bytes()).serial_number


def registration(
    folder: Path,
    party: str,
    *,
    endpoint: str,
    kind: str = "bank",
    display_name: str = "Alpha Bank",
    enc_folder: Path | None = None,
    current_key: PrivateKey | None = None,
    now: int | None = None,
) -> str:
    """A registration carrying the certificates in `folder` (the encryption one from
    `enc_folder` if given), signed by their key, endorsed by `current_key` if given."""
    at = int(time.time()) if now is None else now
    enc = enc_folder or folder
    message = ParticipantRegistration(
        participant_id=party,
        kind=kind,  # type: ignore[arg-type]
        display_name=display_name,
        endpoint=endpoint,
        sign_certificate=(folder / f"{party}.crt").read_text(),
        enc_certificate=(enc / f"{party}.enc.crt").read_text(),
        created_at=at,
        expires_at=at + AUTH_TTL_MAX_S,
    )
    return sign_registration(message, sign_key(folder, party), current_key=current_key)
