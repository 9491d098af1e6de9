"""campaign category

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 14:57:25.190436
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.db

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.add_column(sa.Column('category', sa.String(length=60), nullable=True))




def downgrade() -> None:

    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.drop_column('category')


