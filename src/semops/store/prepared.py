"""Statements built once and executed with parameters, for the queries of every payment.

Building a SQLAlchemy Core statement with literal values costs far more than running it
on SQLite: the construction itself, then its cache key and the extraction of the literal
values on every execution. A statement built once with `bindparam()` keeps its cache key
(SQLAlchemy memoizes it) and only its parameters are processed per call. The generic
helpers here cache one statement per table and shape (the columns given, `FOR UPDATE` or
not); the store modules keep their own module-level statements for their fixed queries.

Bound parameter names start with `b_`: a name equal to a column's would collide with the
parameters SQLAlchemy derives for an INSERT's VALUES or an UPDATE's SET.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import (
    Column,
    Insert,
    Select,
    Table,
    Update,
    and_,
    bindparam,
    insert,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.sql.elements import BindParameter, ClauseElement

from semops.store.db import Connection


def param(column: Column[Any] | Any, name: str | None = None) -> BindParameter[Any]:
    """A bound parameter `b_<column>` typed like the column it is compared or assigned to."""
    return bindparam(f"b_{name or column.key}", type_=column.type)


def key_column(table: Table) -> Any:
    (column,) = table.primary_key.columns
    return column


def plain(values: dict[str, Any]) -> bool:
    """Whether every value is a plain value (no SQL expression), so it can be a parameter."""
    return not any(isinstance(value, ClauseElement) for value in values.values())


@functools.cache
def select_by_key(table: Table, for_update: bool) -> Select[Any]:
    query = select(table).where(
        key_column(table) == bindparam("b_key", type_=key_column(table).type)
    )
    return query.with_for_update() if for_update else query


@functools.cache
def select_where(
    table: Table, names: tuple[tuple[str, bool], ...], for_update: bool
) -> Select[Any]:
    """SELECT … WHERE each named column equals its `b_<name>` parameter (or IS NULL, for the
    names marked True: `column == None` means IS NULL) LIMIT 1."""
    query = select(table).where(
        and_(
            *(
                table.c[name].is_(None) if is_null else table.c[name] == param(table.c[name])
                for name, is_null in names
            )
        )
    )
    if for_update:
        query = query.with_for_update()
    return query.limit(1)


def bound_rows(table: Table, count: int) -> Any:
    """`count` rows of every column of `table` as bound parameters `b_<column>_<index>`,
    as SELECT … UNION ALL SELECT …, to INSERT … FROM SELECT. The same rows as a multi-row
    VALUES, which SQLAlchemy does not cache (it compiles that statement on every call,
    ~0.3 ms); rows go in the order given. WHERE true lets SQLite parse an upsert after it."""
    rows = [
        select(
            *(
                bindparam(f"b_{column.key}_{index}", type_=column.type).label(column.key)
                for column in table.c
            )
        ).where(true())
        for index in range(count)
    ]
    return union_all(*rows) if count > 1 else rows[0]


@functools.cache
def columns_known(table: Table, names: tuple[str, ...]) -> bool:
    """Whether every name is a column of the table (else the caller builds the statement the
    ordinary way, which raises SQLAlchemy's own error)."""
    return bool(names) and all(name in table.c for name in names)


@functools.cache
def insert_into(table: Table) -> Insert:
    """INSERT INTO table: executed with a row dict, its keys become the VALUES columns."""
    return insert(table)


@functools.cache
def update_by_key(table: Table, with_state: bool) -> Update:
    """UPDATE table WHERE key = :b_key [AND state = :b_state]: executed with the new values
    and those two parameters, the values' keys become the SET columns."""
    condition: Any = key_column(table) == bindparam("b_key", type_=key_column(table).type)
    if with_state:
        condition = and_(condition, table.c.state == param(table.c.state))
    return update(table).where(condition)


@functools.cache
def select_equal(table: Table, name: str) -> Select[Any]:
    """SELECT … WHERE column = :b_<column> (no LIMIT: the caller takes the first row)."""
    return select(table).where(table.c[name] == param(table.c[name]))


async def insert_row(connection: Connection, table: Table, row: dict[str, Any]) -> None:
    """INSERT one row: what `insert(table).values(**row)` does, with a statement built once."""
    if columns_known(table, tuple(row)) and plain(row):
        await connection.execute(insert_into(table), row)
    else:  # SQLAlchemy's own error for an unknown column, or SQL expressions as values
        await connection.execute(insert(table).values(**row))


async def update_row(
    connection: Connection,
    table: Table,
    key: Any,
    values: dict[str, Any],
    expected_state: str | None = None,
) -> int:
    """UPDATE the row with this key [still in `expected_state`]; the rowcount."""
    if columns_known(table, tuple(values)) and plain(values):
        parameters = {**values, "b_key": key}
        if expected_state is not None:
            parameters["b_state"] = expected_state
        statement: Any = update_by_key(table, expected_state is not None)
        result = await connection.execute(statement, parameters)
    else:  # SQLAlchemy's own error for an unknown column, or SQL expressions as values
        condition = key_column(table) == key
        if expected_state is not None:
            condition = and_(condition, table.c.state == expected_state)
        result = await connection.execute(update(table).where(condition).values(**values))
    return int(result.rowcount)
