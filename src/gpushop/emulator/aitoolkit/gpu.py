"""The GPU the trainer sees (the sandbox's simulated nvidia-smi, so a `lying_host` fault lies to
it too), how much memory a job needs and how fast a step runs on it."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from dataclasses import dataclass

from .config import Job
from .errors import JOB_FRAMES, JobError

# Seconds per step of a FLUX LoRA at 1024 px, batch 1, quantized (typical 2025 figures);
# first match on the driver's product name wins, so longer names come first.
STEP_SECONDS: tuple[tuple[str, float], ...] = (
    ("H200", 0.75),
    ("H100", 0.85),
    ("A100", 1.25),
    ("5090", 1.1),
    ("4090", 1.5),
    ("6000 Ada", 1.45),
    ("L40S", 1.6),
    ("L40", 1.8),
    ("A6000", 2.4),
    ("A5000", 3.2),
    ("A4000", 4.5),
    ("A40", 2.5),
    ("3090", 2.6),
    ("4080", 2.0),
    ("3080", 3.0),
    ("L4", 4.2),
    ("V100", 4.0),
    ("T4", 9.0),
)
DEFAULT_STEP_SECONDS = 2.5
CONTEXT_GIB = 0.6  # CUDA context and allocator slack: never available to tensors


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_mib: int
    count: int

    @property
    def total_gib(self) -> float:
        return self.memory_mib / 1024.0


def detect() -> Gpu:
    """Read the facts baked into the simulated nvidia-smi (no process needed), or ask it."""
    path = shutil.which("nvidia-smi")
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    if line.startswith("FACTS = "):
                        facts = json.loads(line.removeprefix("FACTS = "))
                        return Gpu(facts["name"], int(facts["memory_mib"]), int(facts["count"]))
        except (OSError, ValueError, KeyError, UnicodeDecodeError):
            pass
        query = [path, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"]
        result = subprocess.run(query, capture_output=True, text=True, check=False)
        lines = [line for line in result.stdout.splitlines() if "," in line]
        if result.returncode == 0 and lines:
            name, memory = lines[0].rsplit(",", 1)
            return Gpu(name.strip(), int(float(memory)), len(lines))
    raise JobError(
        "RuntimeError",
        "Found no NVIDIA driver on your system. Please check that you have an NVIDIA GPU and "
        "installed a driver from http://www.nvidia.com/Download/index.aspx",
    )


def needed_gib(job: Job) -> float:
    """Peak VRAM of a training step: FLUX ~22 GB quantized at 1024 px, ~34 GB without."""
    scale = (job.max_resolution / 1024.0) ** 2 * job.batch_size
    base = (18.5 if job.quantize else 30.5) if job.is_flux else 8.0
    per_scale = 3.5 if job.is_flux else 2.0
    return base + per_scale * scale - (1.5 if job.low_vram else 0.0)


def seconds_per_step(gpu: Gpu, job: Job) -> float:
    base = float(next((s for key, s in STEP_SECONDS if key in gpu.name), DEFAULT_STEP_SECONDS))
    side = job.max_resolution / 1024.0
    scale = max(0.3, side * side) * math.pow(job.batch_size, 0.9)
    factor = (1.0 if job.quantize else 0.9) * (1.15 if job.low_vram else 1.0)
    if not job.is_flux:
        factor *= 0.35
    return base * scale * factor * job.grad_accum


def check_device(gpu: Gpu, job: Job) -> None:
    if job.device >= gpu.count:
        raise JobError(
            "torch.AcceleratorError",
            "CUDA error: invalid device ordinal\nCUDA kernel errors might be asynchronously "
            "reported at some other API call, so the stacktrace below might be incorrect.\n"
            "For debugging consider passing CUDA_LAUNCH_BLOCKING=1",
        )


def out_of_memory(gpu: Gpu, need_gib: float, device: int = 0) -> str:
    """PyTorch's message when an allocation does not fit."""
    total = gpu.total_gib
    in_use = total - 0.04
    allocated = in_use - 0.45
    ask = max(0.07, need_gib - (total - CONTEXT_GIB))
    return (
        f"CUDA out of memory. Tried to allocate {ask:.2f} GiB. GPU {device} has a total "
        f"capacity of {total:.2f} GiB of which {0.04 * 1024:.2f} MiB is free. "
        "Including non-PyTorch memory, "
        f"this process has {in_use:.2f} GiB memory in use. Of the allocated memory "
        f"{allocated:.2f} GiB is allocated by PyTorch, and {0.41 * 1024:.2f} MiB is reserved by "
        "PyTorch but unallocated. If reserved but unallocated memory is large try setting "
        "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See "
        "documentation for Memory Management  "
        "(https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"
    )


def fits(gpu: Gpu, job: Job) -> bool:
    return needed_gib(job) <= gpu.total_gib - CONTEXT_GIB


OOM_FRAMES = (
    *JOB_FRAMES,
    (
        "jobs/process/BaseSDTrainProcess.py",
        1790,
        "run",
        "self.sd.set_device_state_preset('train')",
    ),
    (
        "toolkit/stable_diffusion_model.py",
        2871,
        "set_device_state",
        "self.unet.to(self.device_torch)",
    ),
)
