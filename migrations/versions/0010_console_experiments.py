"""offer variants, triggers, store tags, holdout decisions, coupon opens

Revision ID: 0010
Revises: 0005
Create Date: 2026-12-01 21:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.db

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigInt = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.add_column(sa.Column('triggers', sa.JSON(), nullable=False, server_default='["enter"]'))
        batch_op.add_column(sa.Column('store_tags', sa.JSON(), nullable=False, server_default='[]'))
        batch_op.add_column(sa.Column('holdout_share', sa.Float(), nullable=False, server_default='0.1'))
        batch_op.add_column(sa.Column('selection', sa.String(length=16), nullable=False, server_default='fixed'))
        batch_op.add_column(sa.Column('visit_window_minutes', sa.Integer(), nullable=False, server_default='120'))
        batch_op.add_column(sa.Column('updated_at', core.db.UTCDateTime(timezone=True), nullable=True))

    with op.batch_alter_table('offers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('name', sa.String(length=60), nullable=False, server_default='A'))
        batch_op.add_column(sa.Column('weight', sa.Integer(), nullable=False, server_default='1'))
        batch_op.add_column(sa.Column('active', sa.Boolean(), nullable=False, server_default=sa.true()))

    with op.batch_alter_table('stores', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tags', sa.JSON(), nullable=False, server_default='[]'))

    op.create_table('offer_decisions',
    sa.Column('id', BigInt, autoincrement=True, nullable=False),
    sa.Column('campaign_id', sa.String(length=40), nullable=False),
    sa.Column('offer_id', sa.String(length=40), nullable=True),
    sa.Column('store_id', sa.String(length=40), nullable=False),
    sa.Column('subject_id', sa.String(length=40), nullable=False),
    sa.Column('trigger_event_id', sa.String(length=40), nullable=False),
    sa.Column('trigger_kind', sa.String(length=16), nullable=False),
    sa.Column('trigger_at', core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=40), nullable=True),
    sa.Column('coupon_id', sa.String(length=40), nullable=True),
    sa.Column('decided_at', core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('visit_until', core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('visited_at', core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('purchased_at', core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_offer_decisions_campaign_id_campaigns'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_offer_decisions'))
    )
    with op.batch_alter_table('offer_decisions', schema=None) as batch_op:
        batch_op.create_index('ix_offer_decisions_campaign_decided', ['campaign_id', 'decided_at'], unique=False)
        batch_op.create_index('ix_offer_decisions_subject_store', ['subject_id', 'store_id', 'trigger_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_offer_decisions_coupon_id'), ['coupon_id'], unique=False)

    op.create_table('coupon_opens',
    sa.Column('coupon_id', sa.String(length=40), nullable=False),
    sa.Column('opened_at', core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('via', sa.String(length=16), nullable=False),
    sa.ForeignKeyConstraint(['coupon_id'], ['coupons.id'], name=op.f('fk_coupon_opens_coupon_id_coupons'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('coupon_id', name=op.f('pk_coupon_opens'))
    )


def downgrade() -> None:
    op.drop_table('coupon_opens')
    with op.batch_alter_table('offer_decisions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_offer_decisions_coupon_id'))
        batch_op.drop_index('ix_offer_decisions_subject_store')
        batch_op.drop_index('ix_offer_decisions_campaign_decided')
    op.drop_table('offer_decisions')
    with op.batch_alter_table('stores', schema=None) as batch_op:
        batch_op.drop_column('tags')
    with op.batch_alter_table('offers', schema=None) as batch_op:
        batch_op.drop_column('active')
        batch_op.drop_column('weight')
        batch_op.drop_column('name')
    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.drop_column('updated_at')
        batch_op.drop_column('visit_window_minutes')
        batch_op.drop_column('selection')
        batch_op.drop_column('holdout_share')
        batch_op.drop_column('store_tags')
        batch_op.drop_column('triggers')
