"""Whether a request reasoned, so first-token figures are kept apart for reasoning requests.

- ``usage_requests.reasoning``: true when the request asked for reasoning (Anthropic
  ``thinking``, ``reasoning_effort``, ...) or its answer began with reasoning; ``ttft_p50_ms`` in
  ``/v1/stats`` counts the others, ``ttft_reasoning_p50_ms`` these (contracts: "First token").

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a plain ADD COLUMN (SQLite supports it for a constant default): batch mode would copy the table
    op.add_column("usage_requests", sa.Column("reasoning", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("usage_requests") as batch:
        batch.drop_column("reasoning")
