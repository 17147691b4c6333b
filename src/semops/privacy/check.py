"""The exposure check: read everything each actor holds, and hold it to §5.

For every actor of a network (router, processors, merchant backends, wallets):

1. its search plan: every sensitive datum whose policy cell for the actor's role is not
   ✓, with every form of the value (see `encodings`);
2. every table of every database it has (payee-side tables first, so their ids are known
   when the rest is read), every row, every column, and inside each value every JWS
   (header and payload decoded; a JWE is counted as opaque: it is sealed to its one
   recipient by design);
3. every log file, line by line, and every other text file in its folder;
4. the permissions of every secret file (key files and tokens must be 0600).

Each form of each planned datum is searched in each batch; a hit is a finding with the
actor, the place (database table.column and row, or file:line, and whether inside a
token), the category, the encoding and the rule it breaks. The payer processor's identity
is searched at another processor only in what that processor holds about its payee side
(see `policy.PAYEE_SIDE_TABLES`). The counts of what was read are part of the report: a
check that read nothing passes vacuously, and the counts show it did not.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Table

from semops.privacy.encodings import Form
from semops.privacy.policy import (
    PAYEE_SIDE_TABLES,
    ActorKind,
    Category,
    Cell,
    Role,
    cell,
    role_of,
    scoped_to_payee_side,
)
from semops.privacy.search import Corpus, Hit, Place
from semops.privacy.sensitive import Datum, Harvest, harvest
from semops.privacy.sources import (
    Actor,
    RowBatch,
    actor_files,
    cell_text,
    database_label,
    is_db_companion,
    is_secret_file,
    is_sqlite_file,
    is_text_file,
    load_network_files,
    read_database,
    read_lines,
)

# Folders of a data directory that hold no actor (the scheme CA is checked for its modes).
_NOT_ACTOR_FOLDERS: Final = frozenset({"pki", "merchants", "wallets"})
# Places reported per (actor, datum); the rest are counted. One is enough to fail.
PLACES_PER_DATUM_MAX: Final = 20
_ID_TOKEN: Final = re.compile(r"[A-Za-z0-9_-]{10,}")
# Secrets recognised by their shape, whoever they belong to: never in a database or a log.
# A merchant API key is "sk_" and 43 base64url characters (processor/payees.py); exactly
# that, as a whole token, so a random 43-character digest that starts "sk_" is not one.
_ID_CHAR: Final = r"[A-Za-z0-9_-]"
PATTERNS: Final = (
    (Category.SERVICE_SECRET, "PEM private key", re.compile(r"PRIVATE KEY-----")),
    (
        Category.API_KEY,
        "merchant API key shape",
        re.compile(rf"(?<!{_ID_CHAR})sk_{_ID_CHAR}{{43}}(?!{_ID_CHAR})"),
    ),
)
OPAQUE_NOTE: Final = (
    "JWE tokens are opaque by design: each is sealed to its one recipient (the PIN block to "
    "the payer processor, transfer details to the payee processor) and is counted, not opened."
)


@dataclass(frozen=True, slots=True)
class Finding:
    actor: str
    place: str
    category: str
    encoding: str
    rule: str  # the policy cell the hit breaks, e.g. "forbidden for the router"
    datum: str  # masked value and whose it is

    def line(self) -> str:
        return f"{self.actor}: {self.category} at {self.place} ({self.encoding}); {self.rule}"


@dataclass
class ActorCounts:
    actor: str
    kind: str
    databases: int = 0
    tables: int = 0
    rows: int = 0
    values: int = 0
    tokens_decoded: int = 0
    tokens_opaque: int = 0
    log_files: int = 0
    log_lines: int = 0
    other_files: int = 0
    other_lines: int = 0
    secret_files: int = 0
    data_searched: int = 0
    forms_searched: int = 0
    table_names: list[str] = field(default_factory=list)


@dataclass
class ExposureReport:
    data_dir: str
    actors: list[ActorCounts]
    findings: list[Finding]
    data_by_category: dict[str, int]
    notes: list[str]

    @property
    def ok(self) -> bool:
        return not self.findings

    def counts(self, actor: str) -> ActorCounts:
        return next(counts for counts in self.actors if counts.actor == actor)

    def to_json(self) -> dict[str, Any]:
        return {
            "data_dir": self.data_dir,
            "ok": self.ok,
            "actors": [asdict(counts) for counts in self.actors],
            "findings": [asdict(finding) for finding in self.findings],
            "data_by_category": self.data_by_category,
            "notes": self.notes,
        }


@dataclass(frozen=True, slots=True)
class _Search:
    datum: Datum
    role: Role
    rule: Cell
    forms: tuple[Form, ...]
    scoped: bool


def _plan(actor: Actor, data: Iterable[Datum]) -> list[_Search]:
    plan: list[_Search] = []
    for datum in data:
        role = role_of(actor.ref, datum.owner)
        if role is None:
            continue
        rule = cell(datum.category, role)
        if rule.searched:
            scoped = scoped_to_payee_side(datum.category, role)
            plan.append(_Search(datum, role, rule, datum.forms(), scoped))
    return plan


def _rule_text(rule: Cell, role: Role) -> str:
    if rule is Cell.DIGEST:
        return f"only a digest may be held by the {role.value}"
    if rule is Cell.KEY_FILE:
        return "a secret: only in its owner's 0600 key file"
    if rule is Cell.NEVER_AT_REST:
        return f"never stored or logged, even by the {role.value}"
    return f"{Cell.FORBIDDEN.value} for the {role.value}"


class _ActorScan:
    """One actor's scan: its plan, its counts, its findings, the payee-side ids seen."""

    def __init__(self, actor: Actor, plan: list[_Search]) -> None:
        self.actor = actor
        self.plan = plan
        self.counts = ActorCounts(actor.name, actor.ref.kind.value)
        self.counts.data_searched = len(plan)
        self.counts.forms_searched = sum(len(search.forms) for search in plan)
        self.findings: list[Finding] = []
        self.notes: list[str] = []
        self._per_datum: dict[int, int] = {}
        self.payee_ids: set[str] = set()
        self.is_processor = actor.ref.kind is ActorKind.PROCESSOR

    def mentions_payee_side(self, text: str) -> bool:
        return bool(self.payee_ids) and any(
            token in self.payee_ids for token in _ID_TOKEN.findall(text)
        )

    def search(self, corpus: Corpus) -> None:
        self.counts.tokens_decoded += corpus.tokens.decoded
        self.counts.tokens_opaque += corpus.tokens.opaque
        if not len(corpus):
            return
        for index, search in enumerate(self.plan):
            for form in search.forms:
                for hit in corpus.search(form):
                    if search.scoped and not hit.place.payee_side:
                        continue
                    self._record(index, search, hit)
        self._patterns(corpus)

    def _record(self, index: int, search: _Search, hit: Hit) -> None:
        seen = self._per_datum.get(index, 0)
        self._per_datum[index] = seen + 1
        if seen >= PLACES_PER_DATUM_MAX:
            return
        place = hit.place.where + (f" [{hit.place.via}]" if hit.place.via else "")
        self.findings.append(
            Finding(
                actor=self.actor.name,
                place=place,
                category=search.datum.category.value,
                encoding=hit.encoding,
                rule=_rule_text(search.rule, search.role),
                datum=search.datum.shown(),
            )
        )

    def _patterns(self, corpus: Corpus) -> None:
        for text, place in zip(corpus.texts, corpus.places, strict=True):
            for category, name, pattern in PATTERNS:
                if pattern.search(text):
                    where = place.where + (f" [{place.via}]" if place.via else "")
                    self.findings.append(
                        Finding(
                            self.actor.name,
                            where,
                            category.value,
                            "raw",
                            "a secret: never in a database or a log",
                            name,
                        )
                    )

    def overflow_notes(self) -> list[str]:
        return [
            f"{self.actor.name}: {count - PLACES_PER_DATUM_MAX} more places of "
            f"{self.plan[index].datum.category.value} not listed"
            for index, count in self._per_datum.items()
            if count > PLACES_PER_DATUM_MAX
        ]


async def _scan_database(scan: _ActorScan, url: str) -> None:
    label = database_label(url)
    scan.counts.databases += 1
    first = tuple(PAYEE_SIDE_TABLES) if scan.is_processor else ()
    async for item in read_database(url, first=first):
        if isinstance(item, Table):
            scan.counts.tables += 1
            scan.counts.table_names.append(f"{label}:{item.name}")
            continue
        scan.search(_batch_corpus(scan, label, item))


def _batch_corpus(scan: _ActorScan, label: str, batch: RowBatch) -> Corpus:
    corpus = Corpus()
    id_columns = PAYEE_SIDE_TABLES.get(batch.table, ()) if scan.is_processor else ()
    for offset, row in enumerate(batch.rows):
        texts = [cell_text(value) for value in row]
        values = dict(zip(batch.columns, texts, strict=True))
        for column in id_columns:
            if values.get(column):
                scan.payee_ids.add(str(values[column]))
        payee_side = scan.is_processor and (
            bool(id_columns) or scan.mentions_payee_side(" ".join(filter(None, texts)))
        )
        scan.counts.rows += 1
        for column, text in values.items():
            if text is None:
                continue
            scan.counts.values += 1
            where = f"{label} {batch.table}.{column} row {batch.first_row + offset + 1}"
            corpus.add(text, Place(where, None, payee_side))
    return corpus


def _scan_text_file(scan: _ActorScan, path: Path, *, log: bool) -> None:
    relative = path.relative_to(scan.actor.folder)
    if log:
        scan.counts.log_files += 1
    else:
        scan.counts.other_files += 1
    for batch in read_lines(path):
        corpus = Corpus()
        for number, line in batch:
            payee_side = scan.is_processor and scan.mentions_payee_side(line)
            corpus.add(line, Place(f"{relative}:{number}", None, payee_side))
        if log:
            scan.counts.log_lines += len(batch)
        else:
            scan.counts.other_lines += len(batch)
        scan.search(corpus)


def _check_secret_file(scan: _ActorScan, path: Path) -> None:
    scan.counts.secret_files += 1
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        scan.findings.append(
            Finding(
                scan.actor.name,
                str(path.relative_to(scan.actor.folder)),
                Category.SERVICE_SECRET.value,
                f"file mode {mode:04o}",
                "a secret file must be 0600 (DESIGN.md §6)",
                path.name,
            )
        )


def _note_open_database(scan: _ActorScan, path: Path) -> None:
    """§6 asks 0600 of secrets only; a database readable by others is worth a note."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if not is_db_companion(path) and mode & (stat.S_IRWXG | stat.S_IRWXO):
        where = path.relative_to(scan.actor.folder)
        scan.notes.append(f"{scan.actor.name}: {where} is readable by others ({mode:04o})")


async def _scan_actor(actor: Actor, plan: list[_Search]) -> _ActorScan:
    scan = _ActorScan(actor, plan)
    skipped: list[str] = []
    for url in actor.db_urls:
        await _scan_database(scan, url)
    for path in actor_files(actor.folder):
        if is_secret_file(path):
            _check_secret_file(scan, path)
        elif is_db_companion(path) or is_sqlite_file(path):
            _note_open_database(scan, path)  # its content was read through SQL above
        elif path.suffix == ".log":
            _scan_text_file(scan, path, log=True)
        elif is_text_file(path):
            _scan_text_file(scan, path, log=False)
        else:
            skipped.append(str(path.relative_to(actor.folder)))
    if skipped:
        scan.notes.append(f"{actor.name}: binary files not read: {', '.join(skipped[:5])}")
    return scan


def _pki_findings(data_dir: Path) -> list[Finding]:
    findings = []
    for path in actor_files(data_dir / "pki"):
        mode = stat.S_IMODE(path.stat().st_mode)
        if is_secret_file(path) and mode & (stat.S_IRWXG | stat.S_IRWXO):
            findings.append(
                Finding(
                    "scheme operator",
                    f"pki/{path.name}",
                    Category.SERVICE_SECRET.value,
                    f"file mode {mode:04o}",
                    "a secret file must be 0600 (DESIGN.md §6)",
                    path.name,
                )
            )
    return findings


async def check_exposure_async(
    data_dir: Path, extra: Iterable[Datum] = (), *, harvested: Harvest | None = None
) -> ExposureReport:
    """Read everything every actor of the network in `data_dir` holds; report what was
    read and every datum found outside its §5 column."""
    files = load_network_files(data_dir)
    found = harvested or await harvest(files, extra)
    findings: list[Finding] = []
    counts: list[ActorCounts] = []
    notes: list[str] = []
    for actor in found.actors:
        scan = await _scan_actor(actor, _plan(actor, found.data.data))
        counts.append(scan.counts)
        findings.extend(scan.findings)
        notes.extend(scan.notes + scan.overflow_notes())
    findings.extend(_pki_findings(data_dir))
    read = {actor.folder.resolve() for actor in found.actors}
    for folder in sorted(path for path in data_dir.iterdir() if path.is_dir()):
        if folder.name not in _NOT_ACTOR_FOLDERS and folder.resolve() not in read:
            notes.append(f"{folder.name}/ is not an actor's folder and was not read")
    if any(c.tokens_opaque for c in counts):
        notes.append(OPAQUE_NOTE)
    if found.data.skipped_short:
        notes.append(f"{found.data.skipped_short} values under 4 characters were not searched")
    by_category = {
        category.value: found.data.count(category)
        for category in Category
        if found.data.count(category)
    }
    return ExposureReport(str(data_dir), counts, findings, by_category, notes)


def check_exposure(data_dir: Path, extra: Iterable[Datum] = ()) -> ExposureReport:
    """`check_exposure_async` for callers without an event loop (tests, the CLI)."""
    import asyncio

    return asyncio.run(check_exposure_async(data_dir, extra))


__all__ = [
    "OPAQUE_NOTE",
    "PATTERNS",
    "ActorCounts",
    "ExposureReport",
    "Finding",
    "check_exposure",
    "check_exposure_async",
]
