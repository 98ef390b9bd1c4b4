"""Config revisions and the audit log (the management plane).

- ``config_revisions``: every config the gateway has run (file imports, API changes, rollbacks),
  with its parent, source, actor, message, content hash and the whole document (secrets only as
  references); the active one is the ``settings`` row ``config.active_revision``;
- ``audit_log``: one append-only row per change, with actor, action, target, before/after values,
  the revision it made, the request id and the client address.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

TS = sa.DateTime(timezone=True)

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "config_revisions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("parent_id", sa.Integer, nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("message", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("document", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_config_revisions"),
    )
    op.create_index("ix_config_revisions_content_hash", "config_revisions", ["content_hash"])
    op.create_index("ix_config_revisions_source_id", "config_revisions", ["source", "id"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ts", TS, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("org_id", sa.String(64), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(300), nullable=False),
        sa.Column("before", sa.JSON, nullable=True),
        sa.Column("after", sa.JSON, nullable=True),
        sa.Column("revision_id", sa.Integer, nullable=True),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("client", sa.String(100), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_ts", "audit_log", ["ts"])
    op.create_index("ix_audit_log_org_id_ts", "audit_log", ["org_id", "ts"])
    op.create_index("ix_audit_log_target_ts", "audit_log", ["target", "ts"])


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_table("config_revisions")
