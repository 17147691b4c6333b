"""payee name keys: the UTS #39 skeleton digest of each payee's display name

Revision ID: 51a59f0ee3c8
Revises: 0cc9ef944f92
Create Date: 2026-12-01 19:31:40.805532
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from semops.protocol.names import name_key

revision: str = "51a59f0ee3c8"
down_revision: str | None = "0cc9ef944f92"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("payees", sa.Column("name_key", sa.String(length=43), nullable=True))
    op.create_index("ix_payees_name_key", "payees", ["name_key"], unique=False)
    # Payees made before this revision get their key, so a new look-alike is refused too.
    payees = sa.table(
        "payees", sa.column("payee_id", sa.String), sa.column("display_name", sa.String),
        sa.column("name_key", sa.String),
    )  # fmt: skip
    connection = op.get_bind()
    for payee_id, display_name in connection.execute(
        sa.select(payees.c.payee_id, payees.c.display_name)
    ).all():
        connection.execute(
            payees.update()
            .where(payees.c.payee_id == payee_id)
            .values(name_key=name_key(display_name))
        )


def downgrade() -> None:
    op.drop_index("ix_payees_name_key", table_name="payees")
    op.drop_column("payees", "name_key")
