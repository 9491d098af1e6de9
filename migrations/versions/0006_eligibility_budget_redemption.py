"""campaign schedule hours, cooldown, budget; validity rules; coupon liability; till answers

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 21:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.db

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigInt = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.add_column(sa.Column('active_hours', sa.JSON(), nullable=True))
        batch_op.add_column(
            sa.Column('store_cooldown_minutes', sa.Integer(), server_default=sa.text('0'), nullable=False)
        )
        batch_op.add_column(sa.Column('max_coupons', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('max_liability', BigInt, nullable=True))
        batch_op.add_column(
            sa.Column('issued_count', sa.Integer(), server_default=sa.text('0'), nullable=False)
        )
        batch_op.add_column(
            sa.Column('reserved_liability', BigInt, server_default=sa.text('0'), nullable=False)
        )

    with op.batch_alter_table('offers', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('validity_rule', sa.String(length=16), server_default=sa.text("'fixed'"), nullable=False)
        )
        batch_op.add_column(sa.Column('decision_window_minutes', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('max_valid_minutes', sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column('discount_amount', sa.Integer(), server_default=sa.text('0'), nullable=False)
        )

    with op.batch_alter_table('coupons', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('liability', sa.Integer(), server_default=sa.text('0'), nullable=False)
        )
        batch_op.create_index('ix_coupons_status_expires', ['status', 'expires_at'], unique=False)

    op.create_table('till_answers',
    sa.Column('terminal', sa.String(length=64), nullable=False),
    sa.Column('idempotency_key', sa.String(length=200), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=False),
    sa.Column('body', sa.JSON(), nullable=False),
    sa.Column('created_at', core.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('terminal', 'idempotency_key', name=op.f('pk_till_answers'))
    )
    with op.batch_alter_table('till_answers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_till_answers_created_at'), ['created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('till_answers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_till_answers_created_at'))
    op.drop_table('till_answers')

    with op.batch_alter_table('coupons', schema=None) as batch_op:
        batch_op.drop_index('ix_coupons_status_expires')
        batch_op.drop_column('liability')

    with op.batch_alter_table('offers', schema=None) as batch_op:
        batch_op.drop_column('discount_amount')
        batch_op.drop_column('max_valid_minutes')
        batch_op.drop_column('decision_window_minutes')
        batch_op.drop_column('validity_rule')

    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.drop_column('reserved_liability')
        batch_op.drop_column('issued_count')
        batch_op.drop_column('max_liability')
        batch_op.drop_column('max_coupons')
        batch_op.drop_column('store_cooldown_minutes')
        batch_op.drop_column('active_hours')
