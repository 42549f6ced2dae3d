"""SFTP and commands agree on every path (both run inside the instance's sandbox), and every
image has `python` and the usual tools; without sandboxes there is no SSH at all."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import asyncssh
import httpx
import pytest
from emulator_ssh import (
    cheapest,
    connect,
    create,
    new_key,
    register,
    run,
    ssh_run,
    wait_status,
)

from gpushop.emulator import EmulatorThread, isolation


@pytest.fixture
def instant(emulator: EmulatorThread) -> EmulatorThread:
    emulator.control.reset(provision_delay_s=0.0, loading_delay_s=0.0)
    return emulator


@pytest.fixture
def key() -> asyncssh.SSHKey:
    return new_key()


def running(client: httpx.Client, **body: Any) -> tuple[int, int]:
    instance_id = create(client, cheapest(client)["id"], **body)  # a rented offer leaves search
    return instance_id, int(wait_status(client, instance_id, "running")["ssh_port"])


def put(port: int, key: asyncssh.SSHKey, files: dict[str, bytes], tmp: Path) -> None:
    async def go() -> None:
        async with await connect(port, key) as conn, conn.start_sftp_client() as sftp:
            for remote, data in files.items():
                local = tmp / Path(remote).name
                local.write_bytes(data)
                await sftp.put(str(local), remote)

    run(go())


def test_sftp_and_commands_share_workspace_and_app(
    instant: EmulatorThread, client: httpx.Client, key: asyncssh.SSHKey, tmp_path: Path
) -> None:
    register(client, key)
    first, port = running(client)
    put(port, key, {"/workspace/a.txt": b"alpha\n", "/app/b.txt": b"bravo\n"}, tmp_path)
    assert ssh_run(port, key, "cat /workspace/a.txt").stdout == "alpha\n"
    assert "b.txt" in ssh_run(port, key, "ls /app").stdout.split()
    # and back: what a command writes under /workspace, SFTP reads at the same path
    ssh_run(port, key, "echo from-a-command > /workspace/c.txt; cd /workspace && pwd")

    async def get() -> bytes:
        async with (
            await connect(port, key) as conn,
            conn.start_sftp_client() as sftp,
            sftp.open("/workspace/c.txt", "rb") as f,
        ):
            data: bytes = await f.read()
            return data

    assert run(get()) == b"from-a-command\n"
    # relative paths start at HOME (/root) for both, and /tmp is the instance's, for both
    put(port, key, {"rel.txt": b"relative\n", "/tmp/t.txt": b"tmp\n"}, tmp_path)
    assert ssh_run(port, key, "cat /root/rel.txt /tmp/t.txt").stdout == "relative\ntmp\n"
    sandbox = Path(instant.control.instance(first)["sandbox"])
    assert (sandbox / "workspace" / "c.txt").read_text() == "from-a-command\n"
    assert (sandbox / "root" / "rel.txt").read_text() == "relative\n"
    assert not Path("/workspace/a.txt").exists()  # nothing lands on the host

    second, port2 = running(client)
    assert second != first
    put(port2, key, {"/workspace/a.txt": b"second\n"}, tmp_path)
    assert ssh_run(port2, key, "cat /workspace/a.txt; ls /app").stdout == "second\n"
    assert ssh_run(port, key, "cat /workspace/a.txt").stdout == "alpha\n"


def test_python_and_tools_in_any_image(
    instant: EmulatorThread, client: httpx.Client, key: asyncssh.SSHKey
) -> None:
    register(client, key)
    _, port = running(client, image="ubuntu:22.04")
    result = ssh_run(port, key, "python -c 'print(6 * 7)'; python3 -c 'import json; print(1)'")
    assert result.stdout == "42\n1\n", result.stderr
    tools = "sha256sum find tail setsid nohup timeout"
    found = ssh_run(port, key, f"for t in {tools}; do command -v $t >/dev/null || echo no $t; done")
    assert found.stdout == ""
    path = ssh_run(port, key, "echo $PATH").stdout.strip().split(":")
    assert {"/usr/bin", "/bin"} <= set(path)


def test_without_sandboxes_one_line_then_no_ssh_at_all(
    make_emulator: Any,
    key: asyncssh.SSHKey,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(isolation, "_probed", [(None, "unshare not installed (util-linux)")])
    monkeypatch.setattr("gpushop.emulator.app._warned", [])
    with caplog.at_level(logging.WARNING, logger="gpushop.emulator"):
        emu = make_emulator(offers=20, rate_limit=False, provision_delay_s=0, loading_delay_s=0)
        make_emulator(offers=20, rate_limit=False)
    lines = [r.getMessage() for r in caplog.records if "no sandboxes" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "unshare not installed" in lines[0] and "ssh=False" in lines[0]
    assert emu.control.state()["config"]["ssh"] is False
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    with httpx.Client(base_url=emu.url, headers=headers, timeout=10) as client:
        register(client, key)
        _, port = running(client)  # it runs, but nothing listens: never half isolated
        with pytest.raises(OSError):
            ssh_run(port, key, "true")
