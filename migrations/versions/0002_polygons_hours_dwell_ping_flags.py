"""polygons, hours, dwell, ping flags, event details

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 13:24:30.929356
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.db

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('fence_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('details', sa.JSON(), nullable=False, server_default='{}'))
        batch_op.add_column(sa.Column('eligible', sa.Boolean(), nullable=False, server_default=sa.true()))
        batch_op.add_column(sa.Column('reason', sa.String(length=40), nullable=True))

    with op.batch_alter_table('fences', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dwell_s', sa.Integer(), nullable=True))

    with op.batch_alter_table('pings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('speed_mps', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('heading_deg', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('is_mock', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('client_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('status', sa.String(length=16), nullable=False, server_default='used'))

    with op.batch_alter_table('stores', schema=None) as batch_op:
        batch_op.add_column(sa.Column('opening_hours', sa.JSON(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('stores', schema=None) as batch_op:
        batch_op.drop_column('opening_hours')

    with op.batch_alter_table('pings', schema=None) as batch_op:
        batch_op.drop_column('status')
        batch_op.drop_column('client_id')
        batch_op.drop_column('is_mock')
        batch_op.drop_column('heading_deg')
        batch_op.drop_column('speed_mps')

    with op.batch_alter_table('fences', schema=None) as batch_op:
        batch_op.drop_column('dwell_s')

    with op.batch_alter_table('fence_events', schema=None) as batch_op:
        batch_op.drop_column('reason')
        batch_op.drop_column('eligible')
        batch_op.drop_column('details')

