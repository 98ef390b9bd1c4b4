"""Migration revisions (loaded by alembic from their files, not imported as modules)."""
