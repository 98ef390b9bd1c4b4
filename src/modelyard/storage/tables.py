"""The schema, as SQLAlchemy Core tables.  Migrations (``storage/migrations``) create exactly this.

Every row that belongs to a tenant carries its organisation (``org_id``).  Usage rows keep the
``org_id`` they were written with and have no foreign key: usage history outlives organisations
and keys, and the hot insert path should not pay for constraint checks.

Times are stored in UTC: ``timestamp with time zone`` on Postgres, ISO text on SQLite (through
:class:`UtcDateTime`, which always hands back aware UTC datetimes).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)

__all__ = [
    "UtcDateTime",
    "api_keys",
    "as_utc",
    "audit_log",
    "budget_events",
    "comparisons",
    "config_revisions",
    "metadata",
    "organizations",
    "provider_credentials",
    "settings",
    "stored_responses",
    "usage_attempts",
    "usage_requests",
    "usage_rollup_dirty",
    "usage_rollups",
]


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive one is taken as UTC."""
    if value.tzinfo is UTC:
        return value
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (naive input is taken as UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        return as_utc(value)


NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)

_ID = 64  # identifiers: org and key ids, request ids

settings = Table(
    "settings",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

organizations = Table(
    "organizations",
    metadata,
    Column("id", String(_ID), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(_ID), primary_key=True),
    Column("org_id", String(_ID), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    #: sha256 of the plaintext key, hex; the plaintext is never stored
    Column("key_hash", String(64), nullable=False, unique=True),
    #: the first characters of the key, for display ("my-abcd")
    Column("prefix", String(16), nullable=False),
    Column("allowed_routes", JSON, nullable=True),
    Column("allowed_models", JSON, nullable=True),
    Column("rpm", BigInteger, nullable=True),
    Column("tpm", BigInteger, nullable=True),
    Column("budget_usd", Double, nullable=True),
    Column("expires_at", UtcDateTime, nullable=True),
    Column("revoked_at", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_used_at", UtcDateTime, nullable=True),
    #: "app" (the /v1 API only) or "org_admin" (its organisation's keys, budgets, usage, audit)
    Column("role", String(16), nullable=False, server_default="app"),
    #: admin grants set by the master key: providers:write, models:write, routes:write
    Column("scopes", JSON, nullable=True),
)


def _usage_columns() -> list[Column[Any]]:
    """The columns usage_requests and usage_attempts share."""
    return [
        Column("ts", UtcDateTime, nullable=False),
        Column("request_id", String(_ID), nullable=False),
        Column("org_id", String(_ID), nullable=True),
        Column("key_id", String(_ID), nullable=True),
        Column("route", String(200), nullable=False),
        Column("task", String(100), nullable=True),
        Column("model", String(200), nullable=False),
        Column("provider", String(100), nullable=False),
        Column("tokens_in", Integer, nullable=False),
        Column("tokens_out", Integer, nullable=False),
        Column("tokens_cached", Integer, nullable=False),
        Column("cost_usd", Double, nullable=False),
        Column("cost_estimated", Boolean, nullable=False),
        Column("latency_ms", Double, nullable=False),
        Column("ttft_ms", Double, nullable=True),
        Column("success", Boolean, nullable=False),
        Column("error_class", String(64), nullable=True),
        Column("status", Integer, nullable=True),
        Column("fallback", Boolean, nullable=False),
        Column("stream", Boolean, nullable=False),
    ]


usage_requests = Table(
    "usage_requests",
    metadata,
    *_usage_columns(),
    Column("baseline_cost_usd", Double, nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("cache_hit", Boolean, nullable=False),
    #: production, canary, shadow, comparison or probe (migration 0002)
    Column("source", String(16), nullable=False, server_default="production"),
    #: the request asked for reasoning or its answer began with it (migration 0006)
    Column("reasoning", Boolean, nullable=False, server_default=false()),
    #: strategy auto: the tier, the prompt's complexity, why; the judge's score and cost (migration 0008)
    Column("tier", String(32), nullable=True),
    Column("complexity", Double, nullable=True),
    Column("tier_reason", String(200), nullable=True),
    Column("judge_score", Double, nullable=True),
    Column("judge_cost_usd", Double, nullable=False, server_default=text("0")),
    PrimaryKeyConstraint("request_id"),
    Index(None, "ts"),
    Index(None, "org_id", "ts"),
    Index(None, "key_id", "ts"),
    Index(None, "model"),
    Index(None, "route"),
)

usage_attempts = Table(
    "usage_attempts",
    metadata,
    *_usage_columns(),
    Column("attempt_number", Integer, nullable=False),
    #: a short, scrubbed error text of a failed attempt (migration 0002)
    Column("error_message", String(300), nullable=True),
    PrimaryKeyConstraint("request_id", "attempt_number"),
    Index(None, "ts"),
    Index(None, "org_id", "ts"),
    Index(None, "model"),
    Index(None, "route"),
)

#: hourly sums and latency histograms of usage_requests, one row per (hour, organisation, source,
#: dimension, value): ``dim`` is "" (the hour's totals), model, route, provider, key or
#: error_class; "" stands for no organisation, key or error class.  See storage/rollup.py.
usage_rollups = Table(
    "usage_rollups",
    metadata,
    Column("hour", UtcDateTime, nullable=False),
    Column("org_id", String(_ID), nullable=False),
    Column("source", String(16), nullable=False),
    Column("dim", String(16), nullable=False),
    Column("value", String(200), nullable=False),
    Column("requests", Integer, nullable=False),
    Column("successes", Integer, nullable=False),
    Column("fallbacks", Integer, nullable=False),
    Column("cache_hits", Integer, nullable=False),
    Column("tokens_in", BigInteger, nullable=False),
    Column("tokens_out", BigInteger, nullable=False),
    Column("tokens_cached", BigInteger, nullable=False),
    Column("cost_usd", Double, nullable=False),
    #: null when no request of the row had a baseline
    Column("baseline_cost_usd", Double, nullable=True),
    Column("savings_usd", Double, nullable=True),
    #: storage/sketch.py histograms: successful requests' latency, first-token times apart for
    #: reasoning requests
    Column("latency_hist", LargeBinary, nullable=True),
    Column("ttft_hist", LargeBinary, nullable=True),
    Column("ttft_reasoning_hist", LargeBinary, nullable=True),
    #: answers a judge scored, and the sum of their scores (migration 0008)
    Column("judged", Integer, nullable=False, server_default=text("0")),
    Column("judge_sum", Double, nullable=False, server_default=text("0")),
    PrimaryKeyConstraint("dim", "hour", "org_id", "source", "value"),
)

#: hours whose usage_requests rows changed since they were last rolled up (the current hour, late
#: records); ``gen`` is a random number set by every change, so a rollup computed before a change
#: does not clear the mark
usage_rollup_dirty = Table(
    "usage_rollup_dirty",
    metadata,
    Column("hour", UtcDateTime, primary_key=True),
    Column("gen", BigInteger, nullable=False),
)

provider_credentials = Table(
    "provider_credentials",
    metadata,
    Column("id", String(_ID), primary_key=True),
    Column("org_id", String(_ID), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=True, index=True),
    Column("provider", String(100), nullable=False),
    Column("name", String(200), nullable=False),
    #: AES-GCM ciphertext (with its tag) of the secret; see modelyard.storage.crypto
    Column("ciphertext", LargeBinary, nullable=False),
    Column("nonce", LargeBinary, nullable=False),
    #: what may be shown: "sk-...abcd"
    Column("masked", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

budget_events = Table(
    "budget_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", UtcDateTime, nullable=False),
    Column("org_id", String(_ID), nullable=True),
    Column("budget", String(200), nullable=False),
    #: which instance of the budget: the org, key, route or model id ("" for global)
    Column("scope_key", String(200), nullable=False),
    Column("period_start", UtcDateTime, nullable=False),
    #: "alert" or "stop"
    Column("kind", String(16), nullable=False),
    Column("fraction", Double, nullable=False),
    Column("message", Text, nullable=False),
    UniqueConstraint("budget", "scope_key", "period_start", "kind", "fraction"),
    Index(None, "ts"),
    Index(None, "org_id", "ts"),
)

#: every config the gateway has run, or been asked to run (see modelyard.management)
config_revisions = Table(
    "config_revisions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("parent_id", Integer, nullable=True),
    #: file, api, rollback, discovery or env
    Column("source", String(16), nullable=False),
    #: "master", a key id, or "file"
    Column("actor", String(200), nullable=False),
    Column("message", Text, nullable=False, server_default=""),
    Column("created_at", UtcDateTime, nullable=False),
    #: sha256 of the canonical JSON of ``document``
    Column("content_hash", String(64), nullable=False, index=True),
    #: the whole validated document; secrets only as ${VAR} or credential:NAME references
    Column("document", JSON, nullable=False),
    Index(None, "source", "id"),
)

#: append-only: one row per change made through the admin API or the config file
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", UtcDateTime, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("org_id", String(_ID), nullable=True),
    #: e.g. config.deploy, route.switch, key.create, credential.put
    Column("action", String(64), nullable=False),
    #: what changed: "route:chat", "key:key_abc", "config"
    Column("target", String(300), nullable=False),
    #: the change as before/after values, secrets masked
    Column("before", JSON, nullable=True),
    Column("after", JSON, nullable=True),
    Column("revision_id", Integer, nullable=True),
    Column("request_id", String(_ID), nullable=True),
    Column("client", String(100), nullable=True),
    Index(None, "ts"),
    Index(None, "org_id", "ts"),
    Index(None, "target", "ts"),
)

#: Responses API answers kept for previous_response_id, GET and DELETE (store: true)
stored_responses = Table(
    "stored_responses",
    metadata,
    Column("id", String(_ID), primary_key=True),
    #: the organisation that made it ("" without one); another organisation cannot read it
    Column("org_id", String(_ID), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False, index=True),
    #: the input items of every turn up to this one and its output items
    Column("conversation", JSON, nullable=False),
    #: the response object as the client got it
    Column("response", JSON, nullable=False),
)

#: comparison runs (modelyard.compare): what was asked, how far it got, and its result (figures,
#: summary, recommendations, samples); scoped to the organisation that ran it ("" without one)
comparisons = Table(
    "comparisons",
    metadata,
    Column("id", String(_ID), primary_key=True),
    Column("org_id", String(_ID), nullable=False),
    Column("name", String(200), nullable=True),
    #: queued, running, done, stopped (cost cap), cancelled, failed
    Column("status", String(16), nullable=False),
    Column("created_at", UtcDateTime, nullable=False, index=True),
    Column("finished_at", UtcDateTime, nullable=True),
    Column("created_by", String(_ID), nullable=False),
    Column("spent_usd", Double, nullable=False, server_default=text("0")),
    Column("spec", JSON, nullable=False),
    Column("result", JSON, nullable=True),
)
