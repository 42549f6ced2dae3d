"""Per-phase timings by GPU model, image and provider: what a watchdog or a timeout should
allow (the seeds ask for lifecycle timings to set them from facts, not guesses)."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

# the lifecycle in order; phases not listed sort after these
PHASES = (
    "offer_chosen",
    "created",
    "running",
    "ssh_ready",
    "upload",
    "run",
    "download",
    "released",
)


def p90(values: list[float]) -> float:
    """The nearest-rank 90th percentile (one of the values, never an interpolation)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def summarize(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str | None, str | None, str | None, str], list[float]] = defaultdict(list)
    for row in rows:
        key = (row.get("gpu_name"), row.get("image"), row.get("provider"), row["phase"])
        groups[key].append(float(row["seconds"]))
    order = {phase: i for i, phase in enumerate(PHASES)}

    def sort_key(key: tuple[str | None, str | None, str | None, str]) -> tuple[Any, ...]:
        gpu, image, provider, phase = key
        return (gpu or "", image or "", provider or "", order.get(phase, len(PHASES)), phase)

    return [
        {
            "gpu_name": gpu,
            "image": image,
            "provider": provider,
            "phase": phase,
            "count": len(values),
            "median_s": round(statistics.median(values), 3),
            "p90_s": round(p90(values), 3),
        }
        for (gpu, image, provider, phase), values in sorted(
            groups.items(), key=lambda kv: sort_key(kv[0])
        )
    ]
