"""`semops audit verify`: check every service's audit log found in a network's data folder.

The auditor's tool, run apart from the services (they may be running or stopped). For each
service folder (`DATA/<id>/` holding `<id>.crt`: the router and each processor) it reads
the service's database -- SQLite `DATA/<id>/<id>.db`, or the URL that `DATA/network.json`
lists under `db_urls` (PostgreSQL) -- page by page in seq order, and feeds the rows to
`ChainVerifier`, then counts the entries still staged (not chained yet: reported, not
verified). Checkpoint signatures are checked with the service's signing
certificates found in its folder, each first validated against the scheme root
(`DATA/pki/root-ca.crt` unless another is given): a key that does not chain to the root
cannot vouch for a log.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Final

from cryptography import x509
from sqlalchemy import MetaData
from sqlalchemy.exc import SQLAlchemyError

from semops.audit.chain import Break, ChainReport, ChainVerifier
from semops.core.errors import SemopsError
from semops.crypto import KeyRing, KeyUse, PublicKeyRecord, make_kid, public_jwk
from semops.crypto.pki import load_certificate_pem, validate_chain
from semops.store import audit as store
from semops.store.db import Database, sqlite_url

# Rows read per query: a page of entries is a few hundred KiB at most.
VERIFY_PAGE_ROWS: Final = 1000
ROOT_CERT: Final = Path("pki") / "root-ca.crt"
_TABLE = store.audit_table(MetaData())
_PENDING = store.audit_pending_table(MetaData())


@dataclass(frozen=True, slots=True)
class ServiceLog:
    """Where one service's log is and which certificates may sign its checkpoints."""

    service: str
    folder: Path
    db_url: str


def _db_urls(data_dir: Path) -> dict[str, str]:
    layout = data_dir / "network.json"
    if not layout.exists():
        return {}
    urls = json.loads(layout.read_text()).get("db_urls") or {}
    return {str(key): str(value) for key, value in urls.items()}


def discover(data_dir: Path) -> list[ServiceLog]:
    """The services of a network folder, or the one service whose folder this is."""
    urls = _db_urls(data_dir)
    candidates = [data_dir] if (data_dir / f"{data_dir.name}.crt").exists() else []
    if not candidates:
        candidates = sorted(path for path in data_dir.iterdir() if path.is_dir())
    found = []
    for folder in candidates:
        name = folder.name
        if not (folder / f"{name}.crt").exists():
            continue
        url = urls.get(name)
        if url is None and (folder / f"{name}.db").exists():
            url = sqlite_url(folder / f"{name}.db")
        if url is not None:
            found.append(ServiceLog(name, folder, url))
    return found


def _record(owner: str, certificate: x509.Certificate) -> PublicKeyRecord:
    jwk = public_jwk(certificate.public_key())  # type: ignore[arg-type]
    return PublicKeyRecord(
        kid=make_kid(owner, jwk),
        owner=owner,
        use=KeyUse.SIGN,
        jwk=jwk,
        not_before=int(certificate.not_valid_before_utc.timestamp()),
        not_after=int(certificate.not_valid_after_utc.timestamp()),
    )


def signing_ring(log: ServiceLog, root: x509.Certificate) -> KeyRing:
    """The service's signing certificates in its folder that chain to the root and name
    it (`<id>.crt`, and earlier ones kept as `<id>.<anything>.crt` after a rotation)."""
    records = []
    for path in sorted(log.folder.glob(f"{log.service}*.crt")):
        try:
            certificate = load_certificate_pem(path.read_bytes())
            # Checked at the start of its own validity: the chain and usage, not "now";
            # each checkpoint is then checked against the key's validity at its own time.
            at: datetime = certificate.not_valid_before_utc
            validate_chain(certificate, root, at, expected_party=log.service, expected_usage="sign")
        except (SemopsError, ValueError):
            continue  # an encryption certificate, or one from another root
        records.append(_record(log.service, certificate))
    return KeyRing(records)


async def verify_service(log: ServiceLog, root: x509.Certificate) -> ChainReport:
    verifier = ChainVerifier(log.service, signing_ring(log, root))
    database = Database(log.db_url)
    try:
        after = 0
        while True:
            async with database.read() as connection:
                page = await store.entries_after(connection, _TABLE, after, VERIFY_PAGE_ROWS)
            for row in page:
                if not verifier.feed(row):
                    return verifier.finish()
            if len(page) < VERIFY_PAGE_ROWS:
                return replace(verifier.finish(), staged=await _staged(database))
            after = int(page[-1]["seq"])
    except SQLAlchemyError as error:
        problem = f"the audit log cannot be read ({type(error).__name__})"
        return ChainReport(log.service, 0, 0, 0, 0, Break(log.service, 0, problem))
    finally:
        await database.dispose()


async def _staged(database: Database) -> int:
    """Entries the service staged and has not chained yet (0 for a log from before staging)."""
    try:
        async with database.read() as connection:
            return await store.count_pending(connection, _PENDING)
    except SQLAlchemyError:  # no audit_pending table: a database from before it
        return 0


def root_path_for(data_dir: Path) -> Path:
    """The scheme root of a network folder (DATA/pki), or the copy in a service's folder."""
    scheme_root = data_dir / ROOT_CERT
    return scheme_root if scheme_root.exists() else data_dir / "root-ca.crt"


async def verify_data_dir(data_dir: Path, root_path: Path | None = None) -> list[ChainReport]:
    root = load_certificate_pem((root_path or root_path_for(data_dir)).read_bytes())
    return [await verify_service(log, root) for log in discover(data_dir)]
