"""Training recipes, for every face: plan a FLUX LoRA run (dataset checked, the best reliable
offer, disk, time and cost), create its job with the dataset staged, and the recipe's hooks
(exact resume, the final LoRA verified) for driving it."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpushop.config import Settings
from gpushop.errors import NoMatchError, UsageError
from gpushop.jobs.contract import Hooks, ResumePlan
from gpushop.jobs.offer_flags import QUERY_DEFAULTS, QUERY_KEYS
from gpushop.jobs.spec import JobSpec, Transfer
from gpushop.models import Offer, SortKey
from gpushop.offer_flags import build_query
from gpushop.recipes import (
    Dataset,
    FluxLoraSpec,
    RecipeImage,
    build_config,
    config_yaml,
    estimate_disk,
    estimate_run,
    needs_hf_token,
    offer_needs,
    parse_resolutions,
    recipe_image,
    validate_dataset,
)
from gpushop.recipes.aitoolkit import ResumeChoice, choose_resume, resumed_step
from gpushop.recipes.flux_lora import TrainPlan
from gpushop.recipes.safetensors import SafetensorsError, verify_lora
from gpushop.service import jobs
from gpushop.store import Job
from gpushop.units import parse_duration

REMOTE_ROOT = "/workspace/gpushop"


@dataclass
class FluxRun:
    """A planned FLUX LoRA run: what the plan shows, and what its job needs."""

    spec: FluxLoraSpec
    plan: TrainPlan
    image: RecipeImage
    flags: dict[str, Any]  # the job's offer part
    dataset: Dataset

    @property
    def lines(self) -> list[str]:
        return self.plan.lines()

    def to_json(self) -> dict[str, Any]:
        return self.plan.to_json()


async def plan_flux_lora(
    cfg: Settings,
    *,
    dataset: Path,
    name: str,
    trigger: str | None,
    steps: int,
    rank: int,
    lr: float,
    resolution: str,
    model: str,
    save_every: int,
    image: str | None,
    template: str | None,
    resume_on_loss: int,
    offer: dict[str, Any],
    hf_token: bool | None = None,
) -> FluxRun:
    """Check everything and find the offer; nothing is rented. ``offer``: the offer flags (as
    `up` takes them), raised to what the recipe needs. ``hf_token``: whether the run has one
    (None: whether HF_TOKEN is set here)."""
    if image and template:
        raise UsageError("give --image or --template, not both")
    if not 0 <= resume_on_loss <= 10:
        raise UsageError("--resume-on-loss must be between 0 and 10")
    spec = FluxLoraSpec(
        name=name,
        trigger=trigger,
        steps=steps,
        rank=rank,
        lr=lr,
        resolutions=parse_resolutions(resolution),
        model=model,
        save_every=save_every,
    )
    data = validate_dataset(dataset)  # exit 2 with every problem listed; nothing rented
    has_token = bool(os.environ.get("HF_TOKEN")) if hf_token is None else hf_token
    if needs_hf_token(model) and not has_token:
        raise UsageError(
            f"{model} is gated: accept its licence on huggingface.co and set HF_TOKEN "
            "(it is sent to the instance over SSH only)"
        )
    recipe_img = await image_for(cfg, template, image)
    disk_estimate = estimate_disk(spec, data, recipe_img)
    needs = offer_needs(spec, disk_estimate, recipe_img)
    flags = jobs.offer_options(
        cfg,
        **{
            **offer,
            "min_vram": max(offer["min_vram"] or 0.0, needs.min_vram_gb),
            "disk": max(offer["disk"], needs.disk_gb),
            "min_cuda": max(offer["min_cuda"] or 0.0, needs.min_cuda or 0.0) or None,
            "sort": SortKey.VALUE,
            "offer": None,
            "attempts": 3,
        },
    )
    best = await best_offer(cfg, flags)
    run_estimate = estimate_run(
        spec, best.gpu_name, images=len(data), inet_down_mbps=best.inet_down_mbps, image=recipe_img
    )
    plan = TrainPlan(spec, data, best, disk_estimate, run_estimate, recipe_img, template)
    return FluxRun(spec, plan, recipe_img, flags, data)


def create_flux_job(
    cfg: Settings,
    run: FluxRun,
    *,
    out: Path | None,
    sync_every: str,
    resume_on_loss: int,
    template: str | None,
) -> tuple[str, Path]:
    """The job of a planned run, its dataset staged for upload; (job id, local output dir)."""
    out_dir = (out or Path("output") / run.spec.name).resolve()
    job_spec = flux_job_spec(
        run, out_dir, sync_every=sync_every, resume_on_loss=resume_on_loss, template=template
    )
    job_id = jobs.create_job(cfg, "flux-lora", run.spec.name, job_spec)
    stage_flux(run, job_spec, jobs.job_dir(job_id) / "stage")
    jobs.save_spec(cfg, job_id, job_spec)
    return job_id, out_dir


def flux_job_spec(
    run: FluxRun, out_dir: Path, *, sync_every: str, resume_on_loss: int, template: str | None
) -> JobSpec:
    """What the job runs: ai-toolkit on the staged config, the LoRA's folder downloaded to
    ``out_dir``; its uploads are set by :func:`stage_flux`."""
    spec, recipe_img = run.spec, run.image
    base = f"{REMOTE_ROOT}/{spec.name}"
    command = recipe_img.run_command(f"{base}/config.yaml")
    if recipe_img.setup:
        command = (
            f"if [ ! -f {recipe_img.workdir}/run.py ]; then {recipe_img.setup}; fi && {command}"
        )
    return JobSpec(
        command=command,
        uploads=[],  # staged once the job id is known
        downloads=[Transfer(str(out_dir), f"{base}/output/{spec.name}")],
        workdir="/workspace",
        env_from_local=["HF_TOKEN"] if needs_hf_token(spec.model) else [],
        sync_every_s=None if sync_every == "off" else parse_duration(sync_every),
        resume_on_loss=resume_on_loss,
        offer=run.flags,
        image=None if template else recipe_img.image,
        template_hash=template,
        max_duration_s=run.plan.run.max_duration_s(),
        recipe={"recipe": "flux-lora", "name": spec.name, "rank": spec.rank, "steps": spec.steps},
    )


def stage_flux(run: FluxRun, job_spec: JobSpec, stage: Path) -> None:
    """Stage the run's upload in ``stage`` and point the job's upload at it."""
    base = f"{REMOTE_ROOT}/{run.spec.name}"
    config = build_config(run.spec, f"{base}/dataset", f"{base}/output")
    _stage(stage, run.dataset.path, run.dataset.files(), config_yaml(config))
    job_spec.uploads = [Transfer(str(stage), base)]


async def image_for(cfg: Settings, template: str | None, image: str | None) -> RecipeImage:
    """The recipe's image: ``--image``, the image of a Vast.ai template, or ai-toolkit's own."""
    if not template:
        return recipe_image(image)
    from gpushop.shop import Shop

    async with Shop(cfg) as shop:
        provider: Any = shop.provider("vastai")
        found: list[dict[str, Any]] = await provider.search_templates({"hash_id": {"eq": template}})
    if not found:
        raise UsageError(f"no template with hash {template!r} (see `gpushop templates`)")
    t = found[0]
    tag = t.get("tag") or "latest"
    ref = str(t.get("image") or "")
    return recipe_image(f"{ref}:{tag}" if ref and ":" not in ref else ref or None)


async def best_offer(cfg: Settings, flags: dict[str, Any]) -> Offer:
    from gpushop.shop import Shop

    stored = flags["query"]
    query = build_query(**{k: stored.get(k, QUERY_DEFAULTS.get(k)) for k in QUERY_KEYS})
    async with Shop(cfg, provider=flags.get("provider")) as shop:
        result = await shop.market.search(query, SortKey.VALUE, 1)
    if not result.offers:
        raise NoMatchError(f"no offer fits the recipe: {query.describe()}")
    return result.offers[0]


def _stage(stage: Path, dataset: Path, files: list[str], config: str) -> Path:
    """The upload as the instance will see it: ``dataset/`` (only the files the trainer reads;
    hard links, so no copy of big images) and ``config.yaml``."""
    (stage / "dataset").mkdir(parents=True, exist_ok=True)
    for name in files:
        target = stage / "dataset" / name
        if target.exists():
            continue
        try:
            os.link(dataset / name, target)
        except OSError:
            shutil.copy2(dataset / name, target)
    (stage / "config.yaml").write_text(config)
    return stage


def flux_hooks_for(name: str, rank: int, out_dir: Path) -> Hooks:
    """What the runner asks the recipe: what a lost run cost, what a resume uploads and where
    it should start, where it did start, whether the final LoRA is whole."""

    def choice(log_path: Path) -> ResumeChoice:
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        return choose_resume(out_dir, name, text)

    def lost(job: Job, log_path: Path) -> str | None:
        return choice(log_path).describe()

    def resume(job: Job, spec: JobSpec, log_path: Path) -> ResumePlan:
        # only the newest checkpoint and the optimizer state, back into the trainer's folder
        chosen = choice(log_path)
        remote = next(
            (t.remote for t in spec.downloads if Path(t.local) == out_dir), spec.downloads[0].remote
        )
        files = [Transfer(str(out_dir / f), remote) for f in chosen.files]
        note = f"resuming from step {chosen.step}"
        return ResumePlan(files, chosen.step, chosen.reached, note)

    def verify(job: Job) -> list[str]:
        final = out_dir / f"{name}.safetensors"
        if not final.exists():
            return [f"the final LoRA {final.name} did not come back"]
        try:
            verify_lora(final, rank)
        except SafetensorsError as exc:
            return [str(exc)]
        return []

    return Hooks(
        lost=lost, verify=verify, resume=resume, resumed_at=lambda t: resumed_step(t, name)
    )


def flux_hooks(job: Job) -> Hooks:
    """Hooks for a stored flux-lora job (``gpushop attach``)."""
    recipe = job.spec.get("recipe", {})
    downloads = job.spec.get("downloads") or [{"local": "."}]
    return flux_hooks_for(
        str(recipe.get("name", job.name)),
        int(recipe.get("rank", 16)),
        Path(downloads[0]["local"]),
    )
