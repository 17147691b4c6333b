"""DESIGN.md §6 at rest: no PIN, key or bearer token in any database, log or answer.

These look at the bytes of every file in the data directory (databases, their WAL files,
logs, everything), not through SQL, so a secret in a freed page or an unread table would
still be found; private keys must be in 0600 key files and nowhere else; credentials are
kept by the processor only as digests; refusals do not echo what was refused.
"""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from semops.core.encoding import sha256_b64url
from semops.privacy import Corpus, Place, forms_of, read_tables, sqlite_read_url
from tests.privacy.story import (
    REFUSED_API_KEY,
    REFUSED_OPERATOR_TOKEN,
    WRONG_PINS,
    Recorded,
    Story,
)

pytestmark = pytest.mark.timeout(300)

KEY_FILE_NAMES = frozenset({"operator.token", "processor-api-key", "pin.key", "reference.key"})


def _files(root: Path) -> Iterator[Path]:
    yield from sorted(path for path in root.rglob("*") if path.is_file())


def _bytes_corpus(root: Path, skip: frozenset[Path] = frozenset()) -> Corpus:
    corpus = Corpus()
    for path in _files(root):
        if path not in skip:
            # latin-1 maps every byte to one character: offsets and ASCII stay as they are.
            corpus.add(path.read_bytes().decode("latin-1"), Place(str(path.relative_to(root))))
    return corpus


def _places(corpus: Corpus, value: str) -> list[str]:
    return [
        f"{hit.place.where} ({hit.encoding})"
        for form in forms_of(value)
        for hit in corpus.search(form)
    ]


def test_no_pin_or_activation_code_is_in_any_file_of_any_actor(story: Story) -> None:
    corpus = _bytes_corpus(story.data_dir)
    assert len(corpus) > 40  # every database, WAL file, log, key and certificate
    secrets = [person.pin for person in story.customers.values()]
    secrets += [*WRONG_PINS, *story.activation_codes.values()]
    for secret in secrets:
        assert not _places(corpus, secret), secret


def test_refused_credentials_and_every_bearer_token_stay_out_of_files(story: Story) -> None:
    """API keys and operator tokens exist only in their own 0600 file; the key and token
    that were refused (sent as bearer headers) were never written anywhere."""
    data = story.data_dir
    owners: dict[str, Path] = {
        (data / p / "operator.token").read_text().strip(): data / p / "operator.token"
        for p in ("router", "bank-a", "mno-b")
    }
    for merchant in story.merchants.values():
        owners[merchant.api_key] = data / "merchants" / merchant.merchant_id / "processor-api-key"
    corpus = _bytes_corpus(data, skip=frozenset(owners.values()))
    for secret in (*owners, REFUSED_API_KEY, REFUSED_OPERATOR_TOKEN):
        assert not _places(corpus, secret)


def test_private_keys_are_only_in_0600_key_files(story: Story) -> None:
    holders = []
    for path in _files(story.data_dir):
        mode = stat.S_IMODE(path.stat().st_mode)
        if b"PRIVATE KEY" in path.read_bytes():
            holders.append(path.name)
            assert path.suffix == ".key" and mode == 0o600, (path, oct(mode))
        if path.suffix == ".key" or path.name in KEY_FILE_NAMES:
            assert mode == 0o600, (path, oct(mode))
    # The root CA, router and processors (signing and encryption), and every device.
    assert holders.count("device.key") == len(story.customers)
    assert len(holders) >= 1 + 2 * 3 + len(story.customers)


def _rows(db: Path, table: str) -> list[dict[str, object]]:
    return asyncio.run(read_tables(sqlite_read_url(db), (table,)))[table]


def test_the_processor_keeps_credentials_only_as_digests(story: Story) -> None:
    data = story.data_dir
    for merchant in story.merchants.values():
        processor_db = data / merchant.processor_id / f"{merchant.processor_id}.db"
        payees = {row["payee_id"]: row for row in _rows(processor_db, "payees")}
        assert payees[merchant.merchant_id]["api_key_digest"] == sha256_b64url(
            merchant.api_key.encode()
        )
    for key, person in story.customers.items():
        processor_db = data / person.processor_id / f"{person.processor_id}.db"
        digests = {row["code_digest"] for row in _rows(processor_db, "activation_codes")}
        assert sha256_b64url(story.activation_codes[key].encode()) in digests
        credentials = {row["account_id"]: row for row in _rows(processor_db, "credentials")}
        stored = str(credentials[person.account_id]["pin_value"])
        assert len(stored) == 43 and person.pin not in stored  # a keyed value, not the PIN


def _problem(answer: Recorded) -> dict[str, object]:
    assert answer.content_type == "application/problem+json"
    document = json.loads(answer.body)
    assert isinstance(document, dict)
    return document


def _echoes(answer: Recorded, secret: str) -> list[str]:
    corpus = Corpus()
    corpus.add(answer.body.decode(), Place("answer"))
    return _places(corpus, secret)


def test_a_wrong_pin_answer_does_not_echo_the_pin(story: Story) -> None:
    answer = story.answers["wrong_pin"]
    problem = _problem(answer)
    assert (answer.status, problem["code"], problem["attempts_remaining"]) == (
        403,
        "pin_invalid",
        2,
    )
    for pin in (WRONG_PINS[0], story.customers["zelda"].pin):
        assert not _echoes(answer, pin)
    assert b"eyJ" not in answer.body  # neither the order nor its sealed PIN block comes back


@pytest.mark.parametrize(
    ("answer", "secret"),
    [("bad_api_key", REFUSED_API_KEY), ("bad_operator_token", REFUSED_OPERATOR_TOKEN)],
)
def test_a_refused_credential_is_not_echoed(story: Story, answer: str, secret: str) -> None:
    recorded = story.answers[answer]
    assert (recorded.status, _problem(recorded)["code"]) == (401, "unauthenticated")
    assert not _echoes(recorded, secret)


def test_a_person_paid_p2p_learns_nothing_of_the_payers(story: Story) -> None:
    """Mia's history after two P2P payments (from Zelda at the bank, from Olu at her own
    MNO): amounts and kinds, no payer's name, phone, account or processor."""
    history = story.outcomes["p2p_history"]
    received = [entry for entry in history["entries"] if entry["kind"] == "payment_received"]
    assert sorted(entry["amount_minor"] for entry in received) == [860, 1730]
    corpus = Corpus()
    corpus.add(json.dumps(history), Place("history"))
    for key in ("zelda", "olu"):
        payer = story.customers[key]
        for datum in (payer.name, payer.phone, payer.account_id):
            assert not _places(corpus, datum), datum
    assert not _places(corpus, "bank-a")


def test_a_person_paid_cannot_tell_an_on_us_payer_from_a_routed_one(story: Story) -> None:
    history = story.outcomes["p2p_history"]
    received = [entry for entry in history["entries"] if entry["kind"] == "payment_received"]
    assert len(received) == 2
    assert all("order_id" not in entry for entry in received)
    assert len({frozenset(entry) for entry in received}) == 1
