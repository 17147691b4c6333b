"""The exposure check on small hand-made networks: the payee-side scope of the payer
processor's identity, discovery of actors and tables, and PostgreSQL databases."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from semops.privacy import ExposureReport, check_exposure
from semops.service.files import write_secret
from tests.databases import postgres_or_skip

ZELDA = ("ac_zelda0000000000000001", "Zelda Quixotic-Payer", "+4915199990001")
INBOUND = "tr_inbound0000000000001"


def _network(root: Path, db_urls: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    layout = {"data_dir": str(root), "ports": {}, "db_urls": db_urls or {}}
    (root / "network.json").write_text(json.dumps(layout))
    for processor in ("bank-a", "mno-b"):
        write_secret(root / processor / "pin.key", bytes(range(32)))
    _sqlite(
        root / "bank-a" / "bank-a.db",
        "CREATE TABLE customers (account_id TEXT, name TEXT, phone TEXT)",
        ("INSERT INTO customers VALUES (?, ?, ?)", ZELDA),
    )
    return root


def _sqlite(path: Path, schema: str, *inserts: tuple[str, tuple[object, ...]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as connection:
        for statement in schema.split(";"):
            connection.execute(statement)
        for statement, values in inserts:
            connection.execute(statement, values)


def _found(report: ExposureReport) -> set[tuple[str, str, str]]:
    return {(f.actor, f.place, f.category) for f in report.findings}


def test_the_payer_processor_is_sought_only_in_what_a_processor_holds_about_its_payee_side(
    tmp_path: Path,
) -> None:
    data = _network(tmp_path / "net")
    _sqlite(
        data / "mno-b" / "mno-b.db",
        "CREATE TABLE inbound_transfers (transfer_id TEXT, request_id TEXT, reason_code TEXT);"
        "CREATE TABLE participants (participant_id TEXT);"
        "CREATE TABLE entries (transfer_ref TEXT, note TEXT)",
        ("INSERT INTO inbound_transfers VALUES (?, ?, NULL)", (INBOUND, "rq_request00000000001")),
        ("INSERT INTO participants VALUES (?)", ("bank-a",)),  # the directory: fine
        ("INSERT INTO entries VALUES (?, ?)", (INBOUND, "paid by bank-a")),  # not fine
        ("INSERT INTO entries VALUES (?, ?)", ("tr_outbound000000000001", "to bank-a")),
    )
    logs = data / "mno-b" / "logs"
    logs.mkdir()
    (logs / "mno-b.log").write_text(
        json.dumps({"event": "directory_installed", "participant": "bank-a"})
        + "\n"
        + json.dumps({"event": "transfer_accepted", "transfer_id": INBOUND, "from": "bank-a"})
        + "\n"
    )
    report = check_exposure(data)
    assert _found(report) == {
        ("mno-b", "mno-b.db entries.note row 1", "payer processor identity"),
        ("mno-b", "logs/mno-b.log:2", "payer processor identity"),
    }
    counts = report.counts("mno-b")
    assert (counts.tables, counts.rows, counts.log_lines, counts.secret_files) == (3, 4, 2, 1)


def test_customer_data_at_another_processor_is_found_anywhere_in_it(tmp_path: Path) -> None:
    data = _network(tmp_path / "net")
    _sqlite(
        data / "mno-b" / "mno-b.db",
        "CREATE TABLE anything_new (blob TEXT)",
        ("INSERT INTO anything_new VALUES (?)", (f"call {ZELDA[2]} back",)),
    )
    report = check_exposure(data)
    assert _found(report) == {("mno-b", "mno-b.db anything_new.blob row 1", "payer phone")}
    assert check_exposure(data).counts("bank-a").rows == 1  # its own customer: ✓ there


def test_databases_named_by_postgresql_urls_are_read_table_by_table(tmp_path: Path) -> None:
    databases = postgres_or_skip()
    urls = databases.make(["mno-b"])
    try:
        asyncio.run(_fill(urls["mno-b"]))
        data = _network(tmp_path / "net", db_urls=urls)
        report = check_exposure(data)
        name = make_url(urls["mno-b"]).database
        assert _found(report) == {
            (
                "mno-b",
                f"postgresql:{name} inbound_transfers.reason_code row 1",
                "payer processor identity",
            ),
            ("mno-b", f"postgresql:{name} notes.body row 2", "payer name"),
        }
        assert report.counts("mno-b").databases == 1 and report.counts("mno-b").tables == 2
    finally:
        databases.drop()


async def _fill(url: str) -> None:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            "CREATE TABLE inbound_transfers (transfer_id TEXT, reason_code TEXT);"
            "CREATE TABLE notes (body TEXT)"
        )
        await connection.execute("INSERT INTO inbound_transfers VALUES ($1, 'bank-a')", INBOUND)
        await connection.execute("INSERT INTO notes VALUES ('nothing'), ($1)", ZELDA[1].upper())
    finally:
        await connection.close()


def test_a_credential_is_recognised_by_its_shape_even_when_nobody_named_it(
    tmp_path: Path,
) -> None:
    data = _network(tmp_path / "net")
    logs = data / "mno-b" / "logs"
    logs.mkdir(parents=True)
    key = "sk_" + "Q" * 43  # the shape of a merchant API key
    digest_alike = "sk_" + "Q" * 40  # a 43-character digest that happens to start "sk_"
    (logs / "mno-b.log").write_text(f'{{"hash": "{digest_alike}"}}\n{{"auth": "Bearer {key}"}}\n')
    (logs / "keys.log").write_text("-----BEGIN PRIVATE KEY-----\n")
    found = {(f.place, f.category, f.datum) for f in check_exposure(data).findings}
    assert found == {
        ("logs/mno-b.log:2", "merchant API key", "merchant API key shape"),
        ("logs/keys.log:1", "service keys & operator tokens (§6)", "PEM private key"),
    }
