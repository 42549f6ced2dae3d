"""What the job runner and its callers agree on: how it tells a face what happens (``Output``),
what a recipe adds (``Hooks``, ``ResumePlan``), a service job's extras (``ServiceRun``), why it
stopped, and where a job's local log lives."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gpushop.config import data_dir
from gpushop.errors import GpushopError
from gpushop.jobs.spec import JobSpec, Transfer
from gpushop.store import Job, User

LEASE_LOST = "lease lost"
HANDED_OFF = "handed off"
CANCELLED_BY_USER = "cancelled by its user"


class JobFailed(GpushopError):
    exit_code = 1


class JobLeaseLost(GpushopError):
    """The process stopped driving the job without ending it: another took it over (its lease
    lapsed), or it was handed off (a replica shutting down)."""

    def __init__(self, job_id: str, why: str) -> None:
        super().__init__(f"job {job_id}: {why}; another process drives it now")
        self.why = why


@dataclass(frozen=True)
class ServiceRun:
    """A job of the team service: its log also in the store, its rentals its user's, and a
    cancel asked through any replica obeyed."""

    user: User | None = None
    on_log: Callable[[str], None] | None = None
    # the service's own folders, kept out of what its users read (notes say "jobs/<id>/...")
    hidden_paths: tuple[str, ...] = ()


class RentalLost(GpushopError):
    """The instance went away (outbid, host offline, destroyed) while the job ran."""


class Output(Protocol):
    def message(self, text: str) -> None: ...

    def log(self, data: bytes) -> None: ...

    def progress(self, label: str) -> Callable[[int, int], None]: ...


@dataclass(frozen=True)
class ResumePlan:
    """What a resumed job gets back on its new rental, and where it should pick up."""

    files: list[Transfer]  # each a local file -> the remote directory it goes into, in order
    step: int | None = None  # where the job should resume (a recipe's unit, e.g. a step)
    reached: int | None = None  # how far the lost run had got, in the same unit
    note: str = ""  # for the user, e.g. "reached step 637; resuming from step 600 (...)"

    def to_json(self) -> dict[str, object]:
        return {
            "files": [{"local": t.local, "remote": t.remote} for t in self.files],
            "step": self.step,
            "reached": self.reached,
            "note": self.note,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ResumePlan:
        files = [Transfer(str(f["local"]), str(f["remote"])) for f in data.get("files", [])]
        return cls(files, data.get("step"), data.get("reached"), str(data.get("note", "")))


@dataclass
class Hooks:
    """Recipe-specific knowledge the generic runner lacks."""

    # what a lost rental cost in progress, e.g. "lost 237 steps (resuming at step 1000)"
    lost: Callable[[Job, Path], str | None] = lambda job, log_path: None
    # problems with the downloaded outputs (an empty list: all good)
    verify: Callable[[Job], list[str]] = lambda job: []
    # what a resume uploads (job, spec, local log); None: every synced download, back where
    # the job wrote it
    resume: Callable[[Job, JobSpec, Path], ResumePlan | None] = lambda job, spec, log: None
    # where a resumed run says it started, from its log so far (None: it has not said yet)
    resumed_at: Callable[[str], int | None] = lambda text: None
    extra: dict[str, object] = field(default_factory=dict)


def job_dir(job_id: str) -> Path:
    """Where the job's local log lives (kept on failure, and after success too)."""
    path = data_dir() / "jobs" / job_id
    path.mkdir(parents=True, exist_ok=True)
    return path


def log_path(job_id: str) -> Path:
    return job_dir(job_id) / "job.log"
