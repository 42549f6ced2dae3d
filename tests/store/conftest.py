"""Store fixtures: every store test runs on SQLite (a temporary file) and on PostgreSQL (a fresh
schema per test: ``pg_url`` in tests/conftest.py)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gpushop.store import Store

T0 = datetime(2025, 3, 31, 22, 0, tzinfo=UTC)


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
