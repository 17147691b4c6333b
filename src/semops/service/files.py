"""Secret and key files: created 0600 in one step, refused when readable by others.

Private keys, the PIN-verification key, the payer-reference key and API credentials live
in files only their service can read (DESIGN.md §6). Files are created with O_EXCL and mode
0600, so there is no instant at which another user could read them, and an existing secret
is never overwritten. Loading refuses a file whose mode lets group or others read it.

Everything else a service keeps under its data directory (databases, logs, demo files,
the network layout) is private too: folders are made 0700 and files 0600 (`private_dir`,
`write_private`, `open_private_log`), since a log line or a demo file can say more than a
neighbour on the machine should read.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

SECRET_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def private_dir(path: Path) -> Path:
    """`path` as a folder, each missing level made 0700 (an existing folder is kept)."""
    missing = []
    folder = path
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for level in reversed(missing):
        level.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)
        os.chmod(level, PRIVATE_DIR_MODE)  # the mode passed to mkdir is masked by the umask
    return path


def write_private(path: Path, data: bytes) -> None:
    """Create or replace a file only its owner can read (0600 from its first byte)."""
    private_dir(path.parent)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, SECRET_FILE_MODE)
    os.fchmod(descriptor, SECRET_FILE_MODE)  # an older file of the same name may be wider
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)


def open_private_log(path: Path, *, text: bool = True) -> IO[Any]:
    """A log file opened for appending, 0600 in a 0700 folder, line-buffered as text."""
    private_dir(path.parent)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, SECRET_FILE_MODE)
    os.fchmod(descriptor, SECRET_FILE_MODE)
    if text:
        return os.fdopen(descriptor, "a", encoding="utf-8", buffering=1)
    return os.fdopen(descriptor, "ab")


class SecretFileError(Exception):
    """A secret file is missing, exposed or malformed (the message names only the path)."""


def write_secret(path: Path, data: bytes) -> None:
    private_dir(path.parent)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SECRET_FILE_MODE)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)


def read_secret(path: Path) -> bytes:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise SecretFileError(f"secret file {path} does not exist") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretFileError(f"secret file {path} is readable by others: chmod 600 it")
    return path.read_bytes()


def ensure_random_secret(path: Path, size_bytes: int = 32) -> bytes:
    """The secret in `path`, made from fresh randomness the first time."""
    if not path.exists():
        write_secret(path, secrets.token_bytes(size_bytes))
    secret = read_secret(path)
    if len(secret) < size_bytes:
        raise SecretFileError(f"secret file {path} is too short")
    return secret


def write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    write_secret(
        path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def read_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(read_secret(path), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SecretFileError(f"{path} does not hold a P-256 private key")
    return key


def ensure_token(path: Path, size_bytes: int = 24) -> str:
    """A bearer token (hex text) in a 0600 file, made from fresh randomness the first time."""
    if not path.exists():
        write_secret(path, secrets.token_hex(size_bytes).encode("ascii"))
    token = read_secret(path).decode("ascii").strip()
    if len(token) < size_bytes * 2:
        raise SecretFileError(f"token file {path} is too short")
    return token
