"""DPoP (RFC 9449): grants.dpop_jkt binds a family's refresh tokens, authorization_codes.dpop_jkt
a code (section 10); dpop_proof_jtis for replay

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ('grants', 'authorization_codes'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('dpop_jkt', sa.String(length=64), nullable=True))
    op.create_table('dpop_proof_jtis',
    sa.Column('jkt', sa.String(length=64), nullable=False),
    sa.Column('jti', sa.String(length=255), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('jkt', 'jti')
    )
    with op.batch_alter_table('dpop_proof_jtis', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dpop_proof_jtis_expires_at'), ['expires_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('dpop_proof_jtis', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dpop_proof_jtis_expires_at'))
    op.drop_table('dpop_proof_jtis')
    for table in ('authorization_codes', 'grants'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('dpop_jkt')
