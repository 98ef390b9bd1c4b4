"""What the auto strategy chose, per request (docs/routing.md).

- ``usage_requests.tier``, ``complexity``, ``tier_reason``: the tier an ``auto`` route picked for
  the prompt, the classifier's complexity and why (NULL on other routes);
- ``usage_requests.judge_score``, ``judge_cost_usd``: the judge's score of the answer and what
  judging cost (also counted in ``cost_usd``);
- ``usage_rollups.judged``, ``judge_sum``: the judged answers and their scores' sum per hour, for
  ``judge_score_avg`` in ``/v1/stats``.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMNs (nullable, or a constant default): batch mode would copy the table on SQLite
    op.add_column("usage_requests", sa.Column("tier", sa.String(32), nullable=True))
    op.add_column("usage_requests", sa.Column("complexity", sa.Double(), nullable=True))
    op.add_column("usage_requests", sa.Column("tier_reason", sa.String(200), nullable=True))
    op.add_column("usage_requests", sa.Column("judge_score", sa.Double(), nullable=True))
    op.add_column(
        "usage_requests", sa.Column("judge_cost_usd", sa.Double(), nullable=False, server_default=sa.text("0"))
    )
    op.add_column("usage_rollups", sa.Column("judged", sa.Integer(), nullable=False, server_default=sa.text("0")))
    op.add_column("usage_rollups", sa.Column("judge_sum", sa.Double(), nullable=False, server_default=sa.text("0")))


def downgrade() -> None:
    with op.batch_alter_table("usage_rollups") as batch:
        batch.drop_column("judge_sum")
        batch.drop_column("judged")
    with op.batch_alter_table("usage_requests") as batch:
        for name in ("judge_cost_usd", "judge_score", "tier_reason", "complexity", "tier"):
            batch.drop_column(name)
