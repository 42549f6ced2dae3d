"""The container side of an instance: keys in its own ~/.ssh/authorized_keys, the `args`
runtype (an entrypoint, no sshd unless it starts one), and the container's log."""

from __future__ import annotations

import os
import shlex
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
