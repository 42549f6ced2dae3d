"""Faults the emulator arms for this trainer (control API `trainer_fault`), through files in
`$EMULATOR_SANDBOX/.emulator/` (outside /workspace and /app): `trainer_fault.json` =
{"fail": "oom"|"crash"|"ssh_drop", "at_step": N}, read at each step (a stat when unchanged) and
deleted once it fires; an `ssh_drop` touches `ssh_drop`, which the emulator watches."""

from __future__ import annotations

import json
from pathlib import Path

FAULT_FILE = "trainer_fault.json"
SSH_DROP_MARKER = "ssh_drop"


class Faults:
    def __init__(self, sandbox: str | None) -> None:
        self.folder = Path(sandbox) / ".emulator" if sandbox else None
        self._seen: float | None = None
        self._fault: tuple[str, int] | None = None

    def due(self, step: int) -> str | None:
        """The fault that fires at `step` (consumed), if any."""
        if self.folder is None:
            return None
        path = self.folder / FAULT_FILE
        try:
            mtime = path.stat().st_mtime
        except OSError:
            self._fault = self._seen = None
            return None
        if mtime != self._seen:
            self._seen = mtime
            try:
                data = json.loads(path.read_text())
                self._fault = (str(data["fail"]), int(data["at_step"]))
            except (OSError, ValueError, KeyError, TypeError):
                self._fault = None
        if self._fault is None or step < self._fault[1]:
            return None
        fail = self._fault[0]
        self._fault = None
        path.unlink(missing_ok=True)
        return fail

    def drop_ssh(self) -> None:
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            (self.folder / SSH_DROP_MARKER).touch()
