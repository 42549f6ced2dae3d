"""A real SSH endpoint per running VM: `user@127.0.0.1 -p <external port forwarded to 22>`,
the key given at create, SFTP chrooted to the VM's sandbox, /workspace shared with commands,
nvidia-smi reporting the VM's GPUs, cloud-init run once at first boot."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import httpx
import pytest
from emulator_ssh import lasting
from tensordock_helpers import (
    RTX4090,
    body,
    connect,
    create_on,
    detail,
    new_key,
    node_with,
    run,
    ssh,
    td_client,
    wait_for,
)

from gpushop.emulator import EmulatorThread


@pytest.fixture
def td(emulator: EmulatorThread) -> Iterator[httpx.Client]:
    with td_client(emulator.tensordock_url, emulator.tensordock_token) as client:
        yield client


def gone(pid: int) -> bool:
    """Dead or a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def refused(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_ssh_sftp_exec_as_user(emulator: EmulatorThread, td: httpx.Client) -> None:
    key = new_key()
    node = node_with(td, RTX4090, 2)
    vm_id, port = create_on(
        td,
        key,
        node,
        RTX4090,
        2,
        resources={"storage_gb": 250},
        cloud_init={
            "runcmd": ["echo booted > /workspace/boot.txt", ["touch", "listed-form"]],
            "write_files": [
                {"path": "/workspace/conf/app.env", "content": "A=1\n", "permissions": "0600"},
                {"path": "/home/user/notes.txt", "content": "aGk=", "encoding": "b64"},
            ],
            "packages": ["curl"],
            "package_update": True,
        },
    )
    row = wait_for(td, vm_id, "running", ip=True)
    assert (row["ipAddress"], row["portForwards"][0]["external_port"]) == ("127.0.0.1", port)

    async def session() -> None:
        async with await connect(port, key) as conn:
            async with conn.start_sftp_client() as sftp:
                await sftp.makedirs("/workspace/in", exist_ok=True)
                async with sftp.open("/workspace/in/data.txt", "w") as f:
                    await f.write("payload")
            result = await conn.run("cat /workspace/in/data.txt; echo; whoami; echo $USER")
            assert result.stdout == "payload\nuser\nuser\n"
            smi = await conn.run("nvidia-smi -L")
            assert smi.stdout.count("NVIDIA GeForce RTX 4090") == 2
            query = await conn.run("nvidia-smi --query-gpu=memory.total --format=csv,noheader")
            assert query.stdout.splitlines() == ["24564 MiB", "24564 MiB"]
            wait = await conn.run("cloud-init status --wait")
            assert wait.exit_status == 0 and "status: done" in wait.stdout
            boot = await conn.run(
                "cat /workspace/boot.txt /workspace/conf/app.env notes.txt; ls listed-form; "
                "stat -c %a /workspace/conf/app.env; echo $EMULATOR_DISK_GB; "
                "sudo -n true && echo ok"
            )
            assert boot.stdout == "booted\nA=1\nhilisted-form\n600\n250\nok\n"
            log = await conn.run("cat /var/log/cloud-init-output.log; pwd")
            assert "packages not installed" in log.stdout and "finished at" in log.stdout
            assert log.stdout.endswith("/home/user\n")  # the login directory is HOME
            assert (await conn.run("exit 7")).exit_status == 7

    run(session())
    view = emulator.control.tensordock_vm(vm_id)
    assert view["ssh_listening"] and view["cloud_init"] == "done"
    assert (view["ssh_user"], view["ssh_port"]) == ("user", port)
    assert view["ssh_host_key"].startswith("ssh-ed25519 ")


def test_only_user_and_only_the_vm_key(td: httpx.Client) -> None:
    key = new_key()
    vm_id, port = create_on(td, key, node_with(td))
    wait_for(td, vm_id, "running", ip=True)

    async def attempts() -> None:
        with pytest.raises(asyncssh.PermissionDenied):
            await connect(port, key, user="root")
        with pytest.raises(asyncssh.PermissionDenied):
            await connect(port, new_key())
        async with await connect(port, key) as conn:
            assert (await conn.run("true")).exit_status == 0

    run(attempts())


def test_ssh_follows_the_life_cycle(emulator: EmulatorThread, td: httpx.Client) -> None:
    emulator.control.reset(speed=200.0)  # deploy 0.2 s
    key = new_key()
    vm_id, port = create_on(td, key, node_with(td))
    assert detail(td, vm_id)["ipAddress"] == "" and refused(port)  # booting
    wait_for(td, vm_id, "running", ip=True)
    assert ssh(port, key, "echo up").stdout == "up\n"
    ssh(port, key, "sleep infinity > /dev/null 2>&1 &")
    pids = lasting(lambda: emulator.control.tensordock_vm(vm_id), 1)
    td.post(f"/instances/{vm_id}/stop")
    assert refused(port)  # closed before the stop answered ...
    assert all(gone(p) for p in pids)  # ... and its processes are gone
    wait_for(td, vm_id, "stopped")
    td.post(f"/instances/{vm_id}/start")
    wait_for(td, vm_id, "running")
    assert ssh(port, key, "echo again").stdout == "again\n"  # SSH is back after a start
    sandbox = emulator.control.tensordock_vm(vm_id)["sandbox"]
    td.delete(f"/instances/{vm_id}")
    assert refused(port)
    assert not Path(sandbox).exists()


def test_no_forward_for_22_means_no_ssh(td: httpx.Client) -> None:
    node = node_with(td)
    payload = body(new_key(), hostnode_id=node["id"], resources={"gpus": {RTX4090: {"count": 1}}})
    vm_id = td.post("/instances", json=payload).json()["data"]["id"]
    assert wait_for(td, vm_id, "running", ip=True)["portForwards"] == []


def test_drop_ssh(emulator: EmulatorThread, td: httpx.Client) -> None:
    key = new_key()
    vm_id, port = create_on(td, key, node_with(td))
    wait_for(td, vm_id, "running", ip=True)

    async def go() -> None:
        async with await connect(port, key) as conn:
            process = await conn.create_process("sleep infinity")
            await asyncio.sleep(0.2)
            assert await asyncio.to_thread(emulator.control.tensordock_drop_ssh, vm_id) == 1
            await asyncio.wait_for(process.wait_closed(), 5)
        async with await connect(port, key) as again:  # new connections are accepted
            assert (await again.run("true")).exit_status == 0

    run(go())
