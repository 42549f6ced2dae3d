"""The start-up contract of `python -m gpushop.emulator` (same code path as `gpushop emulator`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest


@pytest.fixture
def process() -> Iterator[subprocess.Popen[str]]:
    env = {**os.environ, "PYTHONUNBUFFERED": "0"}  # the lines must be flushed explicitly
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gpushop.emulator",
            "--port",
            "0",
            "--no-rate-limit",
            "--offers",
            "50",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)
    for stream in (proc.stdout, proc.stderr):
        if stream:
            stream.close()


def read_startup(proc: subprocess.Popen[str]) -> dict[str, str]:
    assert proc.stdout is not None
    lines = [proc.stdout.readline().strip() for _ in range(4)]
    assert lines[0].startswith("VASTAI_URL=http://127.0.0.1:")
    assert lines[1] == "VASTAI_API_KEY=emulator"
    assert lines[2].startswith(
        "TENSORDOCK_URL=http://127.0.0.1:"
    )  # tests/emulator/test_tensordock_startup.py
    assert lines[3].startswith("TENSORDOCK_API_TOKEN=")
    return dict(line.split("=", 1) for line in lines)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_prints_url_and_key_first_then_serves_then_stops_cleanly(
    process: subprocess.Popen[str], sig: signal.Signals
) -> None:
    env = read_startup(process)
    url = env["VASTAI_URL"]
    response = httpx.get(f"{url}/api/v0/gpu_names/unique/", timeout=10)
    assert response.status_code == 200
    search = httpx.post(
        f"{url}/api/v0/bundles/",
        json={"limit": 3},
        headers={"Authorization": f"Bearer {env['VASTAI_API_KEY']}"},
        timeout=10,
    )
    assert len(search.json()["offers"]) == 3
    process.send_signal(sig)
    out, err = process.communicate(timeout=10)
    assert process.returncode == 0
    assert out == ""  # nothing else on stdout: logs go to stderr
    assert "Traceback" not in err


def test_too_many_offers_is_a_clear_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gpushop.emulator", "--offers", "20001"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "offers must be between 0 and 20000" in result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
