"""The domain's records and protocols as the faces see them (re-exported, not copied)."""

from __future__ import annotations

from gpushop.fleet.provision import UpOptions
from gpushop.jobs.contract import Hooks, Output
from gpushop.jobs.spec import JobSpec, Transfer
from gpushop.recipes.aitoolkit import Progress
from gpushop.recipes.dataset import DatasetError
from gpushop.recipes.log_stream import LogStream, Redraw
from gpushop.store import Job, Rental, Store, User, UserQuotaExceeded

__all__ = [
    "DatasetError",
    "Hooks",
    "Job",
    "JobSpec",
    "LogStream",
    "Output",
    "Progress",
    "Redraw",
    "Rental",
    "Store",
    "Transfer",
    "UpOptions",
    "User",
    "UserQuotaExceeded",
]
