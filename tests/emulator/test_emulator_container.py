"""The container side of an instance: keys in its own ~/.ssh/authorized_keys, the `args`
runtype (an entrypoint, no sshd unless it starts one), and the container's log."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
from pathlib import Path
from typing import Any

import asyncssh
import httpx
import pytest
from emulator_ssh import (
    all_gone,
    cheapest,
    create,
    lasting,
    new_key,
    public_text,
    register,
    ssh_run,
    wait_status,
)
from tensordock_helpers import create_on, node_with, td_client, wait_for
from tensordock_helpers import ssh as td_ssh

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


def test_a_tensordock_vm_honours_its_users_authorized_keys(emulator: EmulatorThread) -> None:
    """A VM's own sshd reads ~user/.ssh/authorized_keys too."""
    with td_client(emulator.tensordock_url, emulator.tensordock_token) as td:
        key, theirs = new_key(), new_key()
        vm_id, port = create_on(td, key, node_with(td))
        wait_for(td, vm_id, "running", ip=True)
        line = shlex.quote(public_text(theirs))
        td_ssh(port, key, f"mkdir -p ~/.ssh && echo {line} >> ~/.ssh/authorized_keys")
        assert td_ssh(port, theirs, "whoami").stdout == "user\n"


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
    assert row["status_msg"] == "Error: container exited: its entrypoint exited with code 3"
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


def test_a_reboot_restarts_the_entrypoint_once(
    instant: EmulatorThread, client: httpx.Client
) -> None:
    instance_id = args_instance(client, "echo x >> /root/runs; exec /bin/sleep infinity")
    wait_status(client, instance_id, "running")
    runs = sandbox_of(instant, instance_id) / "root" / "runs"
    until(runs.exists, "the entrypoint")
    first = lasting(lambda: instant.control.instance(instance_id), 1)
    assert client.put(f"/api/v0/instances/reboot/{instance_id}/", json={}).json()["success"]
    until(lambda: runs.read_text() == "x\nx\n", "the entrypoint after the reboot")
    wait_status(client, instance_id, "running")
    # the old container ended: one entrypoint inside, not two
    again = lasting(lambda: instant.control.instance(instance_id), 1)
    assert all_gone(first[:1]) and again[0] != first[0]


# -- the container's log: PUT /api/v0/instances/request_logs/{id}/ ------------------------------
def logs(client: httpx.Client, instance_id: int, **body: Any) -> str:
    response = client.put(f"/api/v0/instances/request_logs/{instance_id}/", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["success"] is True and answer["msg"]
    fetched = httpx.get(answer["result_url"], timeout=10)  # no auth, as the official CLI
    assert fetched.status_code == 200, fetched.text
    return fetched.text


def test_request_logs_serve_onstarts_output_with_tail_and_filter(
    instant: EmulatorThread, client: httpx.Client, anon: httpx.Client
) -> None:
    instance_id, _ = running_instance(
        client, onstart="echo one; echo two >&2; echo three; touch ~/d"
    )
    until((sandbox_of(instant, instance_id) / "root" / "d").exists, "onstart")
    assert logs(client, instance_id) == "one\ntwo\nthree\n"
    assert logs(client, instance_id, tail="2") == "two\nthree\n"
    assert logs(client, instance_id, filter="t[wh]") == "two\nthree\n"
    assert logs(client, instance_id, tail="1", filter="one") == ""
    unknown = client.put("/api/v0/instances/request_logs/999/", json={})
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "invalid_id", "msg": "Invalid instance id."}
    bad = client.put(f"/api/v0/instances/request_logs/{instance_id}/", json={"tail": "x"})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_args"
    assert anon.put(f"/api/v0/instances/request_logs/{instance_id}/", json={}).status_code == 403


def test_an_args_containers_log_is_its_entrypoints_output(
    instant: EmulatorThread, client: httpx.Client
) -> None:
    instance_id = args_instance(client, "echo out; echo err >&2; exit 0")
    row = wait_status(client, instance_id, "exited")
    assert row["status_msg"] == "container exited: its entrypoint exited with code 0"
    assert logs(client, instance_id) == "out\nerr\n"  # kept once the container exited
    assert "exited with code 0" in logs(client, instance_id, daemon_logs="true")


def test_a_planted_log_symlink_is_not_followed(
    instant: EmulatorThread, client: httpx.Client, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("a host secret\n")
    os.chmod(tmp_path, 0o755)
    onstart = f"echo mine; ln -sf {secret} /var/log/onstart.log; touch ~/d"
    instance_id, _ = running_instance(client, onstart=onstart)
    until((sandbox_of(instant, instance_id) / "root" / "d").exists, "onstart")
    assert "secret" not in logs(client, instance_id)


@pytest.mark.slow
@pytest.mark.vastai_cli
def test_vastai_logs_prints_the_containers_log(
    vastai_cli: str, instant: EmulatorThread, client: httpx.Client
) -> None:
    script = "echo hello from the entrypoint; echo; echo second line; exec /bin/sleep infinity"
    instance_id = args_instance(client, script)
    until(lambda: "second" in logs(client, instance_id), "the entrypoint's output")
    env = {**os.environ, "VAST_URL": instant.url, "VASTAI_NO_UPDATE_CHECK": "1"}
    base = [
        vastai_cli,
        "--url",
        instant.url,
        "--api-key",
        instant.api_key,
        "logs",
        str(instance_id),
    ]
    result = subprocess.run(base, capture_output=True, text=True, env=env, timeout=60)
    assert "Failed" not in result.stderr, result.stderr
    assert result.stdout == "hello from the entrypoint\nsecond line\n\n"  # blank lines collapsed
    tail = subprocess.run(
        [*base, "--tail", "1"], capture_output=True, text=True, env=env, timeout=60
    )
    assert tail.stdout == "second line\n\n"


# -- the official SDK (vastai 1.9.1), unchanged --------------------------------------------------
SDK_SCRIPT = r"""
import json, sys, time
from vastai import VastAI

url, key = sys.argv[1], sys.argv[2]
vast = VastAI(api_key=key, server_url=url)
out = {}
offers = vast.search_offers("num_gpus=1", order="dph+", limit=3)
out["prices"] = [o["dph_total"] for o in offers]
created = vast.create_instance(
    offers[0]["id"], image="pytorch/pytorch:latest", disk=16, label="sdk",
    onstart_cmd="/bin/sh", args=["-c", "echo hello from sdk; exec /bin/sleep infinity"],
)
iid = created["new_contract"]
out["created"] = created["success"]

def status():
    return vast.show_instance(iid)["actual_status"]

deadline = time.monotonic() + 60
while status() != "running" and time.monotonic() < deadline:
    time.sleep(0.05)
shown = vast.show_instance(iid)
out["shown"] = [shown["actual_status"], shown["label"], shown["image_runtype"]]
out["label"] = vast.label_instance(iid, "sdk-2")["success"]
out["relabelled"] = vast.show_instance(iid)["label"]
log = ""
while "hello" not in log and time.monotonic() < deadline:
    log = vast.logs(iid)
out["logs"] = log
out["stop"] = vast.stop_instance(iid)["success"]
out["stopped"] = status()
out["start"] = vast.start_instance(iid)["success"]
while status() != "running" and time.monotonic() < deadline:
    time.sleep(0.05)
out["restarted"] = status()
out["destroy"] = vast.destroy_instance(iid)["success"]
out["gone"] = vast.show_instance(iid)
print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.vastai_cli
def test_the_official_sdk_drives_an_instance(vastai_cli: str, instant: EmulatorThread) -> None:
    python = Path(vastai_cli).with_name("python")
    env = {**os.environ, "VASTAI_NO_UPDATE_CHECK": "1"}
    argv = [str(python), "-c", SDK_SCRIPT, instant.url, instant.api_key]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["prices"] == sorted(out["prices"]) and len(out["prices"]) == 3
    assert out["created"] is True
    assert out["shown"] == ["running", "sdk", "args"]
    assert out["label"] is True and out["relabelled"] == "sdk-2"
    assert out["logs"] == "hello from sdk\n"
    assert (out["stop"], out["stopped"]) == (True, "exited")
    assert (out["start"], out["restarted"]) == (True, "running")
    assert out["destroy"] is True and out["gone"] is None
    assert instant.control.state()["instances"] == []
