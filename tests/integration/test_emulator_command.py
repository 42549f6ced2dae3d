"""`gpushop emulator`: the start-up contract of DESIGN.md, through the installed console script."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx


def gpushop() -> str:
    return shutil.which("gpushop", path=str(Path(sys.executable).parent)) or "gpushop"


def test_prints_url_and_key_first_then_serves_and_stops_cleanly() -> None:
    proc = subprocess.Popen(
        [
            gpushop(),
            "emulator",
            "--port",
            "0",
            "--no-rate-limit",
            "--api-key",
            "k-123",
            "--offers",
            "50",
            "--seed",
            "3",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        second = proc.stdout.readline().strip()
        assert first.startswith("VASTAI_URL=http://127.0.0.1:")
        assert second == "VASTAI_API_KEY=k-123"
        url = first.split("=", 1)[1]
        offers = httpx.post(f"{url}/api/v0/bundles/", json={"limit": 100}, timeout=10)
        assert offers.headers["content-type"] == "application/json"
        assert len(offers.json()["offers"]) == 50
        user = httpx.get(f"{url}/api/v0/users/current", headers={"Authorization": "Bearer k-123"})
        assert user.status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "Traceback" not in err


def test_bad_options_are_usage_errors() -> None:
    for argv in (["--offers", "20001"], ["--speed", "0"], ["--port", "70000"]):
        proc = subprocess.run(
            [gpushop(), "emulator", *argv], capture_output=True, text=True, timeout=30
        )
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
