"""The per-instance sandbox: a directory standing in for the container, and every process the
instance runs.

There is no container: commands run as the CURRENT user of the emulator, with HOME and cwd set to
`<root>/C.<instance id>`, inside the sandbox's mount namespace when there is one (mountns.py:
/workspace and /app are the sandbox's). Each command starts in a new session (its own process
group) and carries `EMULATOR_SANDBOX=<path>` in its environment, so stopping the instance can
find and kill all of them: the process groups first, then a sweep of /proc for anything that
left its group (setsid, double fork) but kept the environment.

Layout: `bin/` (first on PATH: nvidia-smi, python, python3), `workspace/`, `app/` (what the image
ships, e.g. `app/ai-toolkit/`), and `.emulator/` (emulator <-> simulated programs: fault and
marker files; outside /workspace and /app so jobs never copy it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import shutil
import signal
import sys
from pathlib import Path

from gpushop.emulator import image_files, nvidia_smi
from gpushop.emulator.mountns import MountNamespace, Tools

log = logging.getLogger("gpushop.emulator")

TAG = "EMULATOR_SANDBOX"
# Inherited from the emulator's environment; everything else is the instance's own.
PASSED_THROUGH = ("PATH", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR")
CONTROL_DIR = ".emulator"
SYSTEM_PATH = ("/usr/local/bin", "/usr/bin", "/bin")  # sha256sum, find, tail, setsid, nohup...


class Sandbox:
    def __init__(self, root: Path, instance_id: int, tools: Tools | None = None) -> None:
        self.instance_id = instance_id
        self.path = root / f"C.{instance_id}"
        self.pgids: set[int] = set()
        self.namespace = MountNamespace(tools, self.path) if tools is not None else None

    @property
    def workspace(self) -> Path:
        return self.path / "workspace"

    @property
    def control(self) -> Path:
        return self.path / CONTROL_DIR

    def create(self, facts: nvidia_smi.GpuFacts, image: str = "") -> None:
        """Lay out the sandbox (again after a restart: files are kept) and its namespace."""
        for sub in ("bin", "workspace", "app", CONTROL_DIR):
            (self.path / sub).mkdir(parents=True, exist_ok=True)
        self.write_gpus(facts)
        _write_python(self.path / "bin")
        image_files.install(image, self.path / "app")
        if self.namespace is not None and not self.namespace.start():
            log.warning(
                "emulator: instance %d runs without its mount namespace: %s",
                self.instance_id,
                self.namespace.error,
            )

    def write_gpus(self, facts: nvidia_smi.GpuFacts) -> None:
        nvidia_smi.write(self.path / "bin" / "nvidia-smi", facts)

    def environment(self, instance_env: dict[str, str]) -> dict[str, str]:
        """What a command sees: a container-like environment, not the emulator's (which may
        hold the user's credentials)."""
        env = {k: os.environ[k] for k in PASSED_THROUGH if k in os.environ}
        env.update(instance_env)
        host_path = [p for p in os.environ.get("PATH", "").split(":") if p]
        host_path += [p for p in SYSTEM_PATH if p not in host_path]
        env["PATH"] = ":".join([str(self.path / "bin"), *host_path])
        env["HOME"] = str(self.path)
        env["SHELL"] = "/bin/sh"
        env["WORKSPACE"] = str(self.workspace)
        env[TAG] = str(self.path)
        return env

    async def spawn(
        self,
        argv: list[str],
        env: dict[str, str],
        *,
        stdin: int | None = asyncio.subprocess.PIPE,
        stdout: int | None = asyncio.subprocess.PIPE,
        stderr: int | None = asyncio.subprocess.PIPE,
    ) -> asyncio.subprocess.Process:
        fds: tuple[int, ...] = ()
        if self.namespace is not None:
            argv, fds = self.namespace.wrap(argv, self.path)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            cwd=self.path,
            env=env,
            pass_fds=fds,
            start_new_session=True,  # own process group: killpg reaches its children
        )
        self.pgids.add(proc.pid)
        return proc

    def forget(self, pgid: int) -> None:
        """A command's leader ended; its group may live on (background jobs) until a kill."""
        if not _group_alive(pgid):
            self.pgids.discard(pgid)

    def kill_all(self) -> None:
        """SIGKILL every process this instance started (groups, then stragglers by tag)."""
        for pgid in list(self.pgids):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        self.pgids.clear()
        needle = f"{TAG}={self.path}\0".encode()
        for _ in range(3):  # a process may fork while we sweep
            if not _sweep(needle):
                break

    def release(self) -> None:
        """Drop the namespace (made again by the next `create`)."""
        if self.namespace is not None:
            self.namespace.close()

    def remove(self) -> None:
        self.kill_all()
        self.release()
        shutil.rmtree(self.path, ignore_errors=True)


def _write_python(bin_dir: Path) -> None:
    """`python` and `python3`: the emulator's own interpreter, whatever the image. A script,
    not a symlink: a symlinked venv interpreter would lose its venv (and pyyaml)."""
    text = f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n'
    for name in ("python", "python3"):
        path = bin_dir / name
        if not path.exists() or path.read_text() != text:
            tmp = path.with_name(name + ".tmp")
            tmp.write_text(text)
            tmp.chmod(0o755)
            tmp.replace(path)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _sweep(needle: bytes) -> int:
    """Kill the processes whose environment holds `needle`; how many were found."""
    proc = Path("/proc")
    if not proc.is_dir():
        return 0
    me = os.getpid()
    found = 0
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ or environ.endswith(needle[:-1]):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)
                found += 1
    return found
