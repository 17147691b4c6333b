"""positions folded: a commit no longer moves the two positions and two window positions

Revision ID: b8d2f6a4c1e9
Revises: a7c1e5d9b3f2
Create Date: 2026-12-04 19:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b8d2f6a4c1e9"
down_revision: str | None = "a7c1e5d9b3f2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Every transfer committed before this revision moved the positions in its own
    # transaction, so all of them are folded already.
    op.add_column(
        "transfers", sa.Column("folded", sa.Boolean(), nullable=False, server_default=sa.true())
    )
    op.create_index(
        "ix_transfers_unfolded",
        "transfers",
        ["window_id"],
        sqlite_where=sa.text("folded = 0"),
        postgresql_where=sa.text("NOT folded"),
    )


def downgrade() -> None:
    # Fold what is not folded yet, so the rows hold every position again without the column.
    bind = op.get_bind()
    unfolded = bind.execute(
        sa.text(
            "SELECT window_id, payer_processor, payee_processor, currency, amount_minor "
            "FROM transfers WHERE NOT folded"
        )
    ).all()
    for window_id, sender, receiver, currency, amount in unfolded:
        for participant, net, sent, received in (
            (sender, -amount, amount, 0),
            (receiver, amount, 0, amount),
        ):
            moved = {"w": window_id, "p": participant, "c": currency, "net": net}
            moved.update(sent=sent, received=received, sc=int(sent > 0), rc=int(received > 0))
            for update, insert in _FOLD_ONE:
                if not bind.execute(sa.text(update), moved).rowcount:
                    bind.execute(sa.text(insert), moved)
    op.drop_index("ix_transfers_unfolded", table_name="transfers")
    op.drop_column("transfers", "folded")


_FOLD_ONE = (
    (
        "UPDATE positions SET net_minor = net_minor + :net "
        "WHERE participant_id = :p AND currency = :c",
        "INSERT INTO positions VALUES (:p, :c, :net)",
    ),
    (
        "UPDATE window_positions SET net_minor = net_minor + :net, "
        "sent_minor = sent_minor + :sent, received_minor = received_minor + :received, "
        "sent_count = sent_count + :sc, received_count = received_count + :rc "
        "WHERE window_id = :w AND participant_id = :p AND currency = :c",
        "INSERT INTO window_positions VALUES (:w, :p, :c, :net, :sent, :received, :sc, :rc)",
    ),
)
