"""scheduler lease, delivery kinds (reminders), claim fencing tokens

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-01 21:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.db

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigInt = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "scheduler_leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=120), nullable=False),
        sa.Column("token", BigInt, nullable=False),
        sa.Column("expires_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_scheduler_leases")),
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("kind", sa.String(length=16), server_default="offer", nullable=False)
        )
        batch_op.add_column(sa.Column("claim_token", BigInt, nullable=True))
        batch_op.drop_constraint("uq_deliveries_coupon_channel", type_="unique")
        batch_op.create_unique_constraint(
            "uq_deliveries_coupon_channel_kind", ["coupon_id", "channel", "kind"]
        )
        batch_op.create_index("ix_deliveries_due", ["status", "due_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_due")
        batch_op.drop_constraint("uq_deliveries_coupon_channel_kind", type_="unique")
        batch_op.create_unique_constraint("uq_deliveries_coupon_channel", ["coupon_id", "channel"])
        batch_op.drop_column("claim_token")
        batch_op.drop_column("kind")
    op.drop_table("scheduler_leases")
