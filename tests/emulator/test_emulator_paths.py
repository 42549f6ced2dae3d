"""SFTP and commands agree on /workspace and /app (the sandbox's, in a private mount namespace),
and every image has `python` and the usual tools."""

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
    pid_gone,
    register,
    run,
    ssh_run,
    wait_status,
    wait_until,
)

from gpushop.emulator import EmulatorThread, mountns


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


needs_namespaces = pytest.mark.skipif(
    mountns.tools() is None, reason="no mount namespaces here (not root, no user namespaces)"
)


@needs_namespaces
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
    # relative paths from the login directory are the sandbox's too
    assert ssh_run(port, key, "cat workspace/a.txt").stdout == "alpha\n"
    sandbox = Path(instant.control.instance(first)["sandbox"])
    assert (sandbox / "workspace" / "c.txt").read_text() == "from-a-command\n"
    assert not Path("/workspace/a.txt").exists()  # nothing lands on the host's mount point

    second, port2 = running(client)
    assert second != first
    put(port2, key, {"/workspace/a.txt": b"second\n"}, tmp_path)
    assert ssh_run(port2, key, "cat /workspace/a.txt; ls /app").stdout == "second\n"
    assert ssh_run(port, key, "cat /workspace/a.txt").stdout == "alpha\n"


@needs_namespaces
def test_processes_in_the_namespace_are_still_tracked_and_killed(
    instant: EmulatorThread, client: httpx.Client, key: asyncssh.SSHKey
) -> None:
    register(client, key)
    instance_id, port = running(client)
    started = ssh_run(
        port, key, "cd /workspace && (setsid sleep 300 >/dev/null 2>&1 & echo $!)"
    ).stdout
    pid = int(started)
    assert Path(f"/proc/{pid}").exists()
    client.delete(f"/api/v0/instances/{instance_id}/")
    assert wait_until(lambda: pid_gone(pid), timeout=2.0)


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


def test_without_namespaces_one_warning_then_commands_run_as_before(
    make_emulator: Any,
    key: asyncssh.SSHKey,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(mountns, "_probed", [])
    monkeypatch.setattr(mountns, "_probe", lambda: (None, "not root and no user namespaces"))
    with caplog.at_level(logging.WARNING, logger="gpushop.emulator"):
        emu = make_emulator(offers=20, rate_limit=False, provision_delay_s=0, loading_delay_s=0)
        make_emulator(offers=20, rate_limit=False)
    warnings = [r for r in caplog.records if "no mount namespaces" in r.getMessage()]
    assert len(warnings) == 1 and "not root and no user namespaces" in warnings[0].getMessage()
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    with httpx.Client(base_url=emu.url, headers=headers, timeout=10) as client:
        register(client, key)
        instance_id, port = running(client)
        sandbox = emu.control.instance(instance_id)["sandbox"]
        result = ssh_run(port, key, 'pwd; echo x > "$WORKSPACE/y"; cat workspace/y')
        assert result.stdout == f"{sandbox}\nx\n"
