"""A `gpushop serve` process on a free loopback port, for the tests and the benchmarks."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx

START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(env: dict[str, str], *args: str, **popen: object) -> tuple[str, subprocess.Popen[str]]:
    """(base URL, process) once its /healthz answers; fails if it dies or never answers.
    ``args``: more of `gpushop serve`'s options."""
    port = free_port()
    proc: subprocess.Popen[str] = subprocess.Popen(  # type: ignore[call-overload]
        [sys.executable, "-m", "gpushop", "serve", "--port", str(port), *args],
        env=env,
        text=True,
        **({"stdout": subprocess.PIPE, "stderr": subprocess.PIPE} | popen),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"gpushop serve ended: {proc.communicate()[1]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return url, proc
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("gpushop serve did not answer within 60 s")
        time.sleep(0.05)
