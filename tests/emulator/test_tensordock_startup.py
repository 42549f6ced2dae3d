"""Start-up of the emulator with its TensorDock side: the four KEY=VALUE lines, in order and
flushed, then both APIs on the one port; EmulatorThread's TensorDock attributes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx

from gpushop.emulator import EmulatorConfig, EmulatorThread


def test_python_m_prints_four_lines_then_serves_both_apis() -> None:
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
            "20",
            "--tensordock-token",
            "td-secret",
            "--no-ssh",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().strip() for _ in range(4)]
        names = [line.split("=", 1)[0] for line in lines]
        assert names == ["VASTAI_URL", "VASTAI_API_KEY", "TENSORDOCK_URL", "TENSORDOCK_API_TOKEN"]
        values = dict(line.split("=", 1) for line in lines)
        vast, td = values["VASTAI_URL"], values["TENSORDOCK_URL"]
        assert td == vast + "/tensordock/api/v2"
        assert values["TENSORDOCK_API_TOKEN"] == "td-secret"
        headers = {"Authorization": "Bearer td-secret"}
        nodes = httpx.get(td + "/hostnodes", headers=headers, timeout=10)
        assert nodes.status_code == 200 and nodes.json()["data"]["hostnodes"]
        assert httpx.get(vast + "/api/v0/gpu_names/unique/", timeout=10).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert out == ""  # nothing else on stdout
    assert "Traceback" not in err


def test_emulator_thread_attributes() -> None:
    config = EmulatorConfig(offers=10, rate_limit=False, ssh=False, tensordock_token="tok-S3cret")
    with EmulatorThread(config) as emu:
        assert emu.tensordock_url == emu.url + "/tensordock/api/v2"
        assert emu.tensordock_token == "tok-S3cret"
        state = emu.control.tensordock_state()
        assert state["balance"] == 100.0 and state["vms"] == []
        assert state["config"]["tensordock_list_shape"] == "instances"
        assert "S3cret" not in repr(state) and "S3cret" not in repr(emu.control.state())
