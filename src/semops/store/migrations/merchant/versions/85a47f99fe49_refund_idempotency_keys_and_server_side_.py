"""Merchant backend: refund idempotency keys (M1) and server-side shop sessions.

Refunds made before this revision keep no key (NULL; a unique index allows many NULLs).

Revision ID: 85a47f99fe49
Revises: c3bef5094321
Create Date: 2026-12-01 19:31:29.624161
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "85a47f99fe49"
down_revision: str | None = "c3bef5094321"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("session_digest", sa.String(length=64), nullable=False),
        sa.Column("token_digest", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("session_digest"),
    )
    op.create_index("ix_sessions_expires", "sessions", ["expires_at"], unique=False)
    op.add_column("refunds", sa.Column("idempotency_key", sa.String(length=64), nullable=True))
    op.add_column("refunds", sa.Column("content_digest", sa.String(length=43), nullable=True))
    op.create_index("ux_refunds_idempotency_key", "refunds", ["idempotency_key"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_refunds_idempotency_key", table_name="refunds")
    op.drop_column("refunds", "content_digest")
    op.drop_column("refunds", "idempotency_key")
    op.drop_index("ix_sessions_expires", table_name="sessions")
    op.drop_table("sessions")
