"""The SSH endpoint of running instances: real asyncssh clients against the emulator."""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import json
import os
import re
from pathlib import Path
from typing import Any

import asyncssh
import httpx
import pytest
from emulator_ssh import (
    all_gone,
    cheapest,
    connect,
    create,
    inside,
    lasting,
    new_key,
    public_text,
    register,
    run,
    show,
    ssh_run,
    wait_status,
    wait_until,
)

from gpushop.emulator import EmulatorThread

CLONE_NEWPID = 0x20000000


@pytest.fixture
def instant(emulator: EmulatorThread) -> EmulatorThread:
    """No provisioning or loading delay: instances run at once."""
    emulator.control.reset(provision_delay_s=0.0, loading_delay_s=0.0)
    return emulator


@pytest.fixture
def key() -> asyncssh.SSHKey:
    return new_key()


def running_instance(client: httpx.Client, **body: Any) -> tuple[int, dict[str, Any]]:
    offer = cheapest(client)
    instance_id = create(client, offer["id"], **body)
    return instance_id, wait_status(client, instance_id, "running")


def test_registered_key_runs_commands_with_exit_codes_and_stdin(
    instant: EmulatorThread, client: httpx.Client, key: asyncssh.SSHKey
) -> None:
    register(client, key)
    _instance_id, row = running_instance(client)
    port = int(row["ports"]["22/tcp"][0]["HostPort"])
    assert port == row["ssh_port"]  # direct and proxy addresses are the same endpoint

    async def go() -> None:
        async with await connect(port, key) as conn:
            echo = await conn.run("echo hello", check=False)
            assert (echo.exit_status, echo.stdout, echo.stderr) == (0, "hello\n", "")
            failed = await conn.run("echo oops >&2; exit 3", check=False)
            assert (failed.exit_status, failed.stderr) == (3, "oops\n")
            cat = await conn.run("cat; echo done", input="line1\nline2\n", check=False)
            assert cat.stdout == "line1\nline2\ndone\n"
            killed = await conn.run("kill -TERM $$", check=False)
            assert killed.exit_signal is not None and killed.exit_signal[0] == "TERM"

    run(go())


def test_environment_and_sandbox(
    instant: EmulatorThread, client: httpx.Client, key: asyncssh.SSHKey
) -> None:
    register(client, key)
    instance_id, row = running_instance(
        client, env={"HF_HOME": "/workspace/hf", "-p 8080:8080": "1"}, disk=24
    )
    view = instant.control.instance(instance_id)
    sandbox = view["sandbox"]
    result = ssh_run(row["ssh_port"], key, "env; echo CWD=$(pwd)")
    env = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert env["HF_HOME"] == "/workspace/hf"
    assert env["VAST_CONTAINERLABEL"] == f"C.{instance_id}"
    assert env["CONTAINER_ID"] == str(instance_id)
    assert env["HOME"] == "/root" and env["CWD"] == "/root"
    assert env["WORKSPACE"] == "/workspace" and Path(sandbox, "workspace").is_dir()
    assert env["PATH"].startswith("/.emulator/bin:")
    assert env["EMULATOR_DISK_GB"] == "24"
    assert env["VAST_TCP_PORT_8080"] == row["ports"]["8080/tcp"][0]["HostPort"]
    assert not any(k.startswith("-p") for k in env)
    assert "VASTAI_API_KEY" not in env  # the emulator's own environment does not leak in
    assert "EMULATOR_SANDBOX" not in env and sandbox not in result.stdout
    assert view["ssh_port"] == row["ssh_port"] and view["ssh_listening"] is True
    assert view["ssh_host_key"].startswith("ssh-ed25519 ")


def test_unregistered_key_is_refused_and_attach_detach_take_effect(
    instant: EmulatorThread, client: httpx.Client, key: asyncssh.SSHKey
) -> None:
    register(client, key)
    instance_id, row = running_instance(client)
    port = row["ssh_port"]
    stranger = new_key()
    with pytest.raises(asyncssh.PermissionDenied):
        ssh_run(port, stranger, "true")

    attached = client.post(
        f"/api/v0/instances/{instance_id}/ssh/", json={"ssh_key": public_text(stranger)}
    ).json()
    assert attached["success"] is True
    assert ssh_run(port, stranger, "echo in").stdout == "in\n"

    key_id = json.loads(attached["key"])["id"]
    detached = client.delete(f"/api/v0/instances/{instance_id}/ssh/{key_id}/").json()
    assert detached["success"] is True
    with pytest.raises(asyncssh.PermissionDenied):
        ssh_run(port, stranger, "true")
    assert ssh_run(port, key, "echo still").stdout == "still\n"  # the account key stays


def test_account_key_added_later_reaches_running_instances(
    instant: EmulatorThread, client: httpx.Client, key: asyncssh.SSHKey
) -> None:
    _, row = running_instance(client)
    with pytest.raises(asyncssh.PermissionDenied):
        ssh_run(row["ssh_port"], key, "true")
    register(client, key)  # OAPI: added to all current instances
    assert ssh_run(row["ssh_port"], key, "echo ok").stdout == "ok\n"


@pytest.mark.parametrize("sftp", ["auto", "builtin"])
def test_sftp_stays_inside_the_sandbox(
    instant: EmulatorThread, client: httpx.Client, key: asyncssh.SSHKey, tmp_path: Path, sftp: str
) -> None:
    """OpenSSH's sftp-server where installed, else (or when asked) asyncssh's, run inside."""
    instant.control.reset(provision_delay_s=0.0, loading_delay_s=0.0, sftp=sftp)
    register(client, key)
    instance_id, row = running_instance(client)
    sandbox = Path(instant.control.instance(instance_id)["sandbox"])
    local = tmp_path / "data.bin"
    local.write_bytes(b"\x00\x01payload" * 1000)

    async def go() -> list[str]:
        async with await connect(row["ssh_port"], key) as conn, conn.start_sftp_client() as sftp:
            await sftp.put(str(local), "/workspace/data.bin")
            await sftp.put(str(local), "/abs.bin")  # "/" is the instance's root
            await sftp.get("/workspace/data.bin", str(tmp_path / "back.bin"))
            names: list[str] = sorted(await sftp.listdir("/"))
            # ".." cannot climb out: it stops at the instance's root (or is refused)
            with contextlib.suppress(asyncssh.SFTPError):
                await sftp.put(str(local), "/../../escaped.bin")
            return names

    names = run(go())
    assert (sandbox / "workspace" / "data.bin").read_bytes() == local.read_bytes()
    assert (sandbox / "abs.bin").exists()
    assert (tmp_path / "back.bin").read_bytes() == local.read_bytes()
    assert {"usr", "workspace", "abs.bin"} <= set(names)
    assert not (sandbox.parent.parent / "escaped.bin").exists()
    assert not (sandbox.parent / "escaped.bin").exists()
    assert not Path("/escaped.bin").exists()


def test_nvidia_smi_reports_the_offer(
    instant: EmulatorThread, client: httpx.Client, key: asyncssh.SSHKey
) -> None:
    register(client, key)
    offer = cheapest(client, {"num_gpus": {"eq": 2}})
    instance_id = create(client, offer["id"])
    row = wait_status(client, instance_id, "running")
    table = ssh_run(row["ssh_port"], key, "nvidia-smi").stdout
    match = re.search(r"Driver Version: (\S+)\s+CUDA Version: (\S+)", table)
    assert match is not None
    assert match.group(1) == offer["driver_version"]
    assert float(match.group(2)) == pytest.approx(offer["cuda_max_good"])
    assert table.count(f"{offer['gpu_ram']}MiB") == 2

    query = "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader"
    lines = ssh_run(row["ssh_port"], key, query).stdout.splitlines()
    assert len(lines) == offer["num_gpus"] == 2
    name, memory, driver = (c.strip() for c in lines[0].split(","))
    assert name.endswith(offer["gpu_name"].replace("RTX 6000Ada", "RTX 6000 Ada Generation"))
    assert (memory, driver) == (f"{offer['gpu_ram']} MiB", offer["driver_version"])
    bare = ssh_run(row["ssh_port"], key, query + ",nounits").stdout.splitlines()[0]
    assert bare.split(", ")[1] == str(offer["gpu_ram"])


def test_lying_host_changes_nvidia_smi(
    instant: EmulatorThread, client: httpx.Client, key: asyncssh.SSHKey
) -> None:
    register(client, key)
    offer = cheapest(client, {"num_gpus": {"eq": 2}})
    instant.control.lying_host(
        offer_id=offer["id"], gpu_name="RTX 3060", num_gpus=1, gpu_ram=12288, cuda=11.8
    )
    instance_id = create(client, offer["id"])
    row = wait_status(client, instance_id, "running")
    query = "nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits"
    assert ssh_run(row["ssh_port"], key, query).stdout == "NVIDIA GeForce RTX 3060, 12288\n"
    assert "CUDA Version: 11.8" in ssh_run(row["ssh_port"], key, "nvidia-smi").stdout
    # the API still advertises the offer's GPUs: only the host lies
    assert show(client, instance_id)["num_gpus"] == 2  # type: ignore[index]

    # applied to a running instance, it takes effect at once
    instant.control.lying_host(instance_id=instance_id, driver_version="535.54.03")
    table = ssh_run(row["ssh_port"], key, "nvidia-smi").stdout
    assert "Driver Version: 535.54.03" in table


def test_destroy_kills_processes_and_removes_the_sandbox(
    instant: EmulatorThread, client: httpx.Client, key: asyncssh.SSHKey
) -> None:
    register(client, key)
    instance_id, row = running_instance(client)
    sandbox = Path(instant.control.instance(instance_id)["sandbox"])
    port = row["ssh_port"]
    # one job in the session's group, one that escaped it with setsid, both detached
    ssh_run(port, key, "sleep infinity >/dev/null 2>&1 & setsid sleep infinity >/dev/null 2>&1 &")
    pids = lasting(lambda: instant.control.instance(instance_id), 2)

    assert client.delete(f"/api/v0/instances/{instance_id}/").json() == {"success": True}
    assert all_gone(pids)  # before the answer left
    assert not sandbox.exists()
    with pytest.raises(OSError):
        ssh_run(port, key, "true")


def test_stop_kills_processes_and_closes_ssh_then_start_brings_it_back(
    instant: EmulatorThread, client: httpx.Client, key: asyncssh.SSHKey
) -> None:
    register(client, key)
    instance_id, row = running_instance(client)
    port = row["ssh_port"]
    ssh_run(port, key, "sleep infinity >/dev/null 2>&1 &")
    pids = inside(instant.control.instance(instance_id))
    ssh_run(port, key, "echo kept > /workspace/file; echo home > ~/file")
    client.put(f"/api/v0/instances/{instance_id}/", json={"state": "stopped"})
    assert pids and all_gone(pids)
    with pytest.raises(OSError):
        ssh_run(port, key, "true")
    client.put(f"/api/v0/instances/{instance_id}/", json={"state": "running"})
    row = wait_status(client, instance_id, "running")
    assert row["ssh_port"] == port
    # the disk persists
    assert ssh_run(port, key, "cat /workspace/file file").stdout == "kept\nhome\n"


def test_onstart_runs_once_with_its_log(
    instant: EmulatorThread, client: httpx.Client, key: asyncssh.SSHKey
) -> None:
    register(client, key)
    instance_id, _row = running_instance(
        client, onstart="echo started $VAST_CONTAINERLABEL; echo x >> count"
    )
    sandbox = Path(instant.control.instance(instance_id)["sandbox"])
    assert wait_until(lambda: (sandbox / "root" / "count").exists())
    log = sandbox / "var" / "log" / "onstart.log"
    assert wait_until(lambda: log.exists() and log.read_text() == f"started C.{instance_id}\n")
    client.put(f"/api/v0/instances/{instance_id}/", json={"state": "stopped"})
    client.put(f"/api/v0/instances/{instance_id}/", json={"state": "running"})
    wait_status(client, instance_id, "running")
    assert (sandbox / "root" / "count").read_text() == "x\n"  # once, not at every start


def test_everything_stops_with_the_emulator(make_emulator: Any, key: asyncssh.SSHKey) -> None:
    emu = make_emulator(offers=30, rate_limit=False, provision_delay_s=0.0, loading_delay_s=0.0)
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    with httpx.Client(base_url=emu.url, headers=headers, timeout=10) as client:
        register(client, key)
        instance_id, row = running_instance(client)
        sandbox = Path(emu.control.instance(instance_id)["sandbox"])
        ssh_run(row["ssh_port"], key, "setsid env -i sleep infinity >/dev/null 2>&1 &")
        pids = lasting(lambda: emu.control.instance(instance_id), 1)
    emu.stop()
    assert all_gone(pids)
    assert not sandbox.exists()


def test_reset_ends_all_instances_processes(
    instant: EmulatorThread, client: httpx.Client, key: asyncssh.SSHKey
) -> None:
    register(client, key)
    instance_id, row = running_instance(client)
    ssh_run(row["ssh_port"], key, "sleep infinity >/dev/null 2>&1 &")
    pids = inside(instant.control.instance(instance_id))
    instant.control.reset()
    assert pids and all_gone(pids)


def test_pty_shell(instant: EmulatorThread, client: httpx.Client, key: asyncssh.SSHKey) -> None:
    register(client, key)
    _, row = running_instance(client)

    async def go() -> str:
        async with await connect(row["ssh_port"], key) as conn:
            result = await conn.run("tty; echo $TERM", term_type="xterm", check=False)
            return str(result.stdout)

    name, term = run(go()).split()
    assert name.startswith("/dev/pts/") and term == "xterm"  # the instance's own devpts


@pytest.mark.parametrize(
    "command",
    [
        "while :; do echo tick; /bin/sleep 0.05; done",
        # a flood: the emulator's write to the closed channel fails before it sees the close
        "while :; do echo tick; done",
    ],
    ids=["paced", "flood"],
)
def test_a_command_whose_client_went_away_ends_on_its_next_write(
    instant: EmulatorThread, client: httpx.Client, key: asyncssh.SSHKey, command: str
) -> None:
    register(client, key)
    instance_id, row = running_instance(client)

    async def go() -> None:
        async with await connect(row["ssh_port"], key) as conn:
            follower = await conn.create_process(command)
            assert await follower.stdout.readline() == "tick\n"
            assert inside(instant.control.instance(instance_id))  # it runs
            follower.close()  # the client closes the channel (a Ctrl-C'd `tail -f`, say)
            await follower.wait_closed()
            again = await conn.run("echo still here")  # the connection's other channels live on
            assert again.stdout == "still here\n"

    run(go())
    # as with sshd: its pipes are closed, its next write gets SIGPIPE, nothing is left behind
    assert wait_until(lambda: inside(instant.control.instance(instance_id)) == [], timeout=10)


def _zombie_inside(init_pid: int) -> int:
    """A process of ours that joins the instance's PID namespace and exits at once, left
    unreaped: the instance's PID 1 cannot finish ending until we reap it (as when a process
    outside that entered the namespace is slow to reap its child on a loaded machine)."""
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/self/ns/pid", os.O_RDONLY)
    theirs = os.open(f"/proc/{init_pid}/ns/pid", os.O_RDONLY)
    try:
        if libc.setns(theirs, CLONE_NEWPID) != 0:
            raise OSError(ctypes.get_errno(), "setns")
        try:
            pid = os.fork()
            if pid == 0:
                os._exit(0)
        finally:
            libc.setns(own, CLONE_NEWPID)
    finally:
        os.close(own)
        os.close(theirs)
    return pid


def test_an_instance_slow_to_end_holds_up_no_other_answer(
    instant: EmulatorThread, client: httpx.Client, key: asyncssh.SSHKey
) -> None:
    register(client, key)
    slow, row = running_instance(client)
    other, other_row = running_instance(client)
    ssh_run(row["ssh_port"], key, "true")  # its PID 1 runs
    zombie = _zombie_inside(instant.control.instance(slow)["init_pid"])
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        try:
            destroy = pool.submit(client.delete, f"/api/v0/instances/{slow}/")
            assert wait_until(lambda: show(client, slow) is None)  # the destroy is under way
            # meanwhile the emulator answers everyone else, over HTTP and SSH
            made = client.post("/api/v0/template/", json={"name": "t", "image": "pytorch/pytorch"})
            assert made.status_code == 200
            assert ssh_run(other_row["ssh_port"], key, "echo up").stdout == "up\n"
            assert not destroy.done()  # its processes are not all gone: no answer yet
        finally:
            os.waitpid(zombie, 0)
        assert destroy.result(timeout=30).json() == {"success": True}
    assert show(client, other) is not None
