"""The on-instance watchdog stops its own instance, whatever the API says at first, and nothing
else; a moved deadline keeps the instance running. Each runs `gpushop up`, which returns: no
gpushop process is left to help."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cli_run import cli

SENTINEL = """
import signal, sys, time
got = []
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2,
          signal.SIGQUIT, signal.SIGALRM):
    signal.signal(s, lambda n, f: got.append(n) or open(sys.argv[1], "a").write(f"{n}\\n"))
print("ready", flush=True)
time.sleep(600)
"""


@pytest.fixture
def env(emulator: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    emulator.control.reset(provision_delay_s=0.0, loading_delay_s=0.0)
    monkeypatch.setenv("VASTAI_URL", emulator.url)
    monkeypatch.setenv("VASTAI_API_KEY", emulator.api_key)
    monkeypatch.setenv("GPUSHOP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GPUSHOP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GPUSHOP_DB_URL", f"sqlite:///{tmp_path / 'store.db'}")
    return emulator


def up(capsys: Any, *extra: str) -> dict[str, Any]:
    code, out, err = cli(capsys, "up", "--min-vram", "24", "--json", *extra)
    assert code == 0, err
    return dict(json.loads(out))


def shown(env: Any, iid: int) -> dict[str, Any]:
    return dict(next(i for i in env.control.state()["instances"] if i["id"] == iid))


def until(check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def stop_calls(env: Any, iid: int) -> list[int]:
    return [
        r["status"]
        for r in env.control.requests()
        if r["method"] == "PUT" and r["path"] == f"/api/v0/instances/{iid}/"
    ]


def test_a_burst_of_503s_on_the_stop_ends_with_the_instance_stopped(
    env: Any, capsys: Any, tmp_path: Path
) -> None:
    received = tmp_path / "signals"
    sentinel = subprocess.Popen(
        [sys.executable, "-c", SENTINEL, str(received)], stdout=subprocess.PIPE, text=True
    )
    assert sentinel.stdout is not None and sentinel.stdout.readline() == "ready\n"
    # the stop endpoint fails six times in a row (the old watchdog tried once, then signalled)
    env.control.fault("PUT /api/v0/instances/{id}/", "status", status=503, count=6)
    try:
        rental = up(capsys, "--max-duration", "2s", "--watchdog-grace", "1s")
        iid = int(rental["instance_id"])
        sandbox = Path(env.control.instance(iid)["sandbox"])
        key = env.control.instance(iid)["env"]["CONTAINER_API_KEY"]
        # while it waits: the instance key is on no command line inside
        seen = subprocess.run(
            ["cat", *(f"/proc/{p}/cmdline" for p in env.control.instance(iid)["processes"])],
            capture_output=True,
        ).stdout
        assert b"watchdog.sh" in seen and key.encode() not in seen
        until(lambda: shown(env, iid)["intended_status"] == "stopped")
    finally:
        sentinel.send_signal(signal.SIGKILL)
        sentinel.wait()
        assert sentinel.stdout is not None
        sentinel.stdout.close()
    # the emulator logs a request once its answer is sent: after the state it set is visible
    until(lambda: len(stop_calls(env, iid)) == 7)
    assert stop_calls(env, iid) == [503] * 6 + [200]  # retried until the API said yes
    log = (sandbox / "workspace" / ".gpushop" / "watchdog.log").read_text()
    assert log.count("stop refused (503)") == 6  # (the stop it asked for then ended it)
    assert not received.exists()  # no process outside the instance got a signal
    code, out, _ = cli(capsys, "reconcile", "--json")  # the next reconcile deletes it
    assert code == 0 and [a["kind"] for a in json.loads(out)["actions"]] == ["expired"]


def test_a_429_waits_for_its_retry_after(env: Any, capsys: Any) -> None:
    env.control.reset(provision_delay_s=0.0, loading_delay_s=0.0, retry_after=True)
    env.control.fault("PUT /api/v0/instances/{id}/", "status", status=429, count=2)
    rental = up(capsys, "--max-duration", "1s", "--watchdog-grace", "1s")
    iid = int(rental["instance_id"])
    sandbox = Path(env.control.instance(iid)["sandbox"])
    until(lambda: shown(env, iid)["intended_status"] == "stopped")
    until(lambda: len(stop_calls(env, iid)) == 3)  # logged after its answer (see above)
    assert stop_calls(env, iid) == [429, 429, 200]
    log = (sandbox / "workspace" / ".gpushop" / "watchdog.log").read_text()
    assert log.count("stop refused (429)") == 2


def test_a_moved_deadline_keeps_the_instance_running(env: Any, capsys: Any) -> None:
    rental = up(capsys, "--max-duration", "4s", "--watchdog-grace", "1s")
    iid = int(rental["instance_id"])
    first_deadline = time.time() + 5
    code, out, err = cli(capsys, "extend", rental["rental_id"], "--max-duration", "2h", "--json")
    assert code == 0, err
    moved = json.loads(out)
    assert moved["max_duration_s"] == 7200 and moved["watchdog_deadline"] > time.time() + 3600
    log = Path(env.control.instance(iid)["sandbox"]) / "workspace" / ".gpushop" / "watchdog.log"
    until(lambda: f"deadline {int(moved['watchdog_deadline'])}" in log.read_text())
    until(lambda: time.time() > first_deadline + 1.0, timeout=10)  # the old deadline is past
    assert shown(env, iid)["intended_status"] == "running"
    assert stop_calls(env, iid) == []
    code, out, _ = cli(capsys, "reconcile", "--json")  # and reconcile agrees: not expired
    assert code == 0 and json.loads(out)["actions"] == []
    assert cli(capsys, "down", rental["rental_id"])[0] == 0


def test_a_start_script_too_long_for_vast_is_refused_before_any_create(
    env: Any, capsys: Any
) -> None:
    code, _, err = cli(capsys, "up", "--min-vram", "24", "--onstart", "echo x; " * 300)
    assert code == 1 and "at most 4048" in err and "Traceback" not in err
    assert env.control.state()["instances"] == []
    assert env.control.request_count("PUT /api/v0/asks/{id}/") == 0
