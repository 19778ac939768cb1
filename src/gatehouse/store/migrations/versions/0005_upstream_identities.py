"""Upstream identity providers: links of local users to (upstream issuer, subject) and the
encrypted upstream token vault (issue 6)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('upstream_identities',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('provider', sa.String(length=64), nullable=False),
    sa.Column('issuer', sa.String(length=255), nullable=False),
    sa.Column('subject', sa.String(length=255), nullable=False),
    sa.Column('email', sa.String(length=255), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('last_login_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('issuer', 'subject')
    )
    with op.batch_alter_table('upstream_identities', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_upstream_identities_user_id'), ['user_id'], unique=False)

    op.create_table('upstream_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('provider', sa.String(length=64), nullable=False),
    sa.Column('tokens_encrypted', sa.Text(), nullable=False),
    sa.Column('token_type', sa.String(length=32), nullable=False),
    sa.Column('scope', sa.Text(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=True),
    sa.Column('refresh_claim', sa.String(length=32), nullable=True),
    sa.Column('refresh_claimed_until', sa.DateTime(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('user_id', 'provider')
    )

    op.create_table('upstream_login_states',
    sa.Column('state_hash', sa.String(length=64), nullable=False),
    sa.Column('provider', sa.String(length=64), nullable=False),
    sa.Column('browser_hash', sa.String(length=64), nullable=False),
    sa.Column('code_verifier', sa.String(length=128), nullable=False),
    sa.Column('nonce', sa.String(length=128), nullable=False),
    sa.Column('next_url', sa.Text(), nullable=False),
    sa.Column('client_id', sa.String(length=255), nullable=True),
    sa.Column('consented', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.Column('used_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('state_hash')
    )
    with op.batch_alter_table('upstream_login_states', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_upstream_login_states_expires_at'), ['expires_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('upstream_login_states', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_upstream_login_states_expires_at'))
    op.drop_table('upstream_login_states')
    op.drop_table('upstream_tokens')
    with op.batch_alter_table('upstream_identities', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_upstream_identities_user_id'))
    op.drop_table('upstream_identities')
