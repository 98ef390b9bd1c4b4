"""Alembic environment, for the ``alembic`` command line.

modelyard itself does not go through this file: :func:`modelyard.storage.migrate.migrate` sets up
the same environment in code (with a connection from the running engine).  Both call
:func:`modelyard.storage.migrate.run_in_context`, so the two paths cannot drift apart.

Command-line use, with an ini file holding ``[alembic]`` ``script_location = modelyard.storage:migrations``
and a URL with a synchronous driver (``sqlite:///x.db``, ``postgresql+psycopg://...``)::

    alembic -c alembic.ini -x url=sqlite:///./modelyard.db current
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from modelyard.storage.migrate import run_in_context

url = context.get_x_argument(as_dictionary=True).get("url") or context.config.get_main_option("sqlalchemy.url")
if not url:
    raise SystemExit("set the database URL: alembic -x url=... or sqlalchemy.url in the ini file")
engine = create_engine(url)
try:
    with engine.begin() as connection:
        run_in_context(context, connection)
finally:
    engine.dispose()
