"""How many processes one instance's sandbox may hold at once (a fork bomb stops there).

Root: a pids cgroup per instance, under the emulator's own (isolation.py), which PID 1 and every
command join before they exec. Not root: RLIMIT_NPROC, which the kernel counts per user
namespace, so each instance's count is its own (root is exempt from it, hence the cgroup)."""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("gpushop.emulator")


class ProcessLimit:
    def __init__(self, parent: Path | None, name: str, max_pids: int) -> None:
        self.parent = parent
        self.name = name
        self.max_pids = max_pids
        self.cgroup: Path | None = None
        self._procs: int | None = None  # cgroup.procs, held open for children to join

    def open(self) -> None:
        """A fresh cgroup for the next run of the instance (where cgroups can be had)."""
        self.close()
        if self.parent is None:
            return
        path = self.parent / f"{self.name}-{time.monotonic_ns()}"
        try:
            path.mkdir()
            (path / "pids.max").write_text(f"{self.max_pids}\n")
            self._procs = os.open(path / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            log.warning("emulator: no pids cgroup for %s: %s", self.name, exc)
            remove_cgroup(path)
            return
        self.cgroup = path

    def for_init(self) -> Callable[[], None] | None:
        """What PID 1's process runs before it execs (no rlimit: an unprivileged user
        namespace takes its creator's as the ceiling of every process of that user)."""
        procs = self._procs
        if procs is None:
            return None

        def join() -> None:
            os.write(procs, b"0")

        return join

    def for_command(self) -> Callable[[], None]:
        """What each command's process runs before it enters the sandbox."""
        procs, max_pids = self._procs, self.max_pids

        def apply() -> None:
            if procs is not None:
                os.write(procs, b"0")
            resource.setrlimit(resource.RLIMIT_NPROC, (max_pids, max_pids))

        return apply

    def close(self, *, remove: bool = True) -> None:
        if self._procs is not None:
            with contextlib.suppress(OSError):
                os.close(self._procs)
            self._procs = None
        if remove and self.cgroup is not None:
            remove_cgroup(self.cgroup)
            self.cgroup = None


def remove_cgroup(path: Path) -> None:
    for _ in range(50):  # the last exits are reaped a moment after PID 1's
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.01)
