"""Every emulated instance is a sandbox: what runs there, over SSH, SFTP or onstart, cannot touch
the host, and ends with the instance. Each escape is tried against an emulator run as root (the
session's) and one run as an unprivileged user this module creates (a subprocess: `gpushop
emulator` as that user, with only a folder of its own)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
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
    lasting,
    new_key,
    register,
    run,
    show,
    ssh_run,
    wait_status,
    wait_until,
)

from gpushop.emulator import EmulatorThread
from gpushop.emulator.control import EmulatorControl

USER = "gpushop-sbx"
ROOT = Path(__file__).resolve().parents[2]
AS_USER = Path(__file__).with_name("as_user.py")


@dataclass
class Box:
    """An emulator, a client of it and a key, and a host folder its user may write."""

    kind: str
    control: EmulatorControl
    client: httpx.Client
    key: asyncssh.SSHKey
    host_dir: Path  # on the host, writable by the emulator's user: where an escape would land
    process: subprocess.Popen[str] | None = None

    def running(self, **body: Any) -> tuple[int, int]:
        instance_id = create(self.client, cheapest(self.client)["id"], **body)
        return instance_id, int(wait_status(self.client, instance_id, "running")["ssh_port"])

    def sh(self, port: int, command: str) -> asyncssh.SSHCompletedProcess:
        return ssh_run(port, self.key, command)


def _ensure_user() -> None:
    with open("/tmp/gpushop-sbx-user.lock", "w") as lock:  # parallel workers: one useradd
        fcntl.flock(lock, fcntl.LOCK_EX)
        if subprocess.run(["id", "-u", USER], capture_output=True).returncode != 0:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
                check=True,
            )


@contextlib.contextmanager
def unprivileged_emulator() -> Iterator[tuple[subprocess.Popen[str], str, str, Path]]:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the unprivileged sandbox tests make a user: CI runs them as root")
        pytest.skip("making the unprivileged user needs root")
    _ensure_user()
    home = Path(tempfile.mkdtemp(prefix="gpushop-sbx-"))
    shutil.chown(home, USER, USER)
    import gpushop

    reach = [Path(sys.prefix), Path(sys.base_prefix), Path(gpushop.__file__).parents[1], home]
    argv = ["unshare", "--mount", "--propagation", "private", "--", sys.executable, str(AS_USER)]
    argv += [USER, *map(str, reach), "--", sys.executable, "-m", "gpushop.emulator"]
    argv += ["--offers", "40", "--seed", "7", "--no-rate-limit", "--speed", "1000"]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(home), "LANG": "C.UTF-8"}
    log = tempfile.TemporaryFile()  # noqa: SIM115 - the emulator's stderr, read on failure
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    assert proc.stdout is not None
    try:
        lines = dict(proc.stdout.readline().strip().partition("=")[::2] for _ in range(4))
        if "VASTAI_URL" not in lines:
            proc.kill()
            proc.wait()
            log.seek(0)
            pytest.fail(f"the unprivileged emulator did not start: {log.read()[-2000:]!r}")
        yield proc, lines["VASTAI_URL"], lines["VASTAI_API_KEY"], home
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stdout.close()
        log.close()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def unprivileged() -> Iterator[tuple[subprocess.Popen[str], str, str, Path]]:
    with unprivileged_emulator() as started:
        yield started


@pytest.fixture(params=["root", "unprivileged"])
def box(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Box]:
    key = new_key()
    if request.param == "root":
        emu: EmulatorThread = request.getfixturevalue("emulator")
        emu.control.reset(provision_delay_s=0.0, loading_delay_s=0.0)
        url, api_key, control, host_dir, proc = emu.url, emu.api_key, emu.control, tmp_path, None
    else:
        proc, url, api_key, host_dir = request.getfixturevalue("unprivileged")
        control = EmulatorControl(url)
        control.reset(provision_delay_s=0.0, loading_delay_s=0.0)
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        register(client, key)
        yield Box(request.param, control, client, key, host_dir, proc)
    if proc is not None:
        control.close()


def test_a_command_writes_the_instances_tmp_not_the_hosts(box: Box) -> None:
    name = f"escaped-{uuid.uuid4().hex}"
    instance_id, port = box.running()
    assert box.sh(port, f"echo x > /tmp/{name} && cat /tmp/{name}").stdout == "x\n"
    assert not Path("/tmp", name).exists()
    sandbox = Path(box.control.instance(instance_id)["sandbox"])
    assert (sandbox / "tmp" / name).read_text() == "x\n"  # the instance's own /tmp
    # the rest of the host is read-only, root inside has no capability to change that
    result = box.sh(
        port, f"touch /usr/{name}; mount -o remount,rw /usr; grep CapEff /proc/self/status"
    )
    assert "Read-only file system" in result.stderr and not Path("/usr", name).exists()
    assert "CapEff:\t0000000000000000" in result.stdout
    # and the host's /root and /home are not there
    assert box.sh(port, "ls -A /home").stdout == ""


@pytest.mark.parametrize("sftp", ["auto", "builtin"])
def test_sftp_through_a_symlink_to_root_stays_in_the_instance(
    box: Box, tmp_path: Path, sftp: str
) -> None:
    box.control.reset(provision_delay_s=0.0, loading_delay_s=0.0, sftp=sftp)
    register(box.client, box.key)
    instance_id, port = box.running()
    assert box.sh(port, "ln -s / /workspace/up && ls /workspace/up/usr >/dev/null").exit_status == 0
    local = tmp_path / "payload"
    local.write_text("payload")
    target = box.host_dir / f"planted-{uuid.uuid4().hex}"

    async def go() -> list[str]:
        failures = []
        async with await connect(port, box.key) as conn, conn.start_sftp_client() as sftp:
            for remote in (f"/workspace/up{target}", f"/workspace/up/tmp/{target.name}"):
                try:
                    await sftp.put(str(local), remote)
                except asyncssh.SFTPError as exc:
                    failures.append(f"{remote}: {exc}")
        return failures

    failures = run(go())
    assert not target.exists() and not Path("/tmp", target.name).exists()
    # what did land, landed in the instance: its own /tmp through its own /
    sandbox = Path(box.control.instance(instance_id)["sandbox"])
    assert (sandbox / "tmp" / target.name).read_text() == "payload"
    assert len(failures) == 1 and str(box.host_dir) in failures[0]  # no such folder inside


@pytest.mark.parametrize("end", ["stop", "destroy"])
def test_a_process_that_drops_its_environment_ends_with_the_instance(box: Box, end: str) -> None:
    instance_id, port = box.running()
    box.sh(port, "setsid env -i sleep infinity >/dev/null 2>&1 </dev/null &")
    pids = lasting(lambda: box.control.instance(instance_id), 1)
    if end == "stop":
        box.client.put(f"/api/v0/instances/{instance_id}/", json={"state": "stopped"})
    else:
        box.client.delete(f"/api/v0/instances/{instance_id}/")
    assert all_gone(pids)  # before the answer came back


def test_commands_and_sftp_share_one_workspace_per_instance(box: Box, tmp_path: Path) -> None:
    _, port = box.running()
    _, port2 = box.running()
    local = tmp_path / "a.txt"
    local.write_text("alpha\n")

    async def put(to: int) -> None:
        async with await connect(to, box.key) as conn, conn.start_sftp_client() as sftp:
            await sftp.put(str(local), "/workspace/a.txt")

    run(put(port))
    assert box.sh(port, "cat /workspace/a.txt").stdout == "alpha\n"
    assert box.sh(port2, "ls /workspace").stdout == ""  # the other instance's is its own
    assert not Path("/workspace/a.txt").exists()


def test_the_instance_has_its_own_pid_1(box: Box) -> None:
    instance_id, port = box.running()
    result = box.sh(port, "kill -TERM 1; kill -KILL 1; ps -e -o pid=,comm= | sort -n | head -3")
    first = result.stdout.split("\n")[0].split()
    assert first[0] == "1" and first[1].startswith("python")  # the sandbox's init, still there
    assert show(box.client, instance_id)["actual_status"] == "running"  # type: ignore[index]
    # only the instance's processes are there, not the host's hundreds
    seen = int(box.sh(port, "ls /proc | grep -c '^[0-9]'").stdout)
    assert seen <= len(box.control.instance(instance_id)["processes"]) + 3  # + sh, ls, grep
    assert len([p for p in os.listdir("/proc") if p.isdigit()]) > seen + 20


def test_pid_1_dying_by_itself_makes_the_instance_exited(box: Box) -> None:
    instance_id, port = box.running()
    box.sh(port, "echo kept > /workspace/file")
    os.kill(box.control.instance(instance_id)["init_pid"], signal.SIGKILL)
    row = wait_status(box.client, instance_id, "exited")
    assert row["intended_status"] == "running" and "exited" in row["status_msg"]
    with pytest.raises(OSError):
        box.sh(port, "true")
    box.client.put(f"/api/v0/instances/{instance_id}/", json={"state": "running"})  # a restart
    wait_status(box.client, instance_id, "running")
    assert box.sh(port, "cat /workspace/file").stdout == "kept\n"


def test_a_fork_bomb_stays_inside(box: Box) -> None:
    box.control.reset(provision_delay_s=0.0, loading_delay_s=0.0, max_pids=64)
    register(box.client, box.key)
    instance_id, port = box.running()
    bomb = "i=0; while [ $i -lt 200 ]; do /bin/sleep 1d >/dev/null 2>&1 & i=$((i+1)); done"
    started = box.sh(port, bomb)
    assert started.exit_status != 0 and "fork" in started.stderr.lower()  # refused inside ...
    count = len(box.control.instance(instance_id)["processes"])
    assert 32 < count <= 64  # ... at the limit
    assert subprocess.run(["true"]).returncode == 0  # ... and the host still forks
    box.client.delete(f"/api/v0/instances/{instance_id}/")


def test_everything_ends_when_the_emulator_is_killed(tmp_path: Path) -> None:
    """Even `kill -9` of the emulator (nothing of it can clean up) ends every instance."""
    argv = [sys.executable, "-m", "gpushop.emulator", "--offers", "20", "--no-rate-limit"]
    proc = subprocess.Popen([*argv, "--speed", "1000"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines = dict(proc.stdout.readline().strip().partition("=")[::2] for _ in range(4))
    proc.stdout.close()  # it logs to stderr from now on
    key = new_key()
    headers = {"Authorization": f"Bearer {lines['VASTAI_API_KEY']}"}
    try:
        with httpx.Client(base_url=lines["VASTAI_URL"], headers=headers, timeout=30) as client:
            control = EmulatorControl(lines["VASTAI_URL"])
            control.reset(provision_delay_s=0.0, loading_delay_s=0.0)
            register(client, key)
            instance_id = create(client, cheapest(client)["id"])
            port = wait_status(client, instance_id, "running")["ssh_port"]
            ssh_run(port, key, "setsid env -i sleep infinity >/dev/null 2>&1 </dev/null &")
            pids = lasting(lambda: control.instance(instance_id), 1)
            control.close()
    finally:
        proc.kill()
        proc.wait()
    assert wait_until(lambda: all_gone(pids), timeout=10)


def test_exec_shell_onstart_and_sftp_all_see_the_same_files(box: Box, tmp_path: Path) -> None:
    _, port = box.running(onstart="echo from-onstart > /root/onstart.txt")
    assert wait_until(lambda: box.sh(port, "cat /root/onstart.txt").stdout == "from-onstart\n")

    async def go() -> tuple[bytes, str]:
        async with await connect(port, box.key) as conn:
            async with conn.start_sftp_client() as sftp, sftp.open("onstart.txt", "rb") as f:
                data: bytes = await f.read()  # relative: from HOME, /root
            shell = await conn.run("cat /root/onstart.txt; exit", term_type="xterm")
            return data, str(shell.stdout)

    data, shell = run(go())
    assert data == b"from-onstart\n" and "from-onstart" in shell
