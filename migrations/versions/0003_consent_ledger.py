"""consent ledger chain, notices, checkpoints, receipts, subject keys

Entries written before this revision carry no chain hash; the verifier reports them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 13:43:47.442854
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.db
revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('consent_checkpoints',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('last_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('entry_hash', sa.String(length=64), nullable=False, server_default=''),
    sa.Column('signed_at', core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('public_key', sa.String(length=64), nullable=False),
    sa.Column('signature', sa.String(length=128), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_consent_checkpoints'))
    )
    with op.batch_alter_table('consent_checkpoints', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_consent_checkpoints_last_id'), ['last_id'], unique=False)

    op.create_table('consent_receipts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('subject_id', sa.String(length=40), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('subject_ref', sa.String(length=64), nullable=True),
    sa.Column('purpose', sa.String(length=40), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('allowed', sa.Boolean(), nullable=False),
    sa.Column('event_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('event_hash', sa.String(length=64), nullable=True),
    sa.Column('reason', sa.String(length=300), nullable=False),
    sa.Column('decided_at', core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_consent_receipts'))
    )
    with op.batch_alter_table('consent_receipts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_consent_receipts_decided_at'), ['decided_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_consent_receipts_subject_id'), ['subject_id'], unique=False)

    op.create_table('ledger_head',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('last_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('last_hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_head'))
    )
    op.create_table('notices',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('purpose', sa.String(length=40), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('language', sa.String(length=16), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('published_at', core.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notices'))
    )
    with op.batch_alter_table('notices', schema=None) as batch_op:
        batch_op.create_index('uq_notices_purpose_version_language', ['purpose', 'version', 'language'], unique=True)

    op.create_table('subject_keys',
    sa.Column('subject_id', sa.String(length=40), nullable=False),
    sa.Column('wrapped_key', sa.Text(), nullable=False),
    sa.Column('created_at', core.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('subject_id', name=op.f('pk_subject_keys'))
    )
    with op.batch_alter_table('consent_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('notice_id', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('evidence_sealed', sa.Text(), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('valid_until', core.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('prev_hash', sa.String(length=64), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('entry_hash', sa.String(length=64), nullable=False, server_default=''))
        batch_op.create_index(batch_op.f('ix_consent_events_recorded_at'), ['recorded_at'], unique=False)
        batch_op.drop_column('evidence')
        batch_op.drop_column('content_hash')

    with op.batch_alter_table('consent_states', schema=None) as batch_op:
        batch_op.add_column(sa.Column('valid_until', core.db.UTCDateTime(timezone=True), nullable=True))

    with op.batch_alter_table('subjects', schema=None) as batch_op:
        batch_op.add_column(sa.Column('erased_at', core.db.UTCDateTime(timezone=True), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('subjects', schema=None) as batch_op:
        batch_op.drop_column('erased_at')

    with op.batch_alter_table('consent_states', schema=None) as batch_op:
        batch_op.drop_column('valid_until')

    with op.batch_alter_table('consent_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('content_hash', sa.VARCHAR(length=64), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('evidence', sa.JSON(), nullable=False, server_default='{}'))
        batch_op.drop_index(batch_op.f('ix_consent_events_recorded_at'))
        batch_op.drop_column('entry_hash')
        batch_op.drop_column('prev_hash')
        batch_op.drop_column('valid_until')
        batch_op.drop_column('evidence_sealed')
        batch_op.drop_column('notice_id')

    op.drop_table('subject_keys')
    with op.batch_alter_table('notices', schema=None) as batch_op:
        batch_op.drop_index('uq_notices_purpose_version_language')

    op.drop_table('notices')
    op.drop_table('ledger_head')
    with op.batch_alter_table('consent_receipts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_consent_receipts_subject_id'))
        batch_op.drop_index(batch_op.f('ix_consent_receipts_decided_at'))

    op.drop_table('consent_receipts')
    with op.batch_alter_table('consent_checkpoints', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_consent_checkpoints_last_id'))

    op.drop_table('consent_checkpoints')
