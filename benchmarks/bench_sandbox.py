"""What an emulated instance's sandbox costs: starting one, and one command in it.

- Start: an instance's PID 1 and namespaces (unshare, the init's mounts, its `ready`), median of
  10, beside the baseline of starting the same Python with nothing to do.
- One command: `/bin/true` entered into the sandbox (nsenter + setpriv) against `/bin/true` run
  plainly, median of 200.
- One SSH exec: a connected asyncssh client running `true` on an emulated instance against the
  same on Debian's OpenSSH sshd (tests/openssh_server.py) on this machine, median of 100.

Run: .venv/bin/python benchmarks/bench_sandbox.py
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "emulator"))

from emulator_ssh import cheapest, connect, create, new_key, register, wait_status

import openssh_server
from gpushop.emulator import EmulatorConfig, EmulatorThread, isolation
from gpushop.emulator.sandbox import Sandbox


def _median_ms(fn: Any, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


async def _exec_ms(conn: Any, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        await conn.run("true", check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def run() -> dict[str, float]:
    iso = isolation.probe()
    if iso is None:
        raise SystemExit(f"no sandboxes here: {isolation.reason()}")
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        box = Sandbox(Path(tmp) / "C.bench", iso)
        box.prepare(None)

        def start() -> None:
            box.start_sync()
            box.kill_all()

        out["start_ms"] = _median_ms(start, 10)
        out["python_ms"] = _median_ms(
            lambda: subprocess.run([sys.executable, "-I", "-S", "-c", "pass"], check=True), 10
        )
        box.start_sync()
        argv, fds = box.wrap(["/bin/true"])
        out["command_ms"] = _median_ms(lambda: subprocess.run(argv, pass_fds=fds, check=True), 200)
        out["plain_ms"] = _median_ms(lambda: subprocess.run(["/bin/true"], check=True), 200)
        box.kill_all()

    config = EmulatorConfig(offers=50, seed=3, rate_limit=False, speed=1000.0)
    with EmulatorThread(config) as emu:
        emu.control.reset(provision_delay_s=0.0, loading_delay_s=0.0)
        key = new_key()
        headers = {"Authorization": f"Bearer {emu.api_key}"}
        with httpx.Client(base_url=emu.url, headers=headers) as client:
            register(client, key)
            iid = create(client, cheapest(client)["id"])
            port = int(wait_status(client, iid, "running")["ssh_port"])

        async def emulated() -> float:
            async with await connect(port, key) as conn:
                return await _exec_ms(conn, 100)

        out["ssh_emulated_ms"] = asyncio.run(emulated())
    if openssh_server.available():
        with tempfile.TemporaryDirectory() as tmp, openssh_server.running(Path(tmp)) as sshd:

            async def real() -> float:
                async with await sshd.connect() as conn:
                    return await _exec_ms(conn, 100)

            out["ssh_openssh_ms"] = asyncio.run(real())
    return out


def main() -> None:
    r = run()
    print("== emulated instance sandboxes (median)")
    print(
        f"   start PID 1 and namespaces:   {r['start_ms']:6.1f} ms"
        f"  (a bare `python -I -S`: {r['python_ms']:.1f} ms)"
    )
    print(
        f"   /bin/true inside (nsenter+setpriv): {r['command_ms']:5.2f} ms"
        f"  (plain: {r['plain_ms']:.2f} ms, +{r['command_ms'] - r['plain_ms']:.2f} ms)"
    )
    line = f"   SSH exec `true` on an instance: {r['ssh_emulated_ms']:6.2f} ms"
    if "ssh_openssh_ms" in r:
        ratio = r["ssh_emulated_ms"] / r["ssh_openssh_ms"]
        line += f"  (OpenSSH sshd: {r['ssh_openssh_ms']:.2f} ms, {ratio:.2f}x)"
    print(line)


if __name__ == "__main__":
    main()
