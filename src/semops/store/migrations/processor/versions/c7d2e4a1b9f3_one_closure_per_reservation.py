"""one closure per reservation: a unique key over a reservation's post and void

Revision ID: c7d2e4a1b9f3
Revises: b520589ec7bd
Create Date: 2026-12-02 05:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c7d2e4a1b9f3"
down_revision: str | None = "b520589ec7bd"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CLOSING_KINDS = sa.text("kind IN ('post', 'void')")


def upgrade() -> None:
    # The ledger never wrote a post and a void for one reservation (`check_closing`), so
    # existing databases satisfy the key.
    op.create_index(
        "uq_entries_closure",
        "entries",
        ["transfer_ref"],
        unique=True,
        sqlite_where=_CLOSING_KINDS,
        postgresql_where=_CLOSING_KINDS,
    )


def downgrade() -> None:
    op.drop_index("uq_entries_closure", table_name="entries")
