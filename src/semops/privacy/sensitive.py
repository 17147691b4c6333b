"""The sensitive data of a network: what the exposure check looks for, and whose it is.

Most of it is harvested from the network itself, from the actor that legitimately holds
each datum: customers (name, phone, account) and enrolled devices from each processor's
own tables, payees and their requests from the payee processor, basket lines from the
merchant backend, device keys from each wallet's key file, service keys and tokens from
their 0600 files. What no actor keeps is added by the caller: PINs (`demo.json` records
the demo's; tests add their own), activation codes, wrong PINs, a refused API key.

A person who asks to be paid (P2P) publishes a display name in the signed request, so
that name counts as a payee identity, not as a payer's name.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from semops.privacy.encodings import Form, forms_of, mask
from semops.privacy.policy import NOBODY, ActorKind, Category, Owner, OwnerKind
from semops.privacy.sources import (
    Actor,
    NetworkFiles,
    actor_files,
    discover_actors,
    is_secret_file,
    read_tables,
)

# A shorter value would match too much by chance to mean anything.
VALUE_MIN_CHARS: Final = 4
# Private keys in PEM: the first body line is enough to recognise the whole key.
_PEM_PRIVATE: Final = b"PRIVATE KEY-----"
PROCESSOR_TABLES: Final = ("customers", "devices", "payees", "requests")


@dataclass(frozen=True, slots=True)
class Datum:
    category: Category
    value: str | bytes
    owner: Owner
    about: str  # whose it is, for the report ("customer at bank-a", "merchant corner-cafe")

    def forms(self) -> tuple[Form, ...]:
        return forms_of(self.value, phone=self.category is Category.PAYER_PHONE)

    def shown(self) -> str:
        return f"{mask(self.value)} ({self.about})"


@dataclass
class SensitiveData:
    """A set of data, each once per (category, value, owner)."""

    data: list[Datum] = field(default_factory=list)
    skipped_short: int = 0
    _seen: set[tuple[Category, str | bytes, Owner]] = field(default_factory=set, repr=False)

    def add(self, category: Category, value: Any, owner: Owner, about: str) -> None:
        if not isinstance(value, str | bytes) or len(value) < VALUE_MIN_CHARS:
            self.skipped_short += value is not None and value != ""
            return
        key = (category, value, owner)
        if key not in self._seen:
            self._seen.add(key)
            self.data.append(Datum(category, value, owner, about))

    def extend(self, data: Iterable[Datum]) -> None:
        for datum in data:
            self.add(datum.category, datum.value, datum.owner, datum.about)

    def discard(self, category: Category, value: str, owner: Owner) -> None:
        self.data = [
            d for d in self.data if (d.category, d.value, d.owner) != (category, value, owner)
        ]
        self._seen.discard((category, value, owner))

    def count(self, category: Category) -> int:
        return sum(datum.category is category for datum in self.data)


def customer(processor_id: str, account_id: str) -> Owner:
    return Owner(OwnerKind.CUSTOMER, processor_id, account_id)


def payee(processor_id: str | None, payee_id: str, account_id: str | None = None) -> Owner:
    return Owner(OwnerKind.PAYEE, processor_id, payee_id, account_id)


def participant(participant_id: str) -> Owner:
    return Owner(OwnerKind.PARTICIPANT, participant_id, participant_id)


# --- harvest ----------------------------------------------------------------------------


def _harvest_processor(
    found: SensitiveData, processor_id: str, tables: dict[str, list[dict[str, Any]]]
) -> dict[str, str]:
    """Customers, devices, payees and requests of one processor; returns merchant ->
    processor for the merchants it serves."""
    about = f"customer at {processor_id}"
    for row in tables.get("customers", []):
        owner = customer(processor_id, row["account_id"])
        found.add(Category.PAYER_NAME, row["name"], owner, about)
        found.add(Category.PAYER_PHONE, row["phone"], owner, about)
        found.add(Category.PAYER_ACCOUNT, row["account_id"], owner, about)
    for row in tables.get("devices", []):
        owner = customer(processor_id, row["account_id"])
        found.add(Category.DEVICE_PUBLIC_KEY, row["kid"], owner, f"device of a {about}")
        jwk = json.loads(row["jwk"])
        for member in ("x", "y"):
            found.add(Category.DEVICE_PUBLIC_KEY, jwk.get(member), owner, f"device of a {about}")
    served: dict[str, str] = {}
    for row in tables.get("payees", []):
        person = row["kind"] == "person"
        owner = payee(processor_id, row["payee_id"], row["account_id"] if person else None)
        what = f"{'person' if person else 'merchant'} {row['payee_id']} at {processor_id}"
        found.add(Category.PAYEE_IDENTITY, row["payee_id"], owner, what)
        found.add(Category.PAYEE_IDENTITY, row["display_name"], owner, what)
        if person:
            # Asking to be paid publishes the display name: it is no longer a payer secret.
            found.discard(
                Category.PAYER_NAME, row["display_name"], customer(processor_id, row["account_id"])
            )
        else:
            found.add(Category.PAYEE_ACCOUNT, row["account_id"], owner, what)
            served[row["payee_id"]] = processor_id
    owners = {row["payee_id"]: row for row in tables.get("payees", [])}
    for row in tables.get("requests", []):
        payee_row = owners.get(row["payee_id"], {})
        account = payee_row.get("account_id") if payee_row.get("kind") == "person" else None
        owner = payee(processor_id, row["payee_id"], account)
        what = f"request of {row['payee_id']} at {processor_id}"
        found.add(Category.REQUEST, row["request_id"], owner, what)
        found.add(Category.REQUEST, row["reference"], owner, what)
    return served


def _harvest_merchant(
    found: SensitiveData, actor: Actor, tables: dict[str, list[dict[str, Any]]]
) -> None:
    owner = payee(actor.ref.processor_id, actor.ref.party_id)
    what = f"merchant {actor.ref.party_id}"
    for row in tables.get("orders", []):
        found.add(Category.REQUEST, row.get("request_id"), owner, what)
        found.add(Category.REQUEST, row.get("reference"), owner, what)
        for line in json.loads(row.get("basket") or "[]"):
            if isinstance(line, dict):
                found.add(Category.BASKET, line.get("name"), owner, f"basket of {what}")


def _wallet_enrolment(tables: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    for row in tables.get("settings", []):
        if row.get("name") == "enrolment":
            value = json.loads(row["value"])
            return value if isinstance(value, dict) else {}
    return {}


def _private_key(path: Path) -> ec.EllipticCurvePrivateKey | None:
    data = path.read_bytes()
    if _PEM_PRIVATE not in data:
        return None
    key = serialization.load_pem_private_key(data, password=None)
    return key if isinstance(key, ec.EllipticCurvePrivateKey) else None


def private_key_values(path: Path) -> list[str | bytes]:
    """The forms a private key file's secret can leak in: the scalar (as bytes, so its
    base64, base64url and hex are searched) and the first line of the PEM body."""
    key = _private_key(path)
    if key is None:
        return []
    scalar = key.private_numbers().private_value.to_bytes(32, "big")
    lines = path.read_text(encoding="ascii").splitlines()
    return [scalar, lines[1]] if len(lines) > 2 else [scalar]


def _harvest_secret_files(found: SensitiveData, actor: Actor) -> None:
    ref = actor.ref
    for path in actor_files(actor.folder):
        if not is_secret_file(path):
            continue
        if path.name == "device.key":
            owner = customer(ref.processor_id or "", ref.account_id or "")
            for value in private_key_values(path):
                found.add(Category.DEVICE_PRIVATE_KEY, value, owner, f"device key of {actor.name}")
        elif path.name == "processor-api-key":
            owner = payee(ref.processor_id, ref.party_id)
            key = path.read_text(encoding="utf-8").strip()
            found.add(Category.API_KEY, key, owner, f"API key of {actor.name}")
        elif path.suffix == ".key" and _private_key(path) is not None:
            for value in private_key_values(path):
                found.add(Category.SERVICE_SECRET, value, participant(ref.party_id), path.name)
        else:
            data = path.read_bytes()
            text = data.decode("ascii", errors="ignore").strip()
            secret = text if text.isprintable() and len(text) == len(data.strip()) else data
            found.add(Category.SERVICE_SECRET, secret, participant(ref.party_id), path.name)


def _harvest_demo(found: SensitiveData, demo: dict[str, Any]) -> None:
    for entry in (demo.get("customers") or {}).values():
        owner = customer(entry.get("processor_id", ""), entry.get("account_id", ""))
        about = f"customer at {entry.get('processor_id')}"
        found.add(Category.PIN, entry.get("pin"), owner, about)
        found.add(Category.PAYER_PHONE, entry.get("phone"), owner, about)


@dataclass
class Harvest:
    actors: list[Actor]
    data: SensitiveData


async def harvest(files: NetworkFiles, extra: Iterable[Datum] = ()) -> Harvest:
    """The actors of the network and the sensitive data they legitimately hold."""
    found = SensitiveData()
    first = discover_actors(files, {}, {})
    served: dict[str, str] = {}
    enrolments: dict[str, dict[str, Any]] = {}
    for actor in first:
        for url in actor.db_urls:
            if actor.ref.kind is ActorKind.PROCESSOR:
                tables = await read_tables(url, PROCESSOR_TABLES)
                served |= _harvest_processor(found, actor.ref.party_id, tables)
            elif actor.ref.kind is ActorKind.WALLET:
                enrolment = _wallet_enrolment(await read_tables(url, ("settings",)))
                if enrolment:
                    enrolments[actor.ref.party_id] = enrolment
    actors = discover_actors(files, served, enrolments)
    for actor in actors:
        if actor.ref.kind is ActorKind.MERCHANT:
            for url in actor.db_urls:
                _harvest_merchant(found, actor, await read_tables(url, ("orders",)))
        if actor.ref.kind is ActorKind.PROCESSOR:
            found.add(
                Category.PAYER_PROCESSOR,
                actor.ref.party_id,
                participant(actor.ref.party_id),
                f"participant {actor.ref.party_id}",
            )
        _harvest_secret_files(found, actor)
    for path in actor_files(files.data_dir / "pki"):
        if path.suffix == ".key":
            for value in private_key_values(path):
                found.add(Category.SERVICE_SECRET, value, NOBODY, "scheme root CA key")
    if files.demo is not None:
        _harvest_demo(found, files.demo)
    found.extend(extra)
    return Harvest(actors, found)


__all__ = [
    "Datum",
    "Harvest",
    "SensitiveData",
    "customer",
    "harvest",
    "participant",
    "payee",
    "private_key_values",
]
