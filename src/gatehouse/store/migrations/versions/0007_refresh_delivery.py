"""Refresh-token delivery (issue 7, crash safety): refresh_tokens.replaces_id links a rotation's
new token to the one it replaced; refresh_tokens.delivered_at records when its answer was sent.
Rows issued before this revision replace nothing, so none is ever judged by its delivery: no
backfill, and no rewrite of a large table.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('refresh_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('replaces_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True))
        batch_op.add_column(sa.Column('delivered_at', sa.DateTime(), nullable=True))
        batch_op.create_index(batch_op.f('ix_refresh_tokens_replaces_id'), ['replaces_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('refresh_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_refresh_tokens_replaces_id'))
        batch_op.drop_column('delivered_at')
        batch_op.drop_column('replaces_id')
