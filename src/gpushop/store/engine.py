"""Engines for the store: URL normalisation, SQLite pragmas, transaction begin modes.

The URL may carry a password: it is only ever shown through :func:`display_url`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy.pool import StaticPool

from gpushop.config import data_dir
from gpushop.store.locks import file_lock

SQLITE_BUSY_TIMEOUT_MS = 10_000
# Execution option read by the "begin" hook: writers take SQLite's write lock up front
# (BEGIN IMMEDIATE) so that a read-then-write transaction never fails half-way with
# SQLITE_BUSY_SNAPSHOT when another process wrote in between; it waits busy_timeout instead.
WRITE_OPTION = "gpushop_write"


def default_url() -> str:
    return f"sqlite:///{data_dir() / 'gpushop.db'}"


def normalise_url(url: str | None) -> URL:
    """``None`` -> the default SQLite file; ``postgresql://`` -> ``postgresql+psycopg://``."""
    parsed = make_url(url or default_url())
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ValueError(f"unsupported store backend {backend!r}: use sqlite or postgresql")
    return parsed


def display_url(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def sqlite_path(url: URL) -> Path | None:
    """The database file of a SQLite URL; None for an in-memory database."""
    database = url.database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    return Path(database).expanduser()


def make_engine(url: URL) -> Engine:
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    # pre_ping: a long-lived service outlives server restarts and idle-connection reaping.
    return create_engine(url, pool_pre_ping=True)


def _sqlite_engine(url: URL) -> Engine:
    path = sqlite_path(url)
    kwargs: dict[str, Any] = {}
    if path is None:
        # one shared connection, or every checkout would see its own empty database
        kwargs = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # We emit BEGIN ourselves (below): pysqlite's implicit transactions skip SELECT and DDL.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first: switching to WAL needs a lock that a concurrent opener may hold
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if path is not None:
                if _journal_mode(cursor) != "wal":
                    _switch_to_wal(cursor, path)
                # per connection, unlike the journal mode: safe with WAL, and much faster
                cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _journal_mode(cursor: Any) -> str:
    return str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower()


def _switch_to_wal(cursor: Any, path: Path) -> None:
    """WAL is persistent: set it once per database file, by one opener at a time.

    Switching takes a lock that busy_timeout does not cover: a second process switching a fresh
    file at the same moment (several gpushop processes opening a new store at once), or setting
    it again on every connect while a job writes, failed with "database is locked". So openers
    queue on a file lock beside the database, and each checks again once it holds it: the first
    switches, the others find WAL already set.
    """
    with file_lock(path.with_name(path.name + ".wal.lock"), wait=True, what="the WAL switch"):
        if _journal_mode(cursor) != "wal":
            cursor.execute("PRAGMA journal_mode = WAL")
