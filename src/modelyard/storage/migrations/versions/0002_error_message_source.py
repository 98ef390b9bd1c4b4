"""Attempt error messages and the source of a request.

- ``usage_attempts.error_message``: a short (at most 300 characters), scrubbed error text of a
  failed attempt, so a failure can be read later without the logs;
- ``usage_requests.source``: ``production`` (default), ``canary``, ``shadow``, ``comparison`` or
  ``probe`` (contracts: recommendations read production and canary; probes are charged to no org).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage_attempts") as batch:
        batch.add_column(sa.Column("error_message", sa.String(300), nullable=True))
    with op.batch_alter_table("usage_requests") as batch:
        batch.add_column(sa.Column("source", sa.String(16), nullable=False, server_default="production"))


def downgrade() -> None:
    with op.batch_alter_table("usage_requests") as batch:
        batch.drop_column("source")
    with op.batch_alter_table("usage_attempts") as batch:
        batch.drop_column("error_message")
