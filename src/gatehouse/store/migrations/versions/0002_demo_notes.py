"""demo notes

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 16:59:22.155541
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('demo_notes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('owner', sa.String(length=255), nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('demo_notes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_demo_notes_owner'), ['owner'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('demo_notes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_demo_notes_owner'))

    op.drop_table('demo_notes')
