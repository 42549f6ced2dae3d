"""`runtype: "args"` (dstack; `vastai create instance --args`): the container runs the image with
`onstart` as its entrypoint and `args` as its arguments.

- The entrypoint is `shlex.split(onstart) + args` (dstack: `/bin/sh` and `["-c", CMD]`), run
  inside the instance's sandbox like any command (PATH first looks in /.emulator/bin, so `python`
  and `sleep` are the emulator's), at every start of the container: create, start after a stop,
  start after it exited. Without `onstart` the args alone are the command (emulated images bring
  no entrypoint of their own); with neither, the container exits at once: `No command specified`.
- Its stdout and stderr, interleaved as written, are the container's log (container_log.py).
- When it exits, the container exits: every process left inside ends, and the instance shows
  `exited` (state.container_exited) until a start or a stop; the daemon log says the exit code.
- No sshd runs unless the entrypoint starts one: the published `22/tcp` port stays closed (the
  connection is refused) until a process of the container runs **`sshd`** (the emulator's shim
  in /.emulator/bin, first on PATH: `sshd`, `sshd -D`, `exec sshd -D -p 22`...). The shim leaves
  a marker in /.emulator/state; seeing it, the emulator opens the instance's SSH endpoint (the
  same as for ssh runtypes: its keys, sandbox and port) until the container stops. `sshd -D`
  stays in the foreground, as OpenSSH's does; without `-D` it returns at once (daemonized).
  `/usr/sbin/sshd` by its full path is the host's program, where installed, not the shim.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gpushop.emulator.container_log import ContainerLog
from gpushop.emulator.sandbox import Sandbox, SandboxError
from gpushop.emulator.sandbox_files import STATE, write_script

if TYPE_CHECKING:
    from gpushop.emulator.state import EmulatorState, Instance

log = logging.getLogger("gpushop.emulator")

ARGS = "args"
SSHD_MARKER = "sshd"  # in the control folder's state/ (/.emulator/state inside)
NO_COMMAND = "docker: Error response from daemon: No command specified.\n"
NO_COMMAND_CODE = 125
PUMP_READS = 16
SSHD_SHIM = f"""#!/bin/sh
# Simulated by the gpushop emulator: running sshd opens the instance's SSH endpoint (the emulator
# serves it on the port published for 22/tcp). -D stays in the foreground, as OpenSSH's does.
foreground=
for a in "$@"; do
  case "$a" in
    -t|-T) exit 0 ;;
    -D) foreground=1 ;;
  esac
done
: > {STATE}/{SSHD_MARKER}
if [ -n "$foreground" ]; then
  exec /.emulator/bin/sleep infinity
fi
exit 0
"""


def is_args(runtype: str) -> bool:
    return ARGS in runtype.split()


def command(onstart: str | None, args: list[str]) -> list[str]:
    """The entrypoint and its arguments."""
    try:
        entry = shlex.split(onstart) if onstart else []
    except ValueError:
        entry = [onstart] if onstart else []
    return [*entry, *args]


@dataclass
class Entrypoint:
    """The main process of an `args` container, and its log."""

    log: ContainerLog = field(default_factory=ContainerLog)
    run: float | None = None  # run_requested_at of the run it was started for

    def started_for(self, run: float) -> bool:
        return self.run == run

    @staticmethod
    def prepare(sandbox: Sandbox) -> None:
        """The sshd shim, and no marker of an earlier run (unlink: nothing is followed)."""
        write_script(sandbox.bin / "sshd", SSHD_SHIM)
        marker = sandbox.state / SSHD_MARKER
        with contextlib.suppress(OSError):
            marker.unlink()
        with contextlib.suppress(OSError):
            marker.rmdir()

    @staticmethod
    def sshd_started(sandbox: Sandbox) -> bool:
        return os.path.lexists(sandbox.state / SSHD_MARKER)

    async def run_main(self, sandbox: Sandbox, argv: list[str], env: dict[str, str]) -> int:
        """Start PID 1 and the entrypoint, log its output, and return its exit status once it
        exits (as a shell reports it: 128 + the signal that killed it)."""
        await sandbox.start()
        if not argv:
            self.log.write(NO_COMMAND.encode())
            return NO_COMMAND_CODE
        read_end, write_end = os.pipe()
        try:
            proc = await sandbox.spawn(
                argv, env, stdin=asyncio.subprocess.DEVNULL, stdout=write_end, stderr=write_end
            )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        loop = asyncio.get_running_loop()
        os.set_blocking(read_end, False)
        loop.add_reader(read_end, self._pump, read_end)
        try:
            code = await proc.wait()
            self._pump(read_end)  # what it wrote before it exited is in the pipe
        finally:
            loop.remove_reader(read_end)
            os.close(read_end)
        return code if code >= 0 else 128 - code

    def _pump(self, fd: int) -> None:
        for _ in range(PUMP_READS):  # then back to the loop: a chatty process blocks no one
            try:
                data = os.read(fd, 65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                with contextlib.suppress(ValueError, RuntimeError):
                    asyncio.get_running_loop().remove_reader(fd)
                return
            self.log.write(data)


async def main(entry: Entrypoint, sandbox: Sandbox, state: EmulatorState, inst: Instance) -> None:
    """One run of the container: the entrypoint until it exits, then the instance `exited`
    (unless a stop, a start or a destroy came first: this task is then cancelled or stale)."""
    run = inst.run_requested_at
    argv = command(inst.onstart, inst.args)
    env = sandbox.environment(state.instance_environment(inst))
    entry.log.event(f"container C.{inst.id} started: {shlex.join(argv)}")
    try:
        code = await entry.run_main(sandbox, argv, env)
    except (SandboxError, OSError) as exc:
        log.warning("emulator: the entrypoint of instance %d did not start: %s", inst.id, exc)
        entry.log.write(f"emulator: the entrypoint did not start: {exc}\n".encode())
        code = 127
    entry.log.event(f"container C.{inst.id} exited with code {code}")
    if state.instances.get(inst.id) is inst and inst.run_requested_at == run:
        error = "Error: " if code else ""
        state.container_exited(
            inst, state.now(), f"{error}container exited: its entrypoint exited with code {code}"
        )
