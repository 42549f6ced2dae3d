"""Shared fixtures: the Vast.ai emulator over real HTTP, and an isolated environment per test.

Tests run in parallel (pytest-xdist, `make test`), so nothing a test writes may be shared: files go
under its tmp_path/HOME, ports are picked free, a PostgreSQL store gets a fresh schema (`pg_url`),
and the session-scoped servers below are one per worker process."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from gpushop.emulator import EmulatorConfig, EmulatorThread

# Read before the autouse fixture clears VASTAI_*: `make test` points this at the official CLI.
VASTAI_CLI = os.environ.get("VASTAI_CLI")

ISOLATED_PREFIXES = ("VASTAI_", "VAST_", "TENSORDOCK_", "GPUSHOP_")

# DESIGN.md "Services": PostgreSQL on 127.0.0.1:5432, trust auth, database `test`.
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
_pg_error: str | None = None
_pg_checked = False


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """No provider credentials from the developer's shell, and a private HOME/XDG tree."""
    for name in list(os.environ):
        if name.startswith(ISOLATED_PREFIXES):
            monkeypatch.delenv(name, raising=False)
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    for var, sub in (
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_CACHE_HOME", ".cache"),
        ("XDG_DATA_HOME", ".local/share"),
    ):
        path = home / sub
        path.mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(var, str(path))
    return home


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[EmulatorThread]:
    """One emulator for the whole session: 600 offers, seed 1234, no rate limits, fast clock."""
    config = EmulatorConfig(offers=600, seed=1234, rate_limit=False, speed=1000.0)
    with EmulatorThread(config) as server:
        yield server


@pytest.fixture
def emulator(emulator_server: EmulatorThread, monkeypatch: pytest.MonkeyPatch) -> EmulatorThread:
    """The session emulator, reset to its seeded initial state for this test. It has no rate
    limits, so the gpushop CLIs a test runs against it do not pace their calls either
    (GPUSHOP_RATE_LIMIT=false); pacing is tested against `make_emulator(rate_limit=True)`."""
    emulator_server.control.reset()
    monkeypatch.setenv("GPUSHOP_RATE_LIMIT", "false")
    return emulator_server


@pytest.fixture
def make_emulator() -> Iterator[Callable[..., EmulatorThread]]:
    """Factory for a dedicated emulator (rate limits on, other seeds, big markets); all are
    stopped when the test ends."""
    started: list[EmulatorThread] = []

    def make(**fields: Any) -> EmulatorThread:
        server = EmulatorThread(EmulatorConfig(**fields)).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def vastai_cli() -> str:
    """Path of the official `vastai` CLI (1.9.1); in CI a missing CLI fails, never skips."""
    path = VASTAI_CLI or str(Path(__file__).resolve().parents[1] / ".venv-vastai/bin/vastai")
    if not Path(path).exists():
        if os.environ.get("CI"):
            pytest.fail(f"the official vastai CLI is missing at {path}: run `make vastai-cli`")
        pytest.skip("official vastai CLI not installed (make vastai-cli; set VASTAI_CLI)")
    return path


@pytest.fixture(scope="session")
def openssh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Debian's OpenSSH sshd on a free 127.0.0.1 port, with a temporary host key, config and
    authorized client key (tests/openssh_server.py), one for the session; logins as the current
    user. Use `await openssh_server.connect()` (asyncssh, host key checked),
    `openssh_server.endpoint()` (for scp/rsync), `.host`, `.port`, `.user`, `.key_path`,
    `.host_key`. A missing sshd fails in CI (CI=true) and skips locally."""
    import openssh_server

    if not openssh_server.available():
        message = f"{openssh_server.SSHD} missing: apt-get install openssh-server"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with openssh_server.running(tmp_path_factory.mktemp("sshd")) as server:
        yield server


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
    """A PostgreSQL store URL whose tables live in a fresh schema of the ``test`` database
    (selected with ``search_path`` in the URL), dropped afterwards: tests running at the same
    time never see each other's rows. A PostgreSQL that does not answer fails in CI."""
    _require_postgres()
    schema = f"gpushop_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


# DESIGN.md "Services": Redis on 127.0.0.1:6379, no password; tests share its database 0, so each
# test keeps to its own key prefix and deletes only its own keys (never FLUSHALL / FLUSHDB).
REDIS_URL = "redis://127.0.0.1:6379/0"


class RedisURL(str):
    """A Redis URL, and the key prefix this test alone uses (``.prefix``)."""

    prefix: str


@pytest.fixture
def redis_url() -> Iterator[RedisURL]:
    """The test Redis's URL with a key prefix of this test's own (``redis_url.prefix``); the
    keys under it are deleted afterwards (SCAN + DEL). A Redis that does not answer fails in CI
    (CI=true) and skips locally."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        client.close()
        message = f"Redis at 127.0.0.1:6379 does not answer ({exc}): see DESIGN.md, Services"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    url = RedisURL(REDIS_URL)
    url.prefix = f"gpushop-test:{uuid.uuid4().hex[:12]}:"
    try:
        yield url
    finally:
        try:
            keys = list(client.scan_iter(match=f"{url.prefix}*", count=500))
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])
        finally:
            client.close()
