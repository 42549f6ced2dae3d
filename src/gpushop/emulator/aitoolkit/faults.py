"""Faults the emulator arms for this trainer (control API `trainer_fault`), through the
instance's control folder: `/.emulator/trainer_fault.json` = {"fail": "oom"|"crash"|"ssh_drop",
"at_step": N, "id": ...}, read at each step (a stat when unchanged); it is read-only here, so a
fault that fired is recorded in `/.emulator/state/trainer_fault.fired` (its id) and fires once,
even across a restart of the trainer. An `ssh_drop` touches `/.emulator/state/ssh_drop`, which
the emulator watches."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

CONTROL = Path("/.emulator")
FAULT_FILE = "trainer_fault.json"
FIRED_FILE = "trainer_fault.fired"
SSH_DROP_MARKER = "ssh_drop"


class Faults:
    def __init__(self, control: Path = CONTROL) -> None:
        self.path = control / FAULT_FILE
        self.state = control / "state"
        self._seen: float | None = None
        self._fault: tuple[str, int, str] | None = None

    def due(self, step: int) -> str | None:
        """The fault that fires at `step` (recorded as fired), if any."""
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            self._fault = self._seen = None
            return None
        if mtime != self._seen:
            self._seen = mtime
            try:
                data = json.loads(self.path.read_text())
                self._fault = (str(data["fail"]), int(data["at_step"]), str(data.get("id", "")))
            except (OSError, ValueError, KeyError, TypeError):
                self._fault = None
            if self._fault is not None and self._fired() == self._fault[2]:
                self._fault = None
        if self._fault is None or step < self._fault[1]:
            return None
        fail, _, fault_id = self._fault
        self._fault = None
        with contextlib.suppress(OSError):
            (self.state / FIRED_FILE).write_text(fault_id)
        return fail

    def _fired(self) -> str | None:
        try:
            return (self.state / FIRED_FILE).read_text()
        except OSError:
            return None

    def drop_ssh(self) -> None:
        with contextlib.suppress(OSError):
            (self.state / SSH_DROP_MARKER).touch()
