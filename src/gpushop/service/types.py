"""The domain's records and protocols as the faces see them (re-exported, not copied)."""

from __future__ import annotations

from gpushop.jobs.runner import Hooks, Output
from gpushop.jobs.spec import JobSpec, Transfer
from gpushop.recipes.aitoolkit import Progress
from gpushop.store import Job, Rental

__all__ = ["Hooks", "Job", "JobSpec", "Output", "Progress", "Rental", "Transfer"]
