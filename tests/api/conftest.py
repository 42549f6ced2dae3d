"""A real `gpushop serve` process per test (uvicorn on a free port) against the emulator."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from waiting import until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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

    def start(env: dict[str, str]) -> tuple[str, subprocess.Popen[str]]:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "gpushop", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(proc)
        url = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        until(answers, "gpushop serve to answer")
        return url, proc

    yield start
    for proc in started:
        proc.terminate()
        proc.communicate(timeout=30)
