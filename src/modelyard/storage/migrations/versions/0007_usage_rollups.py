"""Hourly usage rollups, so that ``/v1/stats`` over 30 days reads a few thousand rows, not millions.

- ``usage_rollups``: per hour, organisation, source and dimension value, the sums and latency
  histograms of usage_requests (storage/rollup.py, storage/sketch.py).
- ``usage_rollup_dirty``: hours to roll up (again).  Every hour that already holds usage rows is
  marked here, so the gateway rolls up the existing history in the background after upgrading;
  until then those hours are read from usage_requests as before.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

TS = sa.DateTime(timezone=True)

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_rollups",
        sa.Column("hour", TS, nullable=False),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("dim", sa.String(16), nullable=False),
        sa.Column("value", sa.String(200), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("successes", sa.Integer(), nullable=False),
        sa.Column("fallbacks", sa.Integer(), nullable=False),
        sa.Column("cache_hits", sa.Integer(), nullable=False),
        sa.Column("tokens_in", sa.BigInteger(), nullable=False),
        sa.Column("tokens_out", sa.BigInteger(), nullable=False),
        sa.Column("tokens_cached", sa.BigInteger(), nullable=False),
        sa.Column("cost_usd", sa.Double(), nullable=False),
        sa.Column("baseline_cost_usd", sa.Double(), nullable=True),
        sa.Column("savings_usd", sa.Double(), nullable=True),
        sa.Column("latency_hist", sa.LargeBinary(), nullable=True),
        sa.Column("ttft_hist", sa.LargeBinary(), nullable=True),
        sa.Column("ttft_reasoning_hist", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("dim", "hour", "org_id", "source", "value", name="pk_usage_rollups"),
    )
    op.create_table(
        "usage_rollup_dirty",
        sa.Column("hour", TS, nullable=False),
        sa.Column("gen", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("hour", name="pk_usage_rollup_dirty"),
    )
    if op.get_bind().dialect.name == "sqlite":
        # the text SQLAlchemy stores for a naive UTC datetime: "2026-12-04 06:00:00.000000"
        hour = "strftime('%Y-%m-%d %H:00:00.000000', ts)"
    else:
        hour = "date_trunc('hour', ts, 'UTC')"
    op.execute(f"INSERT INTO usage_rollup_dirty (hour, gen) SELECT DISTINCT {hour}, 0 FROM usage_requests")


def downgrade() -> None:
    op.drop_table("usage_rollup_dirty")
    op.drop_table("usage_rollups")
