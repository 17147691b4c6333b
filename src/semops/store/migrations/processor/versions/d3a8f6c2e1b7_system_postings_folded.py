"""system postings folded: a system account's row no longer moves with every payment

Revision ID: d3a8f6c2e1b7
Revises: c7d2e4a1b9f3
Create Date: 2026-12-03 14:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d3a8f6c2e1b7"
down_revision: str | None = "c7d2e4a1b9f3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Every posting written before this revision moved its account's row in the same
    # transaction, so all of them are folded already.
    op.add_column(
        "postings", sa.Column("folded", sa.Boolean(), nullable=False, server_default=sa.true())
    )
    op.create_index(
        "ix_postings_unfolded",
        "postings",
        ["account_id"],
        sqlite_where=sa.text("folded = 0"),
        postgresql_where=sa.text("NOT folded"),
    )


def downgrade() -> None:
    # Fold what is not folded yet, so the rows hold every balance again without the column.
    postings = sa.table(
        "postings", sa.column("account_id", sa.String), sa.column("amount_minor", sa.BigInteger),
        sa.column("folded", sa.Boolean),
    )  # fmt: skip
    accounts = sa.table(
        "accounts", sa.column("account_id", sa.String), sa.column("balance_minor", sa.BigInteger)
    )
    connection = op.get_bind()
    unfolded = connection.execute(
        sa.select(postings.c.account_id, sa.func.sum(postings.c.amount_minor))
        .where(sa.not_(postings.c.folded))
        .group_by(postings.c.account_id)
    ).all()
    for account_id, amount_minor in unfolded:
        connection.execute(
            accounts.update()
            .where(accounts.c.account_id == account_id)
            .values(balance_minor=accounts.c.balance_minor + int(amount_minor))
        )
    op.drop_index("ix_postings_unfolded", table_name="postings")
    op.drop_column("postings", "folded")
