"""Alembic environment: always online, on the connection ``gpushop.store.migrate`` passes in.

Run through :func:`gpushop.store.migrate.upgrade`; for a new revision during development::

    python -c "from alembic import command; from gpushop.store.migrate import alembic_config; \
command.revision(alembic_config(), 'message', rev_id='0002')"

and write its ``upgrade`` by hand (compare with ``schema.py``; the store's tests check they agree).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from gpushop.store.schema import Base

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("run migrations through gpushop.store.migrate, which passes a connection")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,  # SQLite cannot ALTER most things: later revisions use batch mode
    transactional_ddl=True,  # true on SQLite too: the store's engine emits BEGIN itself
)
with context.begin_transaction():
    context.run_migrations()
