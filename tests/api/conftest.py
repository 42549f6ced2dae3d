"""A real `gpushop serve` process per test (uvicorn on a free port) against the emulator."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import serve_process
from cli_run import cli
from serve_process import free_port

__all__ = ["free_port", "token"]


@pytest.fixture(params=["sqlite"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """The store the service runs on: SQLite here; a module that must also hold on PostgreSQL
    overrides it with ``params=["sqlite", "postgresql"]``."""
    return str(request.param)


@pytest.fixture
def environment(
    emulator: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    store_kind: str,
    request: pytest.FixtureRequest,
) -> dict[str, str]:
    """The service's environment; also this process's, so that in-process CLI calls
    (`gpushop users add`) use the same store."""
    db_url = (
        str(request.getfixturevalue("pg_url"))
        if store_kind == "postgresql"
        else f"sqlite:///{tmp_path / 'store.db'}"
    )
    values = {
        "VASTAI_URL": emulator.url,
        "VASTAI_API_KEY": emulator.api_key,
        "GPUSHOP_CACHE_DIR": str(tmp_path / "cache"),
        "GPUSHOP_DATA_DIR": str(tmp_path / "data"),
        "GPUSHOP_CONFIG_DIR": str(tmp_path / "config"),
        "GPUSHOP_DB_URL": db_url,
        "GPUSHOP_RATE_LIMIT": "false",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return {**os.environ, **values}


@pytest.fixture
def serve() -> Iterator[Callable[..., tuple[str, subprocess.Popen[str]]]]:
    """Start `gpushop serve` with an environment; (base URL, process) once it answers."""
    started: list[subprocess.Popen[str]] = []

    def start(env: dict[str, str], *args: str) -> tuple[str, subprocess.Popen[str]]:
        url, proc = serve_process.start(env, *args)
        started.append(proc)
        return url, proc

    yield start
    for proc in started:
        proc.terminate()
        proc.communicate(timeout=30)


def token(capsys: Any, *argv: str) -> dict[str, str]:
    """The Authorization header of a user `gpushop users add ARGV...` makes."""
    code, out, err = cli(capsys, "users", "add", *argv)
    assert code == 0, err
    return {"Authorization": f"Bearer {out.strip()}"}
