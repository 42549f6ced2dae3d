"""A resumed run's log, read until the recipe tells where the run really started."""

from __future__ import annotations

from collections.abc import Callable

from gpushop.jobs.contract import ResumePlan
from gpushop.store import Job

RESUME_WATCH_BYTES = 16_000_000  # a resumed run that has not said where it started by then


class ResumeWatch:
    """A resumed run's log, from its start until the recipe tells where the run started."""

    def __init__(self, resumed_at: Callable[[str], int | None], plan: ResumePlan) -> None:
        self.resumed_at = resumed_at
        self.plan = plan
        self.found: int | None = None
        self.done = False
        self._seen = 0
        self._partial = b""  # the line being written (bars are redrawn with \r)

    def feed(self, data: bytes) -> bool:
        """True once, when it is known (or when too much log said nothing): report it then.
        The recipe reads whole lines, each once."""
        if self.done:
            return False
        self._seen += len(data)
        text = self._partial + data
        end = max(text.rfind(b"\n"), text.rfind(b"\r")) + 1
        self._partial = text[end:]
        if end:
            self.found = self.resumed_at(text[:end].decode(errors="replace"))
        self.done = self.found is not None or self._seen > RESUME_WATCH_BYTES
        return self.done


def plan_of(job: Job) -> ResumePlan | None:
    raw = job.details.get("resume_plan")
    return ResumePlan.from_json(raw) if isinstance(raw, dict) else None
