"""Bring a store's schema to head with Alembic, configured in code (no alembic.ini).

Safe when several processes open the same store at once: on SQLite the upgrade runs under a file
lock (and inside ``BEGIN IMMEDIATE``), on PostgreSQL under a transaction-level advisory lock, and
every process re-checks the version once it holds the lock. The common case (already at head)
costs one query and does not import Alembic.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, func, insert, select, text
from sqlalchemy.exc import OperationalError, ProgrammingError

from gpushop.store.engine import WRITE_OPTION, sqlite_path
from gpushop.store.locks import advisory_key, file_lock
from gpushop.store.schema import MetaRow

if TYPE_CHECKING:
    from alembic.config import Config

HEAD = "0008"  # the newest revision in migrations/versions (a test keeps the two in step)
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
DEPLOYMENT_ID = "deployment_id"
_ALPHABET = string.ascii_lowercase + string.digits


def new_deployment_id() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(6))


def alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _current(conn: Connection) -> tuple[str | None, str | None]:
    """(schema version, deployment id), or Nones when the tables do not exist yet."""
    try:
        # a savepoint: on PostgreSQL a failed statement would abort the enclosing transaction
        with conn.begin_nested():
            version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            dep = conn.execute(select(MetaRow.value).where(MetaRow.key == DEPLOYMENT_ID)).scalar()
    except (OperationalError, ProgrammingError):
        return None, None
    return version, dep


@contextmanager
def _serialised(engine: Engine) -> Iterator[Connection]:
    """A connection in a write transaction that no other opener of this store runs alongside."""
    url = engine.url
    if url.get_backend_name() == "sqlite":
        path = sqlite_path(url)
        lock = (
            nullcontext()
            if path is None
            else file_lock(path.with_name(path.name + ".migrate.lock"), wait=True, what="migration")
        )
        with lock, engine.execution_options(**{WRITE_OPTION: True}).begin() as conn:
            yield conn
    else:
        with engine.begin() as conn:
            conn.execute(select(func.pg_advisory_xact_lock(advisory_key("migrate"))))
            yield conn


def upgrade(engine: Engine) -> str:
    """Migrate to head if needed and return the store's deployment id (made on first open)."""
    with engine.connect() as conn:
        version, dep = _current(conn)
    if version == HEAD and dep:
        return dep
    from alembic import command

    with _serialised(engine) as conn:
        version, dep = _current(conn)
        if version != HEAD:
            command.upgrade(alembic_config(conn), "head")
        if not dep:
            dep = new_deployment_id()
            now = datetime.now(UTC).isoformat()
            conn.execute(
                insert(MetaRow),
                [{"key": DEPLOYMENT_ID, "value": dep}, {"key": "created_at", "value": now}],
            )
        return dep
