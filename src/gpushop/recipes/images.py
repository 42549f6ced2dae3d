"""Container images the training recipes run in, and the CUDA each needs from the host.

**Minimum CUDA of ``ostris/aitoolkit``: 13.0.** Its base is
``nvidia/cuda:13.0.3-runtime-ubuntu24.04`` (anchors (c)). Every ``nvidia/cuda`` image sets
``NVIDIA_REQUIRE_CUDA=cuda>=13.0``, and the NVIDIA container runtime refuses to start it on a
host whose driver supports less ("OCI runtime create failed ... unsatisfied condition:
cuda>=13.0"); ai-toolkit's own install at HEAD takes torch from the ``cu130`` index too. So the
recipe asks for hosts whose ``cuda_max_good`` (the highest CUDA the driver supports; a driver
>= 580) is at least 13.0. That leaves a minority of the market (hosts lag behind), which is why
a PyTorch-base alternative on CUDA 12.8 is listed: the image's own torch is kept and ai-toolkit
is cloned and installed at start (best effort: HEAD recommends the cu130 torch; pin an
ai-toolkit commit if a release breaks it).

For any other image the CUDA is read from its tag when the tag names it
(``pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime``, ``nvidia/cuda:12.8.1-runtime-ubuntu22.04``,
``vastai/pytorch:...-cuda-12.8.1-...``); otherwise it is unknown and no CUDA floor is applied
(the plan says so).

Sizes are compressed pull sizes in GB (what the disk holds at least), rounded up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

AITOOLKIT_REPO = "https://github.com/ostris/ai-toolkit.git"


@dataclass(frozen=True, slots=True)
class RecipeImage:
    image: str  # full reference, with tag
    min_cuda: float | None  # the host's cuda_max_good must be at least this
    size_gb: float  # what pulling it puts on the disk
    workdir: str  # where ai-toolkit is (its run.py)
    setup: str = ""  # shell run once before the first job (empty: ready as shipped)
    setup_gb: float = 0.0  # disk the setup adds (pip packages, the clone)
    python: str = "python"  # the interpreter that has ai-toolkit's requirements
    note: str = ""

    @property
    def repository(self) -> str:
        return repository(self.image)

    def run_command(self, config_path: str) -> str:
        """The command that trains with ``config_path`` (an absolute path on the instance)."""
        return f"cd {self.workdir} && {self.python} run.py {config_path}"


AITOOLKIT = RecipeImage(
    image="ostris/aitoolkit:latest",
    min_cuda=13.0,
    size_gb=15.0,
    workdir="/app/ai-toolkit",
    note="ai-toolkit's own image (base nvidia/cuda:13.0.3-runtime-ubuntu24.04)",
)

PYTORCH_AITOOLKIT = RecipeImage(
    image="pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime",
    min_cuda=12.8,
    size_gb=8.0,
    workdir="/workspace/ai-toolkit",
    setup=(
        "apt-get update -qq && apt-get install -y -qq git >/dev/null && "
        f"git clone --depth 1 {AITOOLKIT_REPO} /workspace/ai-toolkit && "
        "cd /workspace/ai-toolkit && pip install -q -r requirements.txt"
    ),
    setup_gb=6.0,
    note="PyTorch base + git clone + pip install of ai-toolkit (opens CUDA 12.8 hosts)",
)

# The images the flux-lora recipe knows, the default first.
TRAINING_IMAGES: tuple[RecipeImage, ...] = (AITOOLKIT, PYTORCH_AITOOLKIT)
DEFAULT_IMAGE = AITOOLKIT

_UNKNOWN_IMAGE_GB = 10.0  # a CUDA + PyTorch image is 5-15 GB
_CUDA_IN_TAG = re.compile(r"cuda[-_]?(\d{2})\.(\d)")


def repository(image: str) -> str:
    """``pytorch/pytorch:2.5.1-cuda12.4`` -> ``pytorch/pytorch`` (tag and digest dropped)."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def cuda_from_tag(image: str) -> float | None:
    """The CUDA version an image's tag names, e.g. 12.4 for ``...:2.5.1-cuda12.4-cudnn9``.

    >>> cuda_from_tag("pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime")
    12.4
    >>> cuda_from_tag("nvidia/cuda:13.0.3-runtime-ubuntu24.04")
    13.0
    >>> cuda_from_tag("ubuntu:24.04") is None
    True
    """
    name = image.split("@", 1)[0]
    tag = name[len(repository(name)) + 1 :]
    if repository(name) == "nvidia/cuda":
        match = re.match(r"(\d{2})\.(\d)", tag)
        return float(f"{match.group(1)}.{match.group(2)}") if match else None
    match = _CUDA_IN_TAG.search(tag)
    return float(f"{match.group(1)}.{match.group(2)}") if match else None


def recipe_image(image: str | None) -> RecipeImage:
    """The recipe's view of ``image`` (None: the default). Known images come from the table;
    others keep their name, a CUDA floor from their tag if it names one, a guessed size, and
    ai-toolkit is installed in them at start as in the PyTorch alternative."""
    if image is None:
        return DEFAULT_IMAGE
    ref = image if ":" in image.rsplit("/", 1)[-1] or "@" in image else f"{image}:latest"
    for known in TRAINING_IMAGES:
        if known.image == ref:
            return known
    if repository(ref) == AITOOLKIT.repository:
        # another tag of ai-toolkit's image: same layout, same base
        return replace(AITOOLKIT, image=ref)
    return RecipeImage(
        image=ref,
        min_cuda=cuda_from_tag(ref),
        size_gb=_UNKNOWN_IMAGE_GB,
        workdir=PYTORCH_AITOOLKIT.workdir,
        setup=PYTORCH_AITOOLKIT.setup,
        setup_gb=PYTORCH_AITOOLKIT.setup_gb,
        note="not a known training image: ai-toolkit is installed at start",
    )
