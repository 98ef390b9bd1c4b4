"""Key rate limits as 64-bit integers: ``api_keys.rpm`` and ``api_keys.tpm``.

The admin API accepts limits up to 10^12 (a large ``tpm`` is how people say "no token limit"), but the
columns were 32-bit on PostgreSQL, so a key with ``tpm: 10000000000`` was a 500 there (SQLite stores
any integer in 64 bits). ``api_keys`` is referenced by no foreign key, so SQLite's table copy is safe.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.alter_column("rpm", type_=sa.BigInteger(), existing_type=sa.Integer(), existing_nullable=True)
        batch.alter_column("tpm", type_=sa.BigInteger(), existing_type=sa.Integer(), existing_nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.alter_column("tpm", type_=sa.Integer(), existing_type=sa.BigInteger(), existing_nullable=True)
        batch.alter_column("rpm", type_=sa.Integer(), existing_type=sa.BigInteger(), existing_nullable=True)
