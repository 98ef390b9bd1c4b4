"""Key roles and admin grants.

- ``api_keys.role``: ``app`` (default: the ``/v1`` API only) or ``org_admin`` (its organisation's
  keys, budgets, usage and audit through ``/admin``);
- ``api_keys.scopes``: grants only the master key sets (``providers:write``, ``models:write``,
  ``routes:write``).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("role", sa.String(16), nullable=False, server_default="app"))
        batch.add_column(sa.Column("scopes", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("scopes")
        batch.drop_column("role")
