"""The Hugging Face side: gated repositories need a token, downloads take time (model size over
the host's bandwidth) and land in the HF cache, so a second run (a resume) loads from disk."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .errors import JOB_FRAMES, JobError

GATED = frozenset({"black-forest-labs/FLUX.1-dev"})
SIZES_GB = {  # what ai-toolkit pulls for a FLUX LoRA: transformer, text encoders, VAE
    "black-forest-labs/FLUX.1-dev": 23.0,
    "black-forest-labs/FLUX.1-schnell": 23.0,
}
OTHER_GB = 7.0  # any other hub model (SDXL-sized)
KNOWN_ORGS = ("black-forest-labs/",)  # repos of these orgs that we do not list do not exist

_LOAD_FRAMES = (
    *JOB_FRAMES,
    ("jobs/process/BaseSDTrainProcess.py", 1516, "run", "self.sd.load_model()"),
    (
        "toolkit/stable_diffusion_model.py",
        688,
        "load_model",
        "transformer = FluxTransformer2DModel.from_pretrained(",
    ),
)


def token(env: dict[str, str]) -> str | None:
    """The token huggingface_hub would use (never printed)."""
    return env.get("HF_TOKEN") or env.get("HUGGING_FACE_HUB_TOKEN") or None


def is_local(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or os.path.exists(name)


def check_access(repo: str, hf_token: str | None) -> None:
    """Raise what huggingface_hub raises when the repo cannot be read with this token."""
    request_id = (
        "Root=1-"
        + hashlib.sha1(repo.encode()).hexdigest()[:8]
        + "-"
        + hashlib.sha1(b"x" + repo.encode()).hexdigest()[:24]
    )
    url = f"https://huggingface.co/{repo}/resolve/main/model_index.json"
    if repo.startswith(KNOWN_ORGS) and repo not in SIZES_GB:
        raise JobError(
            "huggingface_hub.errors.RepositoryNotFoundError",
            f"404 Client Error. (Request ID: {request_id})\n\n"
            f"Repository Not Found for url: {url}.\n"
            "Please make sure you specified the correct `repo_id` and `repo_type`.\n"
            "If you are trying to access a private or gated repo, make sure you are "
            "authenticated.",
            _LOAD_FRAMES,
        )
    if repo not in GATED:
        return
    if hf_token is not None and not hf_token.startswith("hf_"):
        raise JobError(
            "huggingface_hub.errors.HfHubHTTPError",
            f"401 Client Error: Unauthorized for url: https://huggingface.co/api/models/{repo} "
            f"(Request ID: {request_id})\n\nInvalid credentials in Authorization header",
            _LOAD_FRAMES,
        )
    if hf_token is None:
        raise JobError(
            "huggingface_hub.errors.GatedRepoError",
            f"401 Client Error. (Request ID: {request_id})\n\n"
            f"Cannot access gated repo for url {url}.\n"
            f"Access to model {repo} is restricted. You must have access to it and be "
            "authenticated to access it. Please log in.",
            _LOAD_FRAMES,
        )


def size_gb(repo: str) -> float:
    return SIZES_GB.get(repo, OTHER_GB)


def cache_dir(env: dict[str, str]) -> Path:
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"])
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]) / "hub"
    return Path(env.get("HOME", ".")) / ".cache" / "huggingface" / "hub"


def _snapshot(repo: str, env: dict[str, str]) -> Path:
    folder = "models--" + repo.replace("/", "--")
    revision = hashlib.sha1(repo.encode()).hexdigest()
    return cache_dir(env) / folder / "snapshots" / revision


def is_cached(repo: str, env: dict[str, str]) -> bool:
    return (_snapshot(repo, env) / "model_index.json").exists()


def mark_cached(repo: str, env: dict[str, str]) -> None:
    """A stand-in snapshot (the real one is tens of GB)."""
    snapshot = _snapshot(repo, env)
    snapshot.mkdir(parents=True, exist_ok=True)
    (snapshot / "model_index.json").write_text('{"_class_name": "FluxPipeline"}\n')
