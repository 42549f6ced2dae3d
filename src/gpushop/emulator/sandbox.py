"""The per-instance sandbox: the container's filesystem, and every process the instance runs.

On the host an instance has two folders: `C.<id>/`, its root filesystem (the container's `/`:
`root/` is HOME, `workspace/`, `app/`, `tmp/`, `var/`, plus empty mount points), and
`C.<id>.emulator/`, the emulator's control folder (`bin/` with nvidia-smi, python, sleep...;
trainer faults) with `state/` inside, where the instance's programs leave word for the
emulator. While it runs, its PID 1 (sandbox_init.py) holds a PID and a mount namespace (and a
user namespace when the emulator is not root) in which `/` is `C.<id>/`, the host's other
top-level folders are read-only, `/root`, `/home`, `/tmp`, `/var` and `/run` of the host are
hidden, and `/.emulator` is the control folder, read-only but for `/.emulator/state`.

Every command, the shell, `onstart`, SFTP and scp start as `nsenter` into those namespaces,
then `setpriv` drops every capability (and sets no_new_privs), so root inside can neither
remount nor gain anything. A process limit (a pids cgroup, or RLIMIT_NPROC) keeps a fork bomb
inside. Ending PID 1 ends every process in the namespace, whatever it did to its environment or
session: that is stop, destroy and the emulator's exit (a pipe PID 1 watches closes with the
emulator, even on `kill -9`).

The emulator writes only into the control folder (and into the root filesystem before it ever
ran: the image's files); what the instance wrote is never followed from the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import resource
import select
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

from gpushop.emulator import image_files, nvidia_smi
from gpushop.emulator.isolation import TOOL_PATH, Isolation, under_hidden

log = logging.getLogger("gpushop.emulator")

CONTROL = "/.emulator"  # inside: the control folder (read-only)
STATE = "/.emulator/state"  # inside: what the instance tells the emulator (writable)
BIN = "/.emulator/bin"
CONTAINERS_SOCKET = "/.emulator/state/containers.sock"  # PID 1 makes containers (docker_shim)
INSIDE_PATH = f"{BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PASSED_THROUGH = ("LANG", "LC_ALL", "TZ")  # from the emulator's environment; nothing else
INIT = Path(__file__).with_name("sandbox_init.py")
STARTUP_TIMEOUT_S = 20.0
MAX_PIDS = 1024
TIOCSPTLCK = 0x40045431  # unlock a pty's slave
TIOCGPTPEER = 0x5441  # open a pty's slave from its master
INSTALLED = ".installed"  # in the control folder: the image's files are in place

SLEEP = r"""#!/bin/sh
# Simulated by the gpushop emulator: time runs EMULATOR_SPEED times faster here (as for the
# simulated trainer). A sleep never gets shorter than 50 ms (or itself): polling loops stay loops.
f=${EMULATOR_SPEED:-1}
case "$f" in 1|1.0) exec @SLEEP@ "$@" ;; esac
t=$(@AWK@ -v f="$f" 'BEGIN {
  s = 0
  for (i = 1; i < ARGC; i++) {
    a = ARGV[i]; m = 1; u = substr(a, length(a))
    if (u == "s" || u == "m" || u == "h" || u == "d") {
      a = substr(a, 1, length(a) - 1)
      m = (u == "m") ? 60 : (u == "h") ? 3600 : (u == "d") ? 86400 : 1
    }
    if (a !~ /^[0-9]*\.?[0-9]+$/) exit 1
    s += a * m
  }
  if (ARGC < 2) exit 1
  r = s / f; lo = (s < 0.05) ? s : 0.05
  if (r < lo) r = lo
  printf "%.3f", r
}' "$@") || exec @SLEEP@ "$@"
exec @SLEEP@ "$t"
"""


class SandboxError(Exception):
    """The sandbox could not be made (one line: why)."""


class Sandbox:
    def __init__(
        self,
        path: Path,
        isolation: Isolation,
        *,
        home: str = "/root",
        dirs: Iterable[str] = (),
        max_pids: int = MAX_PIDS,
        hide: Iterable[str] = (),
        containers: bool = False,
    ) -> None:
        self.path = path  # the root filesystem
        self.control = path.with_name(path.name + ".emulator")
        self.state = self.control / "state"
        self.layers = path.with_name(path.name + ".layers")  # the instance's changes to /etc
        self.bin = self.control / "bin"
        self.isolation = isolation
        self.home = home
        self.dirs = tuple(dirs)
        self.max_pids = max_pids
        self.hide = tuple(p for p in hide if not under_hidden(p))
        self.containers = containers
        self._init: subprocess.Popen[bytes] | None = None
        self._lifeline: int | None = None
        self.init_pid: int | None = None
        self._fds: dict[str, int] = {}  # user, mnt, pid namespaces; cwd (HOME inside)
        self._cgroup: Path | None = None
        self._cgroup_procs: int | None = None
        self._killed = False
        self._starting: asyncio.Lock | None = None

    @property
    def workspace(self) -> Path:
        return self.path / "workspace"

    # -- layout ------------------------------------------------------------------------------
    def prepare(self, facts: nvidia_smi.GpuFacts | None, image: str = "") -> None:
        """The control folder (again after a restart: files are kept); the image's files on
        the first start only, before anything of the instance ever ran."""
        for folder in (self.path, self.bin, self.state):
            folder.mkdir(parents=True, exist_ok=True)
        if facts is not None:
            self.write_gpus(facts)
        write_script(self.bin / "sleep", _sleep_script())
        for name in ("python", "python3"):  # the emulator's own interpreter, whatever the image
            write_script(self.bin / name, f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
        if not (self.control / INSTALLED).exists():
            (self.path / "app").mkdir(exist_ok=True)
            image_files.install(image, self.path / "app")
            (self.control / INSTALLED).touch()

    def write_gpus(self, facts: nvidia_smi.GpuFacts) -> None:
        nvidia_smi.write(self.bin / "nvidia-smi", facts)

    def environment(self, instance_env: dict[str, str]) -> dict[str, str]:
        """What a command sees: a container's environment, not the emulator's (which may hold
        the user's credentials)."""
        env = {k: os.environ[k] for k in PASSED_THROUGH if k in os.environ}
        env.update({"USER": "root", "LOGNAME": "root"})
        env.update(instance_env)
        env["PATH"] = INSIDE_PATH
        env["HOME"] = self.home
        env["SHELL"] = "/bin/sh"
        env["WORKSPACE"] = "/workspace"
        return env

    # -- PID 1 -------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._init is not None and self._init.poll() is None

    @property
    def exited(self) -> bool:
        """PID 1 ended by itself (not by `kill_all`)."""
        return self._init is not None and not self._killed and self._init.poll() is not None

    async def start(self) -> None:
        """Start PID 1 and hold its namespaces (once, however many callers wait for it);
        raises SandboxError."""
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self.running:
                return
            stdout = self._launch()
            self._ready(await _readline(stdout, STARTUP_TIMEOUT_S))

    def start_sync(self) -> None:
        """`start` for code that may not wait on a loop (the probe)."""
        if self.running:
            return
        stdout = self._launch()
        ready, _, _ = select.select([stdout], [], [], STARTUP_TIMEOUT_S)
        self._ready(stdout.readline() if ready else b"error no answer from the sandbox's init")

    def _launch(self) -> IO[bytes]:
        self._close()
        self._killed = False
        iso = self.isolation
        read_end, self._lifeline = os.pipe()  # both ends close-on-exec: only PID 1 gets one
        config = {
            "root": str(self.path),
            "control": str(self.control),
            "state": str(self.state),
            "layers": str(self.layers),
            "home": self.home,
            "dirs": list(self.dirs),
            "binds": list(iso.binds),
            "hide": list(self.hide),
            "lifeline": read_end,
            "containers": CONTAINERS_SOCKET if self.containers else None,
        }
        flags = ["--user", "--map-root-user"] if iso.user_ns else []
        argv = [iso.unshare, *flags, "--mount", "--pid", "--fork", "--propagation", "private"]
        argv += ["--kill-child", "--", sys.executable, "-I", "-S", str(INIT), json.dumps(config)]
        self._make_cgroup()
        try:
            self._init = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(read_end,),
                env={"PATH": TOOL_PATH, "LC_ALL": "C"},
                start_new_session=True,
                preexec_fn=self._enter_cgroup if self._cgroup_procs is not None else None,
            )
        except OSError as exc:
            self._close()
            raise SandboxError(f"cannot start the sandbox: {exc}") from None
        finally:
            os.close(read_end)
        assert self._init.stdout is not None
        return self._init.stdout

    def _ready(self, line: bytes) -> None:
        text = line.decode(errors="replace").strip()
        if not text.startswith("ready "):
            err = b""
            init = self._init
            if init is not None:
                self._kill(init)
                if init.stderr is not None:
                    with contextlib.suppress(OSError, ValueError):
                        err = init.stderr.read()
            why = text.removeprefix("error ") or err.decode(errors="replace").strip()
            self._close()
            raise SandboxError(f"cannot make the sandbox: {why or 'its init did not start'}")
        self.init_pid = int(text.split()[1])
        try:
            kinds = ("user", "mnt", "pid") if self.isolation.user_ns else ("mnt", "pid")
            for kind in kinds:
                self._fds[kind] = os.open(f"/proc/{self.init_pid}/ns/{kind}", os.O_RDONLY)
            # PID 1's working directory is HOME inside; a descriptor of it is that directory
            # through the namespace's own mounts (a host path would not be)
            self._fds["cwd"] = os.open(f"/proc/{self.init_pid}/cwd", os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            self.kill_all()
            raise SandboxError(f"cannot enter the sandbox: {exc}") from None

    def wrap(self, argv: list[str]) -> tuple[list[str], tuple[int, ...]]:
        """(argv that runs `argv` inside, descriptors the child must inherit)."""
        iso, fds = self.isolation, self._fds
        prefix = [iso.nsenter]
        if "user" in fds:  # keep our uid (root inside): setgroups is denied in a mapped ns
            prefix += [f"--user=/proc/self/fd/{fds['user']}", "--preserve-credentials"]
        prefix += [
            f"--mount=/proc/self/fd/{fds['mnt']}",
            f"--pid=/proc/self/fd/{fds['pid']}",
            f"--wd=/proc/self/fd/{fds['cwd']}",
            "--",
            iso.setpriv,
            "--bounding-set=-all",
            "--inh-caps=-all",
            "--no-new-privs",
            "--",
        ]
        return [*prefix, *argv], tuple(fds.values())

    def limit(self) -> Callable[[], None]:
        """Runs in each child before it enters: the instance's process limit."""
        procs, max_pids = self._cgroup_procs, self.max_pids

        def apply() -> None:
            if procs is not None:
                os.write(procs, b"0")
            resource.setrlimit(resource.RLIMIT_NPROC, (max_pids, max_pids))

        return apply

    async def spawn(
        self,
        argv: list[str],
        env: dict[str, str],
        *,
        stdin: int | None = asyncio.subprocess.PIPE,
        stdout: int | None = asyncio.subprocess.PIPE,
        stderr: int | None = asyncio.subprocess.PIPE,
    ) -> asyncio.subprocess.Process:
        """Run `argv` inside (raises OSError when the instance does not run)."""
        if not self.running or not self._fds:
            raise OSError("the instance is not running")
        wrapped, fds = self.wrap(argv)
        return await asyncio.create_subprocess_exec(
            *wrapped,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=env,
            pass_fds=fds,
            start_new_session=True,
            preexec_fn=self.limit(),
        )

    def open_pty(self) -> tuple[int, int]:
        """(master, slave) of a new pty of the instance's own devpts, so `tty` names it inside.
        The slave comes from the master (TIOCGPTPEER): no path of the instance is followed."""
        if self.init_pid is None:
            raise OSError("the instance is not running")
        master = os.open(f"/proc/{self.init_pid}/root/dev/pts/ptmx", os.O_RDWR | os.O_NOCTTY)
        try:
            fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
            slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
        except OSError:
            os.close(master)
            raise
        return master, int(slave)

    async def run_quietly(self, argv: list[str], env: dict[str, str], what: str) -> int | None:
        """Run `argv` inside with no stdio (it writes its own logs, inside) and wait for it;
        None, logged, when it could not start."""
        try:
            proc = await self.spawn(
                argv,
                env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
        except OSError as exc:
            log.warning("emulator: %s did not start: %s", what, exc)
            return None
        return await proc.wait()

    def processes(self) -> list[int]:
        """Host pids of every process inside (for views and tests)."""
        if not self.running or self.init_pid is None:
            return []
        try:
            ns = os.stat(f"/proc/{self.init_pid}/ns/pid").st_ino
        except OSError:
            return []
        found = []
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    # a process's own namespace: what it was started in (nsenter'd ones too)
                    if os.stat(f"/proc/{entry.name}/ns/pid").st_ino == ns:
                        found.append(int(entry.name))
        return sorted(found)

    # -- the end -------------------------------------------------------------------------------
    def kill_all(self) -> None:
        """End PID 1, hence every process inside; returns once they are gone. (A PID 1 that
        ended by itself is forgotten here too: `exited` is said once.)"""
        if self._init is not None:
            self._kill(self._init)
        self._close()
        self._init = None

    def _kill(self, init: subprocess.Popen[bytes]) -> None:
        if init.poll() is not None:
            return
        self._killed = True
        # PID 1 alone: it ends after everyone inside, then unshare reaps it and ends. (Killing
        # unshare too would leave PID 1 a zombie of the host's init.) PID 1 cannot have been
        # reaped, hence its pid reused, while unshare lives.
        target = self.init_pid if self.init_pid is not None else init.pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(target, signal.SIGKILL)
        try:
            init.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log.warning("emulator: the sandbox of %s did not end within 10 s", self.path)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(init.pid, signal.SIGKILL)  # --kill-child: PID 1 goes with it
            with contextlib.suppress(subprocess.TimeoutExpired):
                init.wait(timeout=5)

    def _close(self) -> None:
        """Let go of what the last run held (PID 1 itself is `kill_all`'s)."""
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()
        if self._lifeline is not None:
            with contextlib.suppress(OSError):
                os.close(self._lifeline)
            self._lifeline = None
        if self._cgroup_procs is not None:
            with contextlib.suppress(OSError):
                os.close(self._cgroup_procs)
            self._cgroup_procs = None
        if self._init is not None and self._init.poll() is not None:
            for stream in (self._init.stdout, self._init.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        if self._cgroup is not None and not self.running:
            _remove_cgroup(self._cgroup)
            self._cgroup = None
        if not self.running:
            self.init_pid = None

    def remove(self) -> None:
        self.kill_all()
        for folder in (self.path, self.control, self.layers):
            _remove_tree(folder)

    # -- the process limit -------------------------------------------------------------------
    def _make_cgroup(self) -> None:
        parent = self.isolation.cgroup
        if parent is None:
            return
        path = parent / f"{self.path.name}-{time.monotonic_ns()}"
        try:
            path.mkdir()
            (path / "pids.max").write_text(f"{self.max_pids}\n")
            self._cgroup_procs = os.open(path / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            log.warning("emulator: no pids cgroup for %s: %s", self.path.name, exc)
            _remove_cgroup(path)
            return
        self._cgroup = path

    def _enter_cgroup(self) -> None:
        if self._cgroup_procs is not None:
            os.write(self._cgroup_procs, b"0")


def _remove_tree(folder: Path) -> None:
    """rmtree (fd-based: never follows a symlink), also through the mode-000 folders overlayfs
    leaves in its work folder."""

    def unlock(_func: object, path: str, _exc: object) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(path), 0o700)
            os.chmod(path, 0o700, follow_symlinks=False)

    shutil.rmtree(folder, onerror=unlock)
    shutil.rmtree(folder, ignore_errors=True)


def _remove_cgroup(path: Path) -> None:
    for _ in range(50):  # the last exits are reaped a moment after PID 1's
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.01)


async def _readline(stream: IO[bytes], timeout: float) -> bytes:
    """One line from a pipe of a child, without blocking the loop."""
    fd = stream.fileno()
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bytes] = loop.create_future()
    buf = bytearray()
    os.set_blocking(fd, False)

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        buf.extend(data)
        if (not data or b"\n" in buf) and not done.done():
            done.set_result(bytes(buf.split(b"\n", 1)[0]))

    loop.add_reader(fd, readable)
    try:
        return await asyncio.wait_for(done, timeout)
    except TimeoutError:
        return b"error no answer from the sandbox's init within %d s" % int(timeout)
    finally:
        loop.remove_reader(fd)
        os.set_blocking(fd, True)


def _sleep_script() -> str:
    sleep = shutil.which("sleep", path=TOOL_PATH) or "/bin/sleep"
    awk = shutil.which("awk", path=TOOL_PATH) or "awk"
    return SLEEP.replace("@SLEEP@", sleep).replace("@AWK@", awk)


def write_script(path: Path, text: str) -> None:
    """Atomically, and only when it changed: a command running it never sees half a file."""
    if path.exists() and path.read_text() == text:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o755)
    tmp.replace(path)


def try_sandbox(isolation: Isolation, folder: Path) -> None:
    """Make a sandbox in `folder` and run a command in it, or raise SandboxError (the probe)."""
    box = Sandbox(folder / "C.probe", isolation)
    box.prepare(None)
    try:
        box.start_sync()
        argv, fds = box.wrap(["/bin/sh", "-c", "echo ok > /tmp/probe && cat /tmp/probe"])
        result = subprocess.run(
            argv,
            pass_fds=fds,
            capture_output=True,
            timeout=20,
            check=False,
            env={"PATH": INSIDE_PATH},
        )
        if result.returncode != 0 or result.stdout.strip() != b"ok":
            why = result.stderr.decode(errors="replace").strip().splitlines()
            raise SandboxError(f"a command cannot run in the sandbox: {why[-1] if why else '?'}")
    finally:
        box.kill_all()
