"""audit entries staged: a payment's audit entry goes in without taking the log's head

Revision ID: e4b9a7c3d2f1
Revises: d3a8f6c2e1b7
Create Date: 2026-12-04 19:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e4b9a7c3d2f1"
down_revision: str | None = "d3a8f6c2e1b7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_pending",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    # A staged entry is not in the log yet; dropping it would lose it. A service chains
    # every staged entry when it starts and when it stops cleanly.
    staged = op.get_bind().execute(sa.text("SELECT COUNT(*) FROM audit_pending")).scalar_one()
    if staged:
        raise RuntimeError(
            f"{staged} audit entries are staged, not chained yet: start and stop the "
            "service once on this revision, then downgrade"
        )
    op.drop_table("audit_pending")
