"""Persistence: the database connection, schema and migrations, and the stores built on them."""

from __future__ import annotations

from modelyard.storage.db import Database, async_url
from modelyard.storage.migrate import current_revision, head_revision, migrate

__all__ = ["Database", "async_url", "current_revision", "head_revision", "migrate"]
