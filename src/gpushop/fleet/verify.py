"""Does the host have what its offer advertised? Users report hosts whose CUDA or GPUs are not
what the listing says (anchors, pain point 15): check once SSH answers, before anything runs.

One SSH command gathers the facts; parsing and judging are pure functions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gpushop import gpus
from gpushop.models import Offer

PROBE_COMMAND = (
    "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader,nounits;"
    " echo '--cuda--'; nvidia-smi | grep -o 'CUDA Version: *[0-9.]*';"
    " echo '--disk--'; df -Pk \"${WORKSPACE:-$HOME}\" | tail -n 1"
)
MEMORY_TOLERANCE = 0.05  # nvidia-smi MiB vs the listing's MB: allow rounding and reserved memory


@dataclass(frozen=True)
class HostFacts:
    gpu_names: list[str]
    memory_mb: list[float]
    driver: str | None
    cuda: float | None
    free_disk_gb: float | None


def parse_probe(output: str) -> HostFacts:
    gpu_part, _, rest = output.partition("--cuda--")
    cuda_part, _, disk_part = rest.partition("--disk--")
    names: list[str] = []
    memory: list[float] = []
    driver = None
    for line in gpu_part.strip().splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) < 3:
            continue
        names.append(cells[0])
        try:
            memory.append(float(re.sub(r"[^0-9.]", "", cells[1])))
        except ValueError:
            memory.append(0.0)
        driver = cells[2]
    match = re.search(r"CUDA Version:\s*([0-9.]+)", cuda_part)
    cuda = float(match.group(1)) if match else None
    free = None
    fields = disk_part.split()
    if len(fields) >= 4 and fields[3].isdigit():
        free = int(fields[3]) / 1e6  # 1K blocks -> GB
    return HostFacts(names, memory, driver, cuda, free)


def problems(
    facts: HostFacts, offer: Offer, *, min_cuda: float | None, disk_gb: float
) -> list[str]:
    """What the host lacks compared with its offer and the query; empty when it is honest."""
    out: list[str] = []
    if len(facts.gpu_names) != offer.num_gpus:
        out.append(f"{len(facts.gpu_names)} GPU(s) instead of {offer.num_gpus}")
    wrong = {n for n in facts.gpu_names if gpus.canonical(n) != offer.gpu_name}
    if wrong:
        out.append(f"GPU {', '.join(sorted(wrong))} instead of {offer.gpu_name}")
    advertised_mb = offer.gpu_ram_gb * 1000
    short = [m for m in facts.memory_mb if m < advertised_mb * (1 - MEMORY_TOLERANCE)]
    if short:
        out.append(f"{min(short) / 1000:.1f} GB of VRAM instead of {offer.gpu_ram_gb:.1f} GB")
    wanted_cuda = max(c for c in (offer.cuda, min_cuda, 0.0) if c is not None)
    if facts.cuda is None:
        out.append("no CUDA version reported")
    elif facts.cuda + 1e-9 < wanted_cuda:
        out.append(f"CUDA {facts.cuda:g} instead of {wanted_cuda:g}")
    if facts.free_disk_gb is not None and facts.free_disk_gb < disk_gb * 0.9:
        out.append(f"{facts.free_disk_gb:.0f} GB free disk instead of {disk_gb:g} GB")
    return out
