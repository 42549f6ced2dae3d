"""How long an image takes to load on a host: its size over the host's `inet_down`, plus boot.

The real loading phase is dominated by `docker pull` (DOCS: ~30 s with a cached image, minutes to
hours for big ones), so the emulator derives it from a table of typical compressed image sizes
and the offer's advertised download bandwidth. Hosts keep what they pulled: a later instance of
the same image on the same machine (or a restart of a stopped instance) only pays the boot time.
A few popular base images are pre-cached on a seeded share of machines, as on the real market.
"""

from __future__ import annotations

import hashlib

# Repository (no tag) -> GB pulled. Prefix matches count ("vastai/pytorch" covers its tags).
IMAGE_GB: dict[str, float] = {
    "ostris/aitoolkit": 15.0,
    "pytorch/pytorch": 8.0,
    "vastai/pytorch": 9.0,
    "vastai/base-image": 4.0,
    "vastai/comfy": 12.0,
    "vastai/kohya": 14.0,
    "nvidia/cuda": 3.5,
    "vllm/vllm-openai": 10.0,
    "ghcr.io/huggingface/text-generation-inference": 11.0,
    "tensorflow/tensorflow": 6.0,
    "ubuntu": 0.03,
    "debian": 0.05,
    "alpine": 0.005,
    "python": 0.4,
}
UNKNOWN_IMAGE_GB = 5.0
DEVEL_FACTOR = 1.5  # "-devel" CUDA tags carry the toolchain

# (repository, share of machines that have it cached from earlier renters)
PRECACHED: tuple[tuple[str, float], ...] = (("vastai/base-image", 0.5), ("pytorch/pytorch", 0.25))


def repository(image: str) -> str:
    """`pytorch/pytorch:2.5.1-cuda12.4` -> `pytorch/pytorch` (digest and tag dropped)."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name = name[:colon]
    return name.removeprefix("docker.io/").removeprefix("library/")


def image_gb(image: str) -> float:
    """Typical download size of `image` in GB."""
    repo = repository(image)
    size = UNKNOWN_IMAGE_GB
    best = ""
    for known, gb in IMAGE_GB.items():
        if (repo == known or repo.startswith(known + "/")) and len(known) > len(best):
            best, size = known, gb
    name = image.split("@", 1)[0]
    tag = name[name.rfind(":") + 1 :] if name.rfind(":") > name.rfind("/") else ""
    if "devel" in tag:
        size *= DEVEL_FACTOR
    return size


def pull_seconds(image: str, inet_down_mbps: float) -> float:
    """Seconds to pull `image` at the host's advertised bandwidth (Mbit/s; GB = 8000 Mbit)."""
    return image_gb(image) * 8000.0 / max(inet_down_mbps, 1.0)


def precached(machine_id: int, image: str, seed: int) -> bool:
    """Whether the machine had the image before we came (a stable function of the seed)."""
    repo = repository(image)
    for known, share in PRECACHED:
        if repo == known:
            digest = hashlib.sha256(f"{seed}:{machine_id}:{known}".encode()).digest()
            return digest[0] / 256.0 < share
    return False
