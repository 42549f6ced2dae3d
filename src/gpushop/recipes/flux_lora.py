"""The ``flux-lora`` recipe: a FLUX.1 LoRA trained with ostris/ai-toolkit, as pure functions.

``FluxLoraSpec`` holds what the user asked for (validated: bad values are usage errors, exit 2),
``build_config`` writes ai-toolkit's job config with the key names of its example
``config/examples/train_lora_flux_24gb.yaml`` (schnell: ``..._schnell_24gb.yaml``),
``estimate_disk`` and ``estimate_run`` size the rental, and ``TrainPlan`` renders what will be
rented and what it should cost before anything is. Nothing here does network or SSH I/O.

What the recipe asks of an offer (``OfferNeeds``), from the seeds and anchors (c):

- VRAM >= 24 GB per GPU (ai-toolkit: "at least 24GB of VRAM to train FLUX.1", with ``quantize``;
  48 GB without it), reliability >= 0.98, the best price at market;
- a host whose ``cuda_max_good`` meets the image's CUDA (``recipes.images``: 13.0 for
  ``ostris/aitoolkit``);
- disk: the larger of the seeds' 32 GB and the estimate below, never less.

Disk estimate (GB = 10^9 bytes), each part explained by ``DiskEstimate.explain()``:

- the image as pulled (``ostris/aitoolkit`` ~15 GB) plus what its setup installs;
- the model's weights in the Hugging Face cache. ai-toolkit loads the diffusers sub-folders only:
  FLUX.1-dev = transformer 23.8 + T5-XXL text encoder 9.5 + CLIP-L 0.25 + VAE 0.17 = 33.8 GB;
  schnell is the same size plus its training adapter (counted as 1.5 GB); an unknown model is
  counted as FLUX.1-dev;
- the dataset as uploaded, and its latent cache (``cache_latents_to_disk``: 16 channels at 1/8
  scale, counted as 1.1 MB per image per 1024 px resolution, scaled by area);
- checkpoints: a FLUX.1 LoRA saved in float16 is ~10.75 MB per rank (172 MB at rank 16), times
  (``max_step_saves_to_keep`` + the final file + one being written), plus ``optimizer.pt``
  (adamw8bit state, counted as twice the LoRA);
- samples: 1.5 MB per sample image (prompts x sampling rounds);
- a 20 % margin on the sum (logs, pip and HF temp files, filesystem overhead), rounded up.

Time estimate (``estimate_run``): seconds per training step at 1024 px, batch 1, rank 16,
``quantize`` and gradient checkpointing, per GPU model (``SECONDS_PER_STEP``). These are
indicative figures gathered from ai-toolkit users' reports of FLUX.1-dev LoRA runs (RTX 4090
~1.5 s/step, RTX 3090 ~2.5, RTX A6000 ~2.2, L40S ~1.2, A100 ~1.0, H100 ~0.6) and scaled by
relative bf16 throughput for the other models; an unknown GPU is counted as an RTX 3090. A step at
resolution r costs ``0.2 + 0.8 * (r / 1024)^2`` of a 1024 px step (a fixed part plus a part that
grows with the pixels), averaged over the resolutions (ai-toolkit cycles through the buckets),
times the batch size. Added: pulling the image and downloading the weights at the host's
advertised bandwidth (capped at 2 Gb/s, 800 Mb/s when unknown), 4 minutes to load and quantize
(+5 with ``low_vram``), latent caching, sampling (a sampling step counted as 0.35 of a training
step) and saving. ai-toolkit trains on one GPU (``device: cuda:0``): more GPUs do not help.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import yaml

from gpushop.errors import UsageError
from gpushop.gpus import canonical
from gpushop.recipes.images import DEFAULT_IMAGE, RecipeImage, recipe_image

if TYPE_CHECKING:
    from gpushop.models import Offer, OfferQuery
    from gpushop.recipes.dataset import Dataset

RECIPE = "flux-lora"
DEFAULT_MODEL = "black-forest-labs/FLUX.1-dev"
SCHNELL_MODEL = "black-forest-labs/FLUX.1-schnell"
SCHNELL_ADAPTER = "ostris/FLUX.1-schnell-training-adapter"
DEFAULT_RESOLUTIONS = (512, 768, 1024)
MIN_RESOLUTION, MAX_RESOLUTION = 256, 2048

MIN_VRAM_GB = 24.0  # with quantize (ai-toolkit README, anchors (c))
MIN_VRAM_UNQUANTIZED_GB = 48.0  # the bf16 transformer alone is 23.8 GB
MIN_RELIABILITY = 0.98
DISK_FLOOR_GB = 32.0  # the seeds' disk
DISK_MARGIN = 0.20

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")

DEFAULT_PROMPTS_TRIGGER = (
    "[trigger], a portrait photo in soft natural light",
    "[trigger] walking down a busy street at night, neon lights, 35mm photo",
    "an oil painting of [trigger], museum lighting",
    "[trigger] holding a sign that says 'gpushop'",
)
DEFAULT_PROMPTS = (
    "woman with red hair, playing chess at the park, bomb going off in the background",
    "a woman holding a coffee cup, in a beanie, sitting at a cafe",
    "a bear building a log cabin in the snow covered mountains",
    "a man holding a sign that says, 'this is a sign'",
)


def is_schnell(model: str) -> bool:
    return "schnell" in model.lower()


def needs_hf_token(model: str) -> bool:
    """Whether downloading ``model`` needs ``HF_TOKEN``: the black-forest-labs FLUX.1 models
    other than schnell are gated (accept the licence on Hugging Face first). Local paths and
    other repositories are assumed public."""
    org, _, repo = model.strip().partition("/")
    return org.lower() == "black-forest-labs" and bool(repo) and not is_schnell(repo)


def parse_resolutions(text: str) -> tuple[int, ...]:
    """``"512,768,1024"`` -> ``(512, 768, 1024)``; bad values are one-line usage errors."""
    values: list[int] = []
    for part in text.replace(" ", ",").split(","):
        if not part:
            continue
        try:
            values.append(int(part))
        except ValueError:
            raise UsageError(f"--resolution {text!r}: use pixel sizes like 512,768,1024") from None
    if not values:
        raise UsageError("--resolution needs at least one size, e.g. 1024")
    return tuple(values)


@dataclass(frozen=True, slots=True)
class FluxLoraSpec:
    """A FLUX LoRA training run as asked for; validated on creation (``UsageError``)."""

    name: str
    trigger: str | None = None
    steps: int = 2000
    rank: int = 16
    lr: float = 1e-4
    resolutions: tuple[int, ...] = DEFAULT_RESOLUTIONS
    model: str = DEFAULT_MODEL
    save_every: int = 250
    sample_every: int | None = 250  # None: no samples while training
    max_saves: int = 4  # max_step_saves_to_keep
    batch_size: int = 1
    quantize: bool = True
    low_vram: bool = False
    prompts: tuple[str, ...] | None = None  # None: four defaults (with [trigger] when set)
    seed: int = 42

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise UsageError("; ".join(problems))
        # normalised: sorted, without repeats
        object.__setattr__(self, "resolutions", tuple(sorted(set(self.resolutions))))

    def problems(self) -> list[str]:
        out: list[str] = []
        if not _NAME.fullmatch(self.name) or ".." in self.name or self.name.endswith("."):
            out.append(
                f"--name {self.name!r}: use 1-64 letters, digits, '.', '_' or '-' "
                "(it becomes a folder and file name)"
            )
        if self.trigger is not None and (
            not self.trigger.strip()
            or len(self.trigger) > 100
            or any(c in self.trigger for c in "\r\n\t\x00")
        ):
            out.append("--trigger must be a word or short phrase on one line")
        if not 1 <= self.steps <= 100_000:
            out.append("--steps must be between 1 and 100000")
        if not 1 <= self.rank <= 256:
            out.append("--rank must be between 1 and 256")
        if not (0 < self.lr < 1) or math.isnan(self.lr):
            out.append("--lr must be between 0 and 1, e.g. 1e-4")
        if not self.resolutions:
            out.append("--resolution needs at least one size")
        for r in self.resolutions:
            if isinstance(r, bool) or not isinstance(r, int):
                out.append(f"--resolution {r!r}: sizes are whole pixels")
            elif not MIN_RESOLUTION <= r <= MAX_RESOLUTION:
                out.append(
                    f"--resolution {r}: must be between {MIN_RESOLUTION} and {MAX_RESOLUTION}"
                )
        if not self.model.strip() or not (
            _MODEL.fullmatch(self.model) or self.model.startswith(("/", "./", "~"))
        ):
            out.append(f"--model {self.model!r}: give a Hugging Face repo (owner/name) or a path")
        if self.save_every < 1:
            out.append("save_every must be at least 1")
        if self.sample_every is not None and self.sample_every < 1:
            out.append("sample_every must be at least 1 (or None for no samples)")
        if self.max_saves < 1:
            out.append("max_saves must be at least 1")
        if not 1 <= self.batch_size <= 16:
            out.append("batch size must be between 1 and 16")
        if self.prompts is not None and not all(p.strip() for p in self.prompts):
            out.append("sample prompts must not be empty")
        return out

    @property
    def schnell(self) -> bool:
        return is_schnell(self.model)

    @property
    def sample_prompts(self) -> tuple[str, ...]:
        if self.prompts is not None:
            return self.prompts
        return DEFAULT_PROMPTS_TRIGGER if self.trigger else DEFAULT_PROMPTS

    @property
    def sample_steps(self) -> int:
        return 4 if self.schnell else 20

    @property
    def sampling_rounds(self) -> int:
        """How many times samples are drawn: at step 0, every ``sample_every``, and at the end."""
        if self.sample_every is None:
            return 0
        rounds = 1 + self.steps // self.sample_every
        return rounds + (1 if self.steps % self.sample_every else 0)

    @property
    def min_vram_gb(self) -> float:
        return MIN_VRAM_GB if self.quantize else MIN_VRAM_UNQUANTIZED_GB

    def describe(self) -> str:
        model = self.model.rsplit("/", 1)[-1]
        res = "/".join(str(r) for r in self.resolutions)
        trigger = f", trigger {self.trigger!r}" if self.trigger else ""
        return f"{model}, {self.steps} steps, rank {self.rank}, lr {self.lr:g}, {res} px{trigger}"


# -- the ai-toolkit config ------------------------------------------------------------------


def build_config(
    spec: FluxLoraSpec, dataset_dir_remote: str, training_folder_remote: str
) -> dict[str, Any]:
    """ai-toolkit's job config for ``spec``. The LoRA and its checkpoints land in
    ``<training_folder_remote>/<spec.name>/``; the dataset is read from ``dataset_dir_remote``."""
    process: dict[str, Any] = {
        "type": "sd_trainer",
        "training_folder": training_folder_remote,
        "device": "cuda:0",
    }
    if spec.trigger:
        process["trigger_word"] = spec.trigger
    train: dict[str, Any] = {
        "batch_size": spec.batch_size,
        "steps": spec.steps,
        "gradient_accumulation_steps": 1,
        "train_unet": True,
        "train_text_encoder": False,
        "gradient_checkpointing": True,
        "noise_scheduler": "flowmatch",
        "optimizer": "adamw8bit",
        "lr": spec.lr,
    }
    if spec.sample_every is None:
        train["disable_sampling"] = True
    train["ema_config"] = {"use_ema": True, "ema_decay": 0.99}
    train["dtype"] = "bf16"
    model: dict[str, Any] = {"name_or_path": spec.model}
    if spec.schnell:
        model["assistant_lora_path"] = SCHNELL_ADAPTER
    model["is_flux"] = True
    model["quantize"] = spec.quantize
    if spec.low_vram:
        model["low_vram"] = True
    process.update(
        {
            "network": {"type": "lora", "linear": spec.rank, "linear_alpha": spec.rank},
            "save": {
                "dtype": "float16",
                "save_every": spec.save_every,
                "max_step_saves_to_keep": spec.max_saves,
                "push_to_hub": False,
            },
            "datasets": [
                {
                    "folder_path": dataset_dir_remote,
                    "caption_ext": "txt",
                    "caption_dropout_rate": 0.05,
                    "shuffle_tokens": False,
                    "cache_latents_to_disk": True,
                    "resolution": list(spec.resolutions),
                }
            ],
            "train": train,
            "model": model,
            "sample": {
                "sampler": "flowmatch",  # must match train.noise_scheduler
                "sample_every": spec.sample_every or spec.steps,
                "width": 1024,
                "height": 1024,
                "prompts": list(spec.sample_prompts),
                "neg": "",
                "seed": spec.seed,
                "walk_seed": True,
                "guidance_scale": 1 if spec.schnell else 4,
                "sample_steps": spec.sample_steps,
            },
        }
    )
    return {
        "job": "extension",
        "config": {"name": spec.name, "process": [process]},
        "meta": {"name": "[name]", "version": "1.0"},
    }


def config_yaml(config: dict[str, Any]) -> str:
    """The config as YAML ai-toolkit reads (key order kept, floats that load back as floats)."""
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False, allow_unicode=True)


# -- disk -----------------------------------------------------------------------------------

# Hugging Face repo -> (GB in the cache, what that is)
MODEL_WEIGHTS_GB: dict[str, tuple[float, str]] = {
    DEFAULT_MODEL: (33.8, "transformer 23.8 + T5-XXL 9.5 + CLIP-L 0.25 + VAE 0.17"),
    SCHNELL_MODEL: (35.3, "transformer 23.8 + T5-XXL 9.5 + CLIP-L/VAE 0.4 + training adapter 1.5"),
}
LORA_MB_PER_RANK = 10.75  # float16 FLUX.1 LoRA on every transformer linear: 172 MB at rank 16
LATENT_MB_1024 = 1.1  # one cached latent of a 1024 px image
SAMPLE_IMAGE_MB = 1.5


@dataclass(frozen=True, slots=True)
class DiskPart:
    label: str
    gb: float
    why: str


@dataclass(frozen=True, slots=True)
class DiskEstimate:
    parts: tuple[DiskPart, ...]
    margin: float = DISK_MARGIN
    floor_gb: float = DISK_FLOOR_GB

    @property
    def subtotal_gb(self) -> float:
        return sum(p.gb for p in self.parts)

    @property
    def margin_gb(self) -> float:
        return self.subtotal_gb * self.margin

    @property
    def estimate_gb(self) -> int:
        """The estimate with its margin, rounded up to whole GB."""
        return math.ceil(round(self.subtotal_gb + self.margin_gb, 6))

    @property
    def disk_gb(self) -> int:
        """The disk to rent: the larger of the floor and the estimate."""
        return max(math.ceil(self.floor_gb), self.estimate_gb)

    @property
    def from_estimate(self) -> bool:
        return self.estimate_gb > self.floor_gb

    def why(self) -> str:
        """One line: the disk chosen and why."""
        if self.from_estimate:
            return (
                f"{self.disk_gb} GB: the estimated need ({self.estimate_gb} GB) is above "
                f"the {self.floor_gb:g} GB default"
            )
        return (
            f"{self.disk_gb} GB: the default, enough for the estimated need ({self.estimate_gb} GB)"
        )

    def explain(self) -> list[str]:
        """The reason line, then one line per part, the margin and the total."""
        lines = [self.why()]
        width = max(len(p.label) for p in self.parts) if self.parts else 0
        for p in self.parts:
            lines.append(f"  {p.label:<{width}}  {p.gb:7.2f} GB  {p.why}")
        lines.append(
            f"  {'margin':<{width}}  {self.margin_gb:7.2f} GB  {self.margin:.0%} for logs, "
            "temporary files and filesystem overhead"
        )
        lines.append(f"  {'total':<{width}}  {self.estimate_gb:7d} GB  rounded up")
        return lines


def model_weights_gb(model: str) -> tuple[float, str]:
    """GB the model's weights take in the HF cache, and what that is made of."""
    if model in MODEL_WEIGHTS_GB:
        return MODEL_WEIGHTS_GB[model]
    size, parts = MODEL_WEIGHTS_GB[SCHNELL_MODEL if is_schnell(model) else DEFAULT_MODEL]
    return size, f"unknown model, counted as FLUX.1 ({parts})"


def lora_size_gb(rank: int) -> float:
    return LORA_MB_PER_RANK * rank / 1000.0


def estimate_disk(
    spec: FluxLoraSpec,
    dataset: Dataset,
    image: RecipeImage | str | None = None,
    *,
    floor_gb: float = DISK_FLOOR_GB,
) -> DiskEstimate:
    """What the run will put on the instance's disk, part by part (see the module docstring)."""
    img = image if isinstance(image, RecipeImage) else recipe_image(image)
    parts = [DiskPart("image", img.size_gb, f"{img.image} as pulled")]
    if img.setup_gb:
        parts.append(DiskPart("setup", img.setup_gb, "ai-toolkit clone and its pip packages"))
    weights, what = model_weights_gb(spec.model)
    parts.append(DiskPart("model", weights, f"{spec.model} in the HF cache: {what}"))
    n = len(dataset.images)
    parts.append(DiskPart("dataset", dataset.total_bytes / 1e9, f"{n} images and captions"))
    area = sum((r / 1024) ** 2 for r in spec.resolutions)
    latents = n * area * LATENT_MB_1024 / 1000.0
    parts.append(
        DiskPart("latent cache", latents, f"{n} images x {len(spec.resolutions)} resolutions")
    )
    lora = lora_size_gb(spec.rank)
    files = spec.max_saves + 2
    parts.append(
        DiskPart(
            "checkpoints",
            lora * (files + 2),
            f"{files} x {lora * 1000:.0f} MB LoRA (rank {spec.rank}: {spec.max_saves} kept,"
            " the final, one being written) + optimizer.pt",
        )
    )
    images = spec.sampling_rounds * len(spec.sample_prompts)
    parts.append(DiskPart("samples", images * SAMPLE_IMAGE_MB / 1000.0, f"{images} sample images"))
    return DiskEstimate(tuple(parts), floor_gb=floor_gb)


def estimate_disk_gb(
    spec: FluxLoraSpec, dataset: Dataset, image: RecipeImage | str | None = None
) -> DiskEstimate:
    """Alias of ``estimate_disk`` (its ``disk_gb`` is the number to rent)."""
    return estimate_disk(spec, dataset, image)


# -- time -----------------------------------------------------------------------------------

# Canonical GPU model -> seconds per step at 1024 px, batch 1, rank 16, quantize (indicative:
# see the module docstring for where these come from).
SECONDS_PER_STEP: dict[str, float] = {
    "B200": 0.4,
    "H200": 0.55,
    "H100": 0.6,
    "GH200": 0.6,
    "RTX PRO 6000": 0.9,
    "A100": 1.0,
    "A800": 1.0,
    "RTX 5090": 1.1,
    "L40S": 1.2,
    "RTX 6000 Ada": 1.3,
    "L40": 1.4,
    "RTX 4090": 1.5,
    "RTX 4090 D": 1.7,
    "RTX 5000 Ada": 2.0,
    "RTX A6000": 2.2,
    "RTX 3090 Ti": 2.3,
    "A40": 2.4,
    "RTX 3090": 2.5,
    "Quadro RTX 8000": 3.5,
    "RTX A5000": 3.2,
    "A10": 3.6,
    "L4": 4.5,
}
UNKNOWN_GPU_AS = "RTX 3090"
DEFAULT_BANDWIDTH_MBPS = 800.0
MAX_BANDWIDTH_MBPS = 2000.0  # Docker Hub and the HF CDN rarely deliver more to one host
LOAD_S = 240.0
LOW_VRAM_EXTRA_S = 300.0
SETUP_S = 300.0  # clone + pip install on a PyTorch base
LATENT_S_1024 = 0.3  # VAE encode of one 1024 px image on an RTX 4090
SAMPLE_STEP_FACTOR = 0.35  # one sampling step vs one training step
SAVE_S = 5.0


def resolution_factor(resolutions: Sequence[int]) -> float:
    """Cost of an average step over ``resolutions`` relative to a 1024 px step."""
    return sum(0.2 + 0.8 * (r / 1024) ** 2 for r in resolutions) / len(resolutions)


@dataclass(frozen=True, slots=True)
class RunEstimate:
    gpu_name: str
    seconds_per_step: float  # at the spec's resolutions and batch size
    gpu_known: bool
    parts: tuple[tuple[str, float], ...]  # (what, seconds)

    @property
    def seconds(self) -> float:
        return sum(s for _, s in self.parts)

    @property
    def hours(self) -> float:
        return self.seconds / 3600.0

    def max_duration_s(self, factor: float = 1.5, slack_s: float = 1800.0) -> float:
        """A rental max duration that leaves room for a slower host than estimated."""
        return self.seconds * factor + slack_s

    def explain(self) -> list[str]:
        rate = f"{self.seconds_per_step:.2f} s/step on {self.gpu_name}"
        if not self.gpu_known:
            rate += f" (unknown GPU: counted as an {UNKNOWN_GPU_AS})"
        lines = [f"~{format_duration(self.seconds)} in all ({rate})"]
        width = max(len(p) for p, _ in self.parts)
        lines += [f"  {p:<{width}}  {format_duration(s):>7}" for p, s in self.parts]
        return lines

    def summary(self) -> str:
        return ", ".join(f"{p} {format_duration(s)}" for p, s in self.parts if s >= 1)


def format_duration(seconds: float) -> str:
    """``5400`` -> ``1h30m``, ``95`` -> ``1m35s``, ``42`` -> ``42s``.

    >>> format_duration(5400), format_duration(95), format_duration(42)
    ('1h30m', '1m35s', '42s')
    """
    s = round(seconds)
    if s >= 3600:
        h, m = divmod(round(s / 60), 60)
        return f"{h}h{m:02d}m"
    if s >= 60:
        m, rest = divmod(s, 60)
        return f"{m}m{rest:02d}s"
    return f"{s}s"


def seconds_per_step(gpu_name: str) -> tuple[float, bool]:
    """(seconds per 1024 px step, whether the GPU is in the table)."""
    name = canonical(gpu_name)
    if name in SECONDS_PER_STEP:
        return SECONDS_PER_STEP[name], True
    return SECONDS_PER_STEP[UNKNOWN_GPU_AS], False


def _transfer_s(gb: float, mbps: float | None) -> float:
    rate = min(mbps or DEFAULT_BANDWIDTH_MBPS, MAX_BANDWIDTH_MBPS)
    return gb * 8000.0 / max(rate, 1.0)


def estimate_run(
    spec: FluxLoraSpec,
    gpu_name: str,
    *,
    images: int | None = None,
    inet_down_mbps: float | None = None,
    image: RecipeImage | str | None = None,
) -> RunEstimate:
    """How long the run takes on one ``gpu_name``, from rent to the final save (indicative).

    ``images`` is the dataset's size (20 when not given), ``inet_down_mbps`` the host's download
    bandwidth (the offer's; 800 Mb/s when unknown)."""
    img = image if isinstance(image, RecipeImage) else recipe_image(image)
    base, known = seconds_per_step(gpu_name)
    speed = base / SECONDS_PER_STEP["RTX 4090"]  # relative to the GPU the small figures are for
    step = base * resolution_factor(spec.resolutions) * spec.batch_size
    n = 20 if images is None else images
    parts: list[tuple[str, float]] = [("image pull", _transfer_s(img.size_gb, inet_down_mbps))]
    if img.setup:
        parts.append(("ai-toolkit install", SETUP_S))
    weights, _ = model_weights_gb(spec.model)
    parts.append(("model download", _transfer_s(weights, inet_down_mbps)))
    parts.append(("model load", LOAD_S + (LOW_VRAM_EXTRA_S if spec.low_vram else 0.0)))
    area = sum((r / 1024) ** 2 for r in spec.resolutions)
    parts.append(("latent cache", n * area * LATENT_S_1024 * speed))
    parts.append(("training", spec.steps * step))
    sample_images = spec.sampling_rounds * len(spec.sample_prompts)
    parts.append(("samples", sample_images * spec.sample_steps * base * SAMPLE_STEP_FACTOR))
    parts.append(("saves", (spec.steps // spec.save_every + 1) * SAVE_S))
    return RunEstimate(canonical(gpu_name), step, known, tuple(parts))


# -- what to rent ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OfferNeeds:
    """The recipe's floor for an offer; ``apply`` raises a user's query to it."""

    min_vram_gb: float
    min_reliability: float
    min_cuda: float | None
    disk_gb: float

    def apply(self, query: OfferQuery) -> OfferQuery:
        """``query`` with each minimum raised to the recipe's where the user asked for less
        (the reliability floor is the user's: the CLI defaults it to the recipe's 0.98)."""
        vram = max(query.min_vram_gb or 0.0, self.min_vram_gb)
        cuda = query.min_cuda
        if self.min_cuda is not None:
            cuda = max(cuda or 0.0, self.min_cuda)
        return replace(
            query, min_vram_gb=vram, min_cuda=cuda, disk_gb=max(query.disk_gb, self.disk_gb)
        )


def offer_needs(
    spec: FluxLoraSpec, disk: DiskEstimate, image: RecipeImage | str | None = None
) -> OfferNeeds:
    img = image if isinstance(image, RecipeImage) else recipe_image(image)
    return OfferNeeds(spec.min_vram_gb, MIN_RELIABILITY, img.min_cuda, float(disk.disk_gb))


@dataclass(frozen=True, slots=True)
class TrainPlan:
    """What will be rented and what it should cost; shown before renting."""

    spec: FluxLoraSpec
    dataset: Dataset
    offer: Offer
    disk: DiskEstimate
    run: RunEstimate
    image: RecipeImage = field(default=DEFAULT_IMAGE)
    template_hash: str | None = None

    @property
    def cost_usd(self) -> float:
        """Estimated cost: the offer's $/h (with its disk) times the estimated hours."""
        return self.offer.price_per_hour * self.run.hours

    @property
    def needs_hf_token(self) -> bool:
        return needs_hf_token(self.spec.model)

    def lines(self) -> list[str]:
        o = self.offer
        where = o.location or o.country or "?"
        rel = "?" if o.reliability is None else f"{o.reliability:.3f}"
        cuda = "?" if o.cuda is None else f"{o.cuda:g}"
        floor = (
            f" (needs >= {self.image.min_cuda:g})"
            if self.image.min_cuda
            else " (the image's CUDA is unknown: no CUDA floor applied)"
        )
        image = (f"template {self.template_hash}" if self.template_hash else self.image.image) + (
            f" - {self.image.note}" if self.image.note and not self.template_hash else ""
        )
        out = [
            f"Plan: {RECIPE} {self.spec.name!r} ({self.spec.describe()})",
            f"  dataset  {self.dataset.summary()}",
            f"  offer    {o.id}: {o.num_gpus}x {o.gpu_variant} {o.gpu_ram_gb:.1f} GB, "
            f"reliability {rel}, CUDA {cuda}{floor}, {where}",
            f"  price    ${o.price_per_hour:.3f}/h incl. {o.disk_gb:g} GB disk",
            f"  image    {image}",
            f"  disk     {self.disk.why()}",
        ]
        out += [f"           {line.strip()}" for line in self.disk.explain()[1:]]
        out.append(f"  time     {self.run.explain()[0]}")
        out.append(f"           {self.run.summary()}")
        out.append(
            f"  cost     ~${self.cost_usd:.2f} (${o.price_per_hour:.3f}/h x "
            f"{self.run.hours:.2f} h, indicative)"
        )
        if o.disk_gb + 1e-9 < self.disk.disk_gb:
            out.append(
                f"  note     the offer was priced for {o.disk_gb:g} GB of disk, "
                f"{self.disk.disk_gb} GB will be rented"
            )
        if self.needs_hf_token:
            out.append(
                f"  token    {self.spec.model} is gated: HF_TOKEN is needed "
                "(sent over SSH at run time, never in the create call)"
            )
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "recipe": RECIPE,
            "name": self.spec.name,
            "offer_id": self.offer.id,
            "gpu_name": self.offer.gpu_name,
            "price_per_hour": round(self.offer.price_per_hour, 4),
            "image": self.image.image,
            "template_hash": self.template_hash,
            "min_cuda": self.image.min_cuda,
            "disk_gb": self.disk.disk_gb,
            "disk_estimate_gb": self.disk.estimate_gb,
            "disk_parts": {p.label: round(p.gb, 3) for p in self.disk.parts},
            "estimated_seconds": round(self.run.seconds),
            "estimated_cost_usd": round(self.cost_usd, 2),
            "needs_hf_token": self.needs_hf_token,
        }
