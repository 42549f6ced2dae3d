"""The per-instance sandbox: the container's filesystem, and every process the instance runs.

On the host an instance has two folders: `C.<id>/`, its root filesystem (the container's `/`:
`root/` is HOME, `workspace/`, `app/`, `tmp/`, `var/`, plus empty mount points), and
`C.<id>.emulator/`, the emulator's control folder (`bin/` with nvidia-smi, python, sleep...;
trainer faults) with `state/` inside, where the instance's programs leave word for the
emulator. While it runs, its PID 1 (sandbox_init.py) holds a user, a PID and a mount namespace
in which `/` is `C.<id>/`, the host's other top-level folders are read-only (`/etc` has the
instance's own changes on top, kept in `C.<id>.layers/`), `/root`, `/home`, `/tmp`, `/var` and
`/run` of the host are hidden, and `/.emulator` is the control folder, read-only but for
`/.emulator/state`. PID 1 starts with the instance's first SSH session or its onstart.

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
import select
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from gpushop.emulator import nvidia_smi, sandbox_files
from gpushop.emulator.isolation import TOOL_PATH, Isolation, under_hidden
from gpushop.emulator.process_limit import ProcessLimit
from gpushop.emulator.sandbox_files import (
    CONTAINERS_SOCKET,
    INSIDE_PATH,
)

log = logging.getLogger("gpushop.emulator")

PASSED_THROUGH = ("LANG", "LC_ALL", "TZ")  # from the emulator's environment; nothing else
INIT = Path(__file__).with_name("sandbox_init.py")
STARTUP_TIMEOUT_S = 20.0
END_TIMEOUT_S = 10  # PID 1 ends within this after SIGKILL, or unshare is killed too
SLOW_END_S = 2.0  # an end slower than this is logged
MAX_PIDS = 1024
TIOCSPTLCK = 0x40045431  # unlock a pty's slave
TIOCGPTPEER = 0x5441  # open a pty's slave from its master


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
        self.limit = ProcessLimit(isolation.cgroup, path.name, max_pids)
        self.hide = tuple(p for p in hide if not under_hidden(p))
        self.containers = containers
        self._init: subprocess.Popen[bytes] | None = None
        self._lifeline: int | None = None
        self.init_pid: int | None = None
        self._fds: dict[str, int] = {}  # user, mnt, pid namespaces; cwd (HOME inside)
        self._killed = False
        self._starting: asyncio.Lock | None = None

    @property
    def workspace(self) -> Path:
        return self.path / "workspace"

    # -- layout ------------------------------------------------------------------------------
    def prepare(self, facts: nvidia_smi.GpuFacts | None, image: str = "") -> None:
        """The control folder (again after a restart: files are kept); the image's files on
        the first start only, before anything of the instance ever ran."""
        sandbox_files.lay_out(self.path, self.control, image)
        if facts is not None:
            self.write_gpus(facts)

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
        self.limit.open()
        try:
            self._init = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(read_end,),
                env={"PATH": TOOL_PATH, "LC_ALL": "C"},
                start_new_session=True,
                preexec_fn=self.limit.for_init(),
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
                self._end_blocking(init)  # start-up failed: nothing of it ran yet
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
            preexec_fn=self.limit.for_command(),
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
    # Ending PID 1 ends the namespace, but the kernel lets PID 1 go only once every process
    # inside is reaped, which on a loaded machine can take a while: `end` waits without
    # blocking the loop (other instances and requests go on), `kill_all` for callers off it.
    async def end(self) -> None:
        """End PID 1, hence every process inside; returns once they are gone. (A PID 1 that
        ended by itself is forgotten here too: `exited` is said once.)

        A start under way (a reset or a stop that comes while the emulator's tick boots the
        machine) is let finish first: ending its PID 1 underneath would close the pipe its
        "ready" comes through, and the start would wait out STARTUP_TIMEOUT_S, holding the
        runtime's lock, hence every request, that long."""
        if self._starting is not None:
            async with self._starting:
                pass
        init = self._init
        if init is not None and self._signal_end(init):
            started = time.monotonic()
            if not await _ended(init, END_TIMEOUT_S):
                self._force_end(init)
                await _ended(init, END_TIMEOUT_S / 2)
            self._say_slow(started)
        self._close()
        self._init = None

    def kill_all(self) -> None:
        """`end` for code off the loop (shutdown after the loop, the probe)."""
        if self._init is not None:
            self._end_blocking(self._init)
        self._close()
        self._init = None

    def _end_blocking(self, init: subprocess.Popen[bytes]) -> None:
        if self._signal_end(init):
            started = time.monotonic()
            try:
                init.wait(timeout=END_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._force_end(init)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    init.wait(timeout=END_TIMEOUT_S / 2)
            self._say_slow(started)

    def _signal_end(self, init: subprocess.Popen[bytes]) -> bool:
        """SIGKILL to PID 1 alone; False when it had already ended. PID 1 ends after everyone
        inside, then unshare reaps it and ends. (Killing unshare too would leave PID 1 a zombie
        of the host's init.) PID 1 cannot have been reaped, hence its pid reused, while unshare
        lives."""
        if init.poll() is not None:
            return False
        self._killed = True
        target = self.init_pid if self.init_pid is not None else init.pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(target, signal.SIGKILL)
        return True

    def _force_end(self, init: subprocess.Popen[bytes]) -> None:
        log.warning(
            "emulator: the sandbox of %s did not end within %d s (left inside: %s)",
            self.path,
            END_TIMEOUT_S,
            self._left_inside(),
        )
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(init.pid, signal.SIGKILL)  # --kill-child: PID 1 goes with it

    def _say_slow(self, started: float) -> None:
        took = time.monotonic() - started
        if took > SLOW_END_S:
            log.warning("emulator: the sandbox of %s took %.1f s to end", self.path, took)

    def _left_inside(self) -> str:
        """What keeps a dying PID 1 waiting: processes still in its namespace, with their
        state and parent (a zombie whose parent outside has not reaped it)."""
        found = []
        for pid in self.processes():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{pid}/stat").read_text()
                name, rest = stat.split("(", 1)[1].rsplit(")", 1)
                fields = rest.split()
                found.append(f"{pid} {name} state {fields[0]} parent {fields[1]}")
        return "; ".join(found[:10]) or "nothing"

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
        if self._init is not None and self._init.poll() is not None:
            for stream in (self._init.stdout, self._init.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        self.limit.close(remove=not self.running)
        if not self.running:
            self.init_pid = None

    def remove(self) -> None:
        self.kill_all()
        for folder in (self.path, self.control, self.layers):
            sandbox_files.remove_tree(folder)

    # -- the process limit -------------------------------------------------------------------


async def _ended(process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait for `process` to end (polled: it is not the loop's child), at most `timeout`."""
    deadline = time.monotonic() + timeout
    pause = 0.002
    while process.poll() is None:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.05)
    return True


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


def try_sandbox(isolation: Isolation, folder: Path) -> None:
    """Make a sandbox in `folder` and run a command in it, or raise SandboxError (the probe)."""
    box = Sandbox(folder / "C.probe", isolation)
    box.prepare(None)
    try:
        box.start_sync()
        argv, fds = box.wrap(["/bin/sh", "-c", "echo ok > /tmp/probe && cat /tmp/probe"])
        try:
            result = subprocess.run(
                argv,
                pass_fds=fds,
                capture_output=True,
                timeout=STARTUP_TIMEOUT_S,
                check=False,
                env={"PATH": INSIDE_PATH},
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SandboxError(f"a command cannot run in the sandbox: {exc}") from None
        if result.returncode != 0 or result.stdout.strip() != b"ok":
            why = result.stderr.decode(errors="replace").strip().splitlines()
            raise SandboxError(f"a command cannot run in the sandbox: {why[-1] if why else '?'}")
    finally:
        box.kill_all()
