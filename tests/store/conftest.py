"""Store fixtures: every store test runs on SQLite (a temporary file) and on PostgreSQL (a fresh
schema per test in the ``test`` database, selected with ``search_path`` in the URL)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from gpushop.store import Store

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
T0 = datetime(2025, 3, 31, 22, 0, tzinfo=UTC)

_pg_error: str | None = None
_pg_checked = False


def _require_postgres() -> None:
    global _pg_checked, _pg_error
    if not _pg_checked:
        _pg_checked = True
        try:
            psycopg.connect(PG_DSN, connect_timeout=3).close()
        except psycopg.Error as exc:
            _pg_error = f"PostgreSQL at 127.0.0.1:5432 does not answer: {exc}".strip()
    if _pg_error:
        if os.environ.get("CI"):
            pytest.fail(_pg_error)
        pytest.skip(_pg_error)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL store URL whose tables live in a fresh schema, dropped afterwards."""
    _require_postgres()
    schema = f"gpushop_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    # a directory that does not exist yet: the store creates it
    return f"sqlite:///{tmp_path / 'data' / 'gpushop.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> str:
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


class Clock:
    """A settable clock for the store: ``clock.at(minutes)`` moves to T0 + minutes."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def at(self, minutes: float) -> datetime:
        self.now = T0 + timedelta(minutes=minutes)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(store_url: str, clock: Clock) -> Iterator[Store]:
    s = Store.open(store_url, clock=clock)
    try:
        yield s
    finally:
        s.close()


def python(script: str, *args: str) -> subprocess.Popen[str]:
    """Run ``script`` in a separate Python process (the project's interpreter)."""
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
