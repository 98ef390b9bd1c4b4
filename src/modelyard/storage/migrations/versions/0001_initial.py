"""Initial schema: settings, organisations, virtual keys, usage records, credentials, budget events.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def _usage_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("ts", TS, nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("org_id", sa.String(64), nullable=True),
        sa.Column("key_id", sa.String(64), nullable=True),
        sa.Column("route", sa.String(200), nullable=False),
        sa.Column("task", sa.String(100), nullable=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("provider", sa.String(100), nullable=False),
        sa.Column("tokens_in", sa.Integer(), nullable=False),
        sa.Column("tokens_out", sa.Integer(), nullable=False),
        sa.Column("tokens_cached", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Double(), nullable=False),
        sa.Column("cost_estimated", sa.Boolean(), nullable=False),
        sa.Column("latency_ms", sa.Double(), nullable=False),
        sa.Column("ttft_ms", sa.Double(), nullable=True),
        sa.Column("success", sa.Boolean(), nullable=False),
        sa.Column("error_class", sa.String(64), nullable=True),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("fallback", sa.Boolean(), nullable=False),
        sa.Column("stream", sa.Boolean(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "settings",
        sa.Column("key", sa.String(100), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_settings"),
    )
    op.create_table(
        "organizations",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_organizations"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("allowed_routes", sa.JSON(), nullable=True),
        sa.Column("allowed_models", sa.JSON(), nullable=True),
        sa.Column("rpm", sa.Integer(), nullable=True),
        sa.Column("tpm", sa.Integer(), nullable=True),
        sa.Column("budget_usd", sa.Double(), nullable=True),
        sa.Column("expires_at", TS, nullable=True),
        sa.Column("revoked_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_used_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name="fk_api_keys_org_id_organizations", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    op.create_index("ix_api_keys_org_id", "api_keys", ["org_id"])

    op.create_table(
        "usage_requests",
        *_usage_columns(),
        sa.Column("baseline_cost_usd", sa.Double(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("cache_hit", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("request_id", name="pk_usage_requests"),
    )
    op.create_index("ix_usage_requests_ts", "usage_requests", ["ts"])
    op.create_index("ix_usage_requests_org_id_ts", "usage_requests", ["org_id", "ts"])
    op.create_index("ix_usage_requests_key_id_ts", "usage_requests", ["key_id", "ts"])
    op.create_index("ix_usage_requests_model", "usage_requests", ["model"])
    op.create_index("ix_usage_requests_route", "usage_requests", ["route"])

    op.create_table(
        "usage_attempts",
        *_usage_columns(),
        sa.Column("attempt_number", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("request_id", "attempt_number", name="pk_usage_attempts"),
    )
    op.create_index("ix_usage_attempts_ts", "usage_attempts", ["ts"])
    op.create_index("ix_usage_attempts_org_id_ts", "usage_attempts", ["org_id", "ts"])
    op.create_index("ix_usage_attempts_model", "usage_attempts", ["model"])
    op.create_index("ix_usage_attempts_route", "usage_attempts", ["route"])

    op.create_table(
        "provider_credentials",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("org_id", sa.String(64), nullable=True),
        sa.Column("provider", sa.String(100), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("nonce", sa.LargeBinary(), nullable=False),
        sa.Column("masked", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_provider_credentials"),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name="fk_provider_credentials_org_id_organizations", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_provider_credentials_org_id", "provider_credentials", ["org_id"])

    op.create_table(
        "budget_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ts", TS, nullable=False),
        sa.Column("org_id", sa.String(64), nullable=True),
        sa.Column("budget", sa.String(200), nullable=False),
        sa.Column("scope_key", sa.String(200), nullable=False),
        sa.Column("period_start", TS, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("fraction", sa.Double(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_budget_events"),
        sa.UniqueConstraint(
            "budget",
            "scope_key",
            "period_start",
            "kind",
            "fraction",
            name="uq_budget_events_budget_scope_key_period_start_kind_fraction",
        ),
    )
    op.create_index("ix_budget_events_ts", "budget_events", ["ts"])
    op.create_index("ix_budget_events_org_id_ts", "budget_events", ["org_id", "ts"])


def downgrade() -> None:
    for table in (
        "budget_events",
        "provider_credentials",
        "usage_attempts",
        "usage_requests",
        "api_keys",
        "organizations",
        "settings",
    ):
        op.drop_table(table)
