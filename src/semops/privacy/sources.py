"""Where each actor's data is: its databases, its logs, its other files.

A network's data directory (written by `semops.devnet.Network`) has one folder per
actor: `router/`, one per processor (`bank-a/`, `mno-b/`), `merchants/<id>/` for merchant
backends and `wallets/<name>/` for customers' wallets. Databases are the SQLite files in
those folders, or the PostgreSQL URLs that `network.json` names in `db_urls`; every table
is found by reflection, so a table added later is read without changing this module.
Logs are the `*.log` files; every other file is read as text too, except secrets (key
files, tokens), which are only checked for their permissions.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from sqlalchemy import MetaData, Table, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from semops.privacy.policy import ActorKind, ActorRef

# Rows read and searched at once: bounds memory on a large production database.
ROW_BATCH_MAX: Final = 2000
# Log or text lines read and searched at once.
LINE_BATCH_MAX: Final = 5000
# A longer line is cut: nothing the services write comes near it.
LINE_MAX_CHARS: Final = 1 << 20
SQLITE_MAGIC: Final = b"SQLite format 3\x00"
SECRET_FILE_NAMES: Final = frozenset({"operator.token", "processor-api-key", "pin.key"})
SECRET_FILE_SUFFIXES: Final = (".key", ".token")
# SQLite's own companions of a database file: read through the database, not as text.
_DB_COMPANIONS: Final = ("-wal", "-shm", "-journal")
_NOT_ACTORS: Final = frozenset({"pki", "merchants", "wallets", "qr"})
ROUTER_FOLDER: Final = "router"


@dataclass(frozen=True, slots=True)
class Actor:
    """One actor of a network and where its data is."""

    ref: ActorRef
    folder: Path
    db_urls: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        if self.ref.kind in (ActorKind.ROUTER, ActorKind.PROCESSOR):
            return self.ref.party_id
        return f"{self.ref.kind.value}:{self.ref.party_id}"


@dataclass
class NetworkFiles:
    """What a data directory holds, before any database is opened."""

    data_dir: Path
    db_urls: dict[str, str] = field(default_factory=dict)
    demo: dict[str, Any] | None = None


def load_network_files(data_dir: Path) -> NetworkFiles:
    files = NetworkFiles(data_dir)
    layout = data_dir / "network.json"
    if layout.is_file():
        document = json.loads(layout.read_text(encoding="utf-8"))
        files.db_urls = {str(k): str(v) for k, v in (document.get("db_urls") or {}).items()}
    demo = data_dir / "demo.json"
    if demo.is_file():
        files.demo = json.loads(demo.read_text(encoding="utf-8"))
    return files


def is_sqlite_file(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


def is_secret_file(path: Path) -> bool:
    return path.name in SECRET_FILE_NAMES or path.name.endswith(SECRET_FILE_SUFFIXES)


def is_db_companion(path: Path) -> bool:
    return path.name.endswith(_DB_COMPANIONS)


def sqlite_read_url(path: Path) -> str:
    """A read-only SQLite URL (WAL content included; the file is never written)."""
    return f"sqlite+aiosqlite:///file:{path.resolve()}?mode=ro&uri=true"


def actor_files(folder: Path) -> Iterator[Path]:
    """Every regular file under an actor's folder, in a stable order."""
    if folder.is_dir():
        yield from sorted(path for path in folder.rglob("*") if path.is_file())


def _databases(folder: Path, url: str | None) -> tuple[str, ...]:
    if url is not None:
        return (url,)
    return tuple(
        sqlite_read_url(path)
        for path in actor_files(folder)
        if not is_db_companion(path) and is_sqlite_file(path)
    )


def discover_actors(
    files: NetworkFiles,
    merchant_processors: dict[str, str],
    wallet_enrolments: dict[str, dict[str, Any]],
) -> list[Actor]:
    """The router, the processors (a folder with a PIN key, or a database URL), the
    merchant backends and the wallets, each with its databases."""
    root = files.data_dir
    actors: list[Actor] = []
    router = root / ROUTER_FOLDER
    if router.is_dir() or ROUTER_FOLDER in files.db_urls:
        ref = ActorRef(ActorKind.ROUTER, ROUTER_FOLDER)
        actors.append(Actor(ref, router, _databases(router, files.db_urls.get(ROUTER_FOLDER))))
    for folder in sorted(path for path in root.iterdir() if path.is_dir()):
        name = folder.name
        if name in _NOT_ACTORS or name == ROUTER_FOLDER:
            continue
        if (folder / "pin.key").exists() or name in files.db_urls:
            ref = ActorRef(ActorKind.PROCESSOR, name)
            actors.append(Actor(ref, folder, _databases(folder, files.db_urls.get(name))))
    for folder in sorted((root / "merchants").glob("*")):
        if folder.is_dir():
            processor = merchant_processors.get(folder.name)
            ref = ActorRef(ActorKind.MERCHANT, folder.name, processor_id=processor)
            actors.append(Actor(ref, folder, _databases(folder, None)))
    for folder in sorted((root / "wallets").glob("*")):
        if folder.is_dir():
            enrolment = wallet_enrolments.get(folder.name, {})
            ref = ActorRef(
                ActorKind.WALLET,
                folder.name,
                processor_id=enrolment.get("processor_id"),
                account_id=enrolment.get("account_id"),
            )
            actors.append(Actor(ref, folder, _databases(folder, None)))
    return actors


def database_label(url: str) -> str:
    """A database as a report names it: the file name, or the PostgreSQL database."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return Path(str(parsed.database).removeprefix("file:")).name
    return f"postgresql:{parsed.database}"


def _engine(url: str) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        url = parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    return create_async_engine(url)


def cell_text(value: Any) -> str | None:
    """A column value as searchable text (None for SQL NULL)."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="backslashreplace")
    return str(value)


@dataclass(frozen=True, slots=True)
class RowBatch:
    table: str
    columns: tuple[str, ...]
    first_row: int  # the index of the batch's first row in its table (0-based)
    rows: list[tuple[Any, ...]]


def _table_order(tables: list[Table], first: tuple[str, ...]) -> list[Table]:
    return sorted(tables, key=lambda table: (table.name not in first, table.name))


async def read_database(
    url: str, *, first: tuple[str, ...] = (), batch_rows: int = ROW_BATCH_MAX
) -> AsyncIterator[RowBatch | Table]:
    """Every table (yielded once, before its rows, even when empty), then its rows in
    batches; the tables named in `first` come first."""
    engine = _engine(url)
    try:
        async with engine.connect() as connection:
            metadata = MetaData()
            await connection.run_sync(metadata.reflect)
            for table in _table_order(list(metadata.tables.values()), first):
                yield table
                columns = tuple(column.name for column in table.columns)
                result = await connection.stream(select(table))
                index = 0
                async for partition in result.partitions(batch_rows):
                    rows = [tuple(row) for row in partition]
                    yield RowBatch(table.name, columns, index, rows)
                    index += len(rows)
    finally:
        await engine.dispose()


async def read_tables(
    url: str, names: tuple[str, ...] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Whole tables as lists of rows (for the harvest and for tests; small tables only)."""
    tables: dict[str, list[dict[str, Any]]] = {}
    async for item in read_database(url):
        if isinstance(item, Table):
            if names is None or item.name in names:
                tables[item.name] = []
            continue
        if item.table in tables:
            tables[item.table].extend(
                dict(zip(item.columns, row, strict=True)) for row in item.rows
            )
    return tables


def read_lines(path: Path, batch_lines: int = LINE_BATCH_MAX) -> Iterator[list[tuple[int, str]]]:
    """A text file's lines (numbered from 1) in batches; not UTF-8 text: nothing."""
    batch: list[tuple[int, str]] = []
    with path.open("r", encoding="utf-8", errors="strict") as handle:
        try:
            for number, line in enumerate(handle, start=1):
                batch.append((number, line.rstrip("\n")[:LINE_MAX_CHARS]))
                if len(batch) >= batch_lines:
                    yield batch
                    batch = []
        except UnicodeDecodeError:
            return
    if batch:
        yield batch


def is_text_file(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            head = handle.read(4096)
        head.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return b"\x00" not in head


__all__ = [
    "Actor",
    "NetworkFiles",
    "RowBatch",
    "actor_files",
    "cell_text",
    "database_label",
    "discover_actors",
    "is_db_companion",
    "is_secret_file",
    "is_sqlite_file",
    "is_text_file",
    "load_network_files",
    "read_database",
    "read_lines",
    "read_tables",
    "sqlite_read_url",
]
