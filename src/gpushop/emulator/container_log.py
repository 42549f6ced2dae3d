"""The container's log (what `docker logs` shows, what `vastai logs` fetches).

- `runtype: "args"`: the entrypoint's stdout and stderr, interleaved as written, captured by the
  emulator from a pipe (entrypoint.py) and kept here, in memory: the newest `MAX_BYTES` of it,
  across stops and starts (the same container), forgotten with the container (destroy, recycle).
- the other runtypes (ssh, jupyter...): the output of `onstart`, which the instance writes to
  `/var/log/onstart.log` (opened inside, hosts.py), read back from the host without following
  anything the instance planted (inside_files.py).

The daemon's log (`daemon_logs`) is the emulator's own lines about the container: started,
exited with its code, stopped.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from gpushop.emulator.inside_files import read_inside

MAX_BYTES = 1 << 20  # of output kept per container (the oldest goes first)
MAX_DAEMON_LINES = 200
ONSTART_LOG = "/var/log/onstart.log"  # inside


class ContainerLog:
    def __init__(self) -> None:
        self._out = bytearray()
        self._daemon: list[str] = []

    def write(self, data: bytes) -> None:
        self._out += data
        if len(self._out) > MAX_BYTES:
            del self._out[: len(self._out) - MAX_BYTES]

    def output(self) -> str:
        return self._out.decode("utf-8", "replace")

    def event(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._daemon.append(f"{stamp} {text}\n")
        del self._daemon[:-MAX_DAEMON_LINES]

    def daemon(self) -> str:
        return "".join(self._daemon)


def onstart_output(root: Path) -> str:
    """The tail of the instance's /var/log/onstart.log ("" when it has none)."""
    data = read_inside(root, ONSTART_LOG, MAX_BYTES, from_end=True)
    return data.decode("utf-8", "replace") if data else ""


def select(text: str, tail: int | None, pattern: str | None) -> str:
    """The last `tail` lines, then those matching `pattern` (as `docker logs --tail N | grep
    PATTERN`: a regular expression, or the plain text when it is not one)."""
    lines = text.splitlines(keepends=True)
    if tail is not None:
        lines = lines[-tail:] if tail > 0 else []
    if pattern:
        try:
            rx = re.compile(pattern)
            lines = [line for line in lines if rx.search(line)]
        except re.error:
            lines = [line for line in lines if pattern in line]
    return "".join(lines)
