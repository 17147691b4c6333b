"""Results of the PostgreSQL backend: what the store code uses of SQLAlchemy's, over asyncpg.

asyncpg returns a list of records; the store functions were written against SQLAlchemy's
`Result` and `Row`. These classes give them the same answers for what they use -- `first()`,
`one()`, `scalar_one()`, `mappings()`, `scalars()`, `rowcount`, iteration -- and rows that
are tuples with attribute access and `_mapping`, as SQLAlchemy's are. A result holds every
row already (asyncpg fetched them in one go); it is read front to back like a cursor.
"""

from __future__ import annotations

import functools
import keyword
import operator
from collections.abc import Iterator, Sequence
from typing import Any, Final

from sqlalchemy.exc import MultipleResultsFound, NoResultFound

# Row classes kept, one per distinct set of column names (as many as compiled statements).
ROW_TYPES_MAX: Final = 512


class Row(tuple[Any, ...]):
    """A row: a tuple (indexing, unpacking, equality with tuples), its columns as attributes
    (`row.amount_minor`) and as a mapping (`row._mapping["amount_minor"]`)."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()

    @property
    def _mapping(self) -> dict[str, Any]:
        return dict(zip(self._fields, self, strict=True))

    def _asdict(self) -> dict[str, Any]:
        return self._mapping

    def _tuple(self) -> tuple[Any, ...]:
        return tuple(self)


@functools.lru_cache(maxsize=ROW_TYPES_MAX)
def row_type(keys: tuple[str, ...]) -> type[Row]:
    """The row class for these column names (attribute access by a property per column)."""
    namespace: dict[str, Any] = {"__slots__": (), "_fields": keys}
    for index, key in enumerate(keys):
        if key.isidentifier() and not keyword.iskeyword(key) and not key.startswith("_"):
            namespace.setdefault(key, property(operator.itemgetter(index)))
    return type("Row", (Row,), namespace)


def _one(items: Sequence[Any], *, required: bool) -> Any:
    if len(items) > 1:
        raise MultipleResultsFound("Multiple rows were found when exactly one was required")
    if not items:
        if required:
            raise NoResultFound("No row was found when one was required")
        return None
    return items[0]


class Listing:
    """Rows as mappings (`Result.mappings()`) or first columns (`Result.scalars()`)."""

    __slots__ = ("_items",)

    def __init__(self, items: list[Any]) -> None:
        self._items = items

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items)

    def first(self) -> Any:
        return self._items[0] if self._items else None

    def one(self) -> Any:
        return _one(self._items, required=True)

    def one_or_none(self) -> Any:
        return _one(self._items, required=False)

    def all(self) -> list[Any]:
        return self._items

    fetchall = all


class Result:
    """A statement's outcome: its rows (read front to back) and how many rows it touched."""

    __slots__ = ("_keys", "_position", "_records", "rowcount")

    def __init__(self, keys: tuple[str, ...] | None, records: list[Any], rowcount: int) -> None:
        # No names from the statement (a `text()` query): the server's column names.
        self._keys = keys if keys is not None else tuple(records[0].keys()) if records else ()
        self._records = records
        self._position = 0
        self.rowcount = rowcount

    def _rest(self) -> list[Any]:
        records = self._records[self._position :] if self._position else self._records
        self._position = len(self._records)
        return records

    def keys(self) -> tuple[str, ...]:
        return self._keys

    def __iter__(self) -> Iterator[Row]:
        return iter(self.all())

    def all(self) -> list[Row]:
        make = row_type(self._keys)
        return [make(record) for record in self._rest()]

    fetchall = all

    def fetchone(self) -> Row | None:
        if self._position >= len(self._records):
            return None
        self._position += 1
        return row_type(self._keys)(self._records[self._position - 1])

    def first(self) -> Row | None:
        row = self.fetchone()
        self._position = len(self._records)
        return row

    def one(self) -> Row:
        row: Row = _one(self.all(), required=True)
        return row

    def one_or_none(self) -> Row | None:
        row: Row | None = _one(self.all(), required=False)
        return row

    def scalar(self) -> Any:
        row = self.first()
        return None if row is None else row[0]

    def scalar_one(self) -> Any:
        return self.one()[0]

    def scalar_one_or_none(self) -> Any:
        row = self.one_or_none()
        return None if row is None else row[0]

    def scalars(self) -> Listing:
        return Listing([record[0] for record in self._rest()])

    def mappings(self) -> Listing:
        keys = self._keys
        return Listing([dict(zip(keys, record, strict=True)) for record in self._rest()])
