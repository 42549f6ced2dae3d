"""The container side of an instance: keys in its own ~/.ssh/authorized_keys, the `args`
runtype (an entrypoint, no sshd unless it starts one), and the container's log."""

from __future__ import annotations

import os
import shlex
import socket
from pathlib import Path
from typing import Any

import asyncssh
import httpx
import pytest
from emulator_ssh import (
    cheapest,
    create,
    new_key,
    public_text,
    register,
    ssh_run,
    wait_status,
)

from gpushop.emulator import EmulatorThread
from waiting import until


@pytest.fixture
def instant(emulator: EmulatorThread) -> EmulatorThread:
    """No provisioning or loading delay: instances run at once."""
    emulator.control.reset(provision_delay_s=0.0, loading_delay_s=0.0)
    return emulator


@pytest.fixture
def key() -> asyncssh.SSHKey:
    return new_key()


def running_instance(client: httpx.Client, **body: Any) -> tuple[int, dict[str, Any]]:
    instance_id = create(client, cheapest(client)["id"], **body)
    return instance_id, wait_status(client, instance_id, "running")


def sandbox_of(emu: EmulatorThread, instance_id: int) -> Path:
    return Path(emu.control.instance(instance_id)["sandbox"])


def refused(port: int, key: asyncssh.SSHKey) -> bool:
    try:
        ssh_run(port, key, "true")
    except asyncssh.PermissionDenied:
        return True
    return False


# -- ~/.ssh/authorized_keys -------------------------------------------------------------------
def test_a_key_onstart_appends_to_authorized_keys_logs_in(
    instant: EmulatorThread, client: httpx.Client, key: asyncssh.SSHKey
) -> None:
    """SkyPilot's way: its key is not on the account, onstart appends it in the container."""
    register(client, key)
    theirs, stranger = new_key(), new_key()
    line = shlex.quote(public_text(theirs))
    onstart = f"mkdir -p ~/.ssh && echo {line} >> ~/.ssh/authorized_keys && touch ~/done"
    instance_id, row = running_instance(client, onstart=onstart)
    until(lambda: (sandbox_of(instant, instance_id) / "root" / "done").exists(), "onstart")
    assert ssh_run(row["ssh_port"], theirs, "echo in").stdout == "in\n"
    assert refused(row["ssh_port"], stranger)
    # taken out of the file: refused at once, as sshd reads it at each login
    ssh_run(row["ssh_port"], key, ": > ~/.ssh/authorized_keys")
    assert refused(row["ssh_port"], theirs)


def test_planted_symlinks_and_fifos_are_never_followed(
    instant: EmulatorThread, client: httpx.Client, key: asyncssh.SSHKey, tmp_path: Path
) -> None:
    """authorized_keys pointing at a host file holding the key, ~/.ssh pointing at a host folder
    holding one, a link to /etc/shadow, a FIFO: none lets the key in, none hangs or crashes."""
    register(client, key)
    theirs = new_key()
    host_dir = tmp_path / "keys"
    host_dir.mkdir()
    (host_dir / "authorized_keys").write_text(public_text(theirs) + "\n")
    os.chmod(tmp_path, 0o755)
    file_link = (
        f"mkdir -p ~/.ssh && ln -s {host_dir}/authorized_keys ~/.ssh/authorized_keys"
        " && mkfifo ~/.ssh/authorized_keys2 && touch ~/done"
    )
    dir_link = f"ln -s {host_dir} ~/.ssh && touch ~/done"
    shadow = "mkdir -p ~/.ssh && ln -s /etc/shadow ~/.ssh/authorized_keys && touch ~/done"
    for onstart in (file_link, dir_link, shadow):
        instance_id, row = running_instance(client, onstart=onstart)
        done = sandbox_of(instant, instance_id) / "root" / "done"
        until(done.exists, "onstart")
        assert refused(row["ssh_port"], theirs)
        assert ssh_run(row["ssh_port"], key, "echo ok").stdout == "ok\n"


# -- runtype args: an entrypoint, and sshd only when it starts one ------------------------------
def args_instance(client: httpx.Client, script: str, **body: Any) -> int:
    """dstack's way: onstart is the entrypoint, args its arguments."""
    offer = cheapest(client)
    return create(
        client, offer["id"], runtype="args", onstart="/bin/sh", args=["-c", script], **body
    )


def ssh_closed(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_the_entrypoint_runs_and_its_exit_ends_the_container(
    instant: EmulatorThread, client: httpx.Client
) -> None:
    script = "echo x >> /root/runs; /bin/sleep infinity & exit 3"
    instance_id = args_instance(client, script)
    row = wait_status(client, instance_id, "exited")
    assert row["intended_status"] == "running" and row["image_runtype"] == "args"
    assert row["image_args"] == ["-c", script] and row["onstart"] == "/bin/sh"
    sandbox = sandbox_of(instant, instance_id)
    assert (sandbox / "root" / "runs").read_text() == "x\n"
    # what it left behind ended with it
    until(lambda: not instant.control.instance(instance_id)["processes"], "the container's end")
    # a start runs the container, hence the entrypoint, again
    client.put(f"/api/v0/instances/{instance_id}/", json={"state": "running"})
    until(lambda: (sandbox / "root" / "runs").read_text() == "x\nx\n", "the second run")
    wait_status(client, instance_id, "exited")


def test_no_sshd_unless_the_entrypoint_starts_one(
    instant: EmulatorThread, client: httpx.Client, key: asyncssh.SSHKey
) -> None:
    register(client, key)
    quiet = args_instance(client, "touch /root/up; exec /bin/sleep infinity")
    row = wait_status(client, quiet, "running")
    until((sandbox_of(instant, quiet) / "root" / "up").exists, "the entrypoint")
    assert "22/tcp" in row["ports"]  # published, but nothing listens
    assert ssh_closed(row["ssh_port"])
    assert instant.control.instance(quiet)["ssh_listening"] is False
    for script in ("sshd; exec /bin/sleep infinity", "exec sshd -D"):
        instance_id = args_instance(client, script)
        row = wait_status(client, instance_id, "running")
        until(lambda: instant.control.instance(instance_id)["ssh_listening"], "sshd")  # noqa: B023
        result = ssh_run(row["ssh_port"], key, "echo $VAST_CONTAINERLABEL")
        assert result.stdout == f"C.{instance_id}\n"
    # sshd -D stays in the foreground: the container keeps running; a stop closes SSH again
    client.put(f"/api/v0/instances/{instance_id}/", json={"state": "stopped"})
    assert ssh_closed(row["ssh_port"])
