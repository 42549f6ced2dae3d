"""Training recipes, the pure part: datasets checked locally, job configs, disk and time
estimates, plans, and readers for what the trainer leaves behind (progress, checkpoints,
safetensors headers). No network, no SSH: the only I/O is reading local files.

The ``flux-lora`` recipe trains a FLUX.1 LoRA with ostris/ai-toolkit (``recipes.flux_lora``).
"""

from __future__ import annotations

from gpushop.recipes.aitoolkit import (
    Progress,
    final_lora_name,
    is_finished,
    last_progress,
    last_step,
    newest_checkpoint,
    parse_progress,
    steps_lost,
)
from gpushop.recipes.dataset import Dataset, DatasetError, ImageFile, validate_dataset
from gpushop.recipes.flux_lora import (
    DiskEstimate,
    DiskPart,
    FluxLoraSpec,
    OfferNeeds,
    RunEstimate,
    TrainPlan,
    build_config,
    config_yaml,
    estimate_disk,
    estimate_disk_gb,
    estimate_run,
    needs_hf_token,
    offer_needs,
    parse_resolutions,
)
from gpushop.recipes.images import (
    DEFAULT_IMAGE,
    TRAINING_IMAGES,
    RecipeImage,
    cuda_from_tag,
    recipe_image,
)
from gpushop.recipes.safetensors import (
    SafetensorsError,
    SafetensorsInfo,
    TensorInfo,
    read_header,
    verify_lora,
)

__all__ = [
    "DEFAULT_IMAGE",
    "TRAINING_IMAGES",
    "Dataset",
    "DatasetError",
    "DiskEstimate",
    "DiskPart",
    "FluxLoraSpec",
    "ImageFile",
    "OfferNeeds",
    "Progress",
    "RecipeImage",
    "RunEstimate",
    "SafetensorsError",
    "SafetensorsInfo",
    "TensorInfo",
    "TrainPlan",
    "build_config",
    "config_yaml",
    "cuda_from_tag",
    "estimate_disk",
    "estimate_disk_gb",
    "estimate_run",
    "final_lora_name",
    "is_finished",
    "last_progress",
    "last_step",
    "needs_hf_token",
    "newest_checkpoint",
    "offer_needs",
    "parse_progress",
    "parse_resolutions",
    "read_header",
    "recipe_image",
    "steps_lost",
    "validate_dataset",
    "verify_lora",
]
