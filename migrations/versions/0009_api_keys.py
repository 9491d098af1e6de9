"""api keys

Revision ID: 0009
Revises: 0005
Create Date: 2026-12-01 21:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.db

revision: str = '0009'
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'api_keys',
        sa.Column('id', sa.String(length=24), nullable=False),
        sa.Column('role', sa.String(length=16), nullable=False),
        sa.Column('label', sa.String(length=100), nullable=False),
        sa.Column('secret_sha256', sa.String(length=64), nullable=False),
        sa.Column('stores', sa.JSON(), nullable=True),
        sa.Column('created_at', core.db.UTCDateTime(), nullable=False),
        sa.Column('expires_at', core.db.UTCDateTime(), nullable=True),
        sa.Column('revoked_at', core.db.UTCDateTime(), nullable=True),
        sa.Column('replaced_by', sa.String(length=24), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index(op.f('ix_api_keys_role'), 'api_keys', ['role'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_api_keys_role'), table_name='api_keys')
    op.drop_table('api_keys')
