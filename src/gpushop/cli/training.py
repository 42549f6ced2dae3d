"""``gpushop train flux-lora``: a FLUX LoRA with ostris/ai-toolkit, from a local dataset folder
to the LoRA file, on the best reliable offer; the rental is released whatever happens."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gpushop.cli.common import print_json, run_async, settings
from gpushop.cli.jobs import FullLogOpt, create_job, detach, drive, finish, offer_options
from gpushop.cli.shopping import (
    CountryOpt,
    DiskOpt,
    GpuOpt,
    InterruptibleOpt,
    JsonOpt,
    MaxPriceOpt,
    MinCudaOpt,
    MinRelOpt,
    MinVramOpt,
    NumGpusOpt,
    ProviderOpt,
    UnverifiedOpt,
)
from gpushop.errors import NoMatchError, UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

    from gpushop.jobs.runner import Hooks
    from gpushop.models import Offer
    from gpushop.recipes import RecipeImage
    from gpushop.recipes.aitoolkit import Progress
    from gpushop.store import Job

train_app = typer.Typer(
    help="Training recipes: dataset in, model out, rental released.", no_args_is_help=True
)
REMOTE_ROOT = "/workspace/gpushop"


def flux_lora(
    dataset: Annotated[
        Path, typer.Option("--dataset", help="Folder of jpg/png images with .txt captions.")
    ],
    name: Annotated[str, typer.Option("--name", help="Run name: the LoRA's file name.")],
    trigger: Annotated[
        str | None, typer.Option("--trigger", help="Trigger word ([trigger] in captions).")
    ] = None,
    steps: Annotated[int, typer.Option("--steps", help="Training steps.")] = 2000,
    rank: Annotated[int, typer.Option("--rank", help="LoRA rank (linear, linear_alpha).")] = 16,
    lr: Annotated[float, typer.Option("--lr", help="Learning rate.")] = 1e-4,
    resolution: Annotated[
        str, typer.Option("--resolution", help="Bucket sizes, comma-separated.")
    ] = "512,768,1024",
    model: Annotated[
        str, typer.Option("--model", help="Base model on Hugging Face.")
    ] = "black-forest-labs/FLUX.1-dev",
    save_every: Annotated[
        int, typer.Option("--save-every", help="Checkpoint every N steps.")
    ] = 250,
    out: Annotated[
        Path | None, typer.Option("--out", help="Where the LoRA goes (default ./output/NAME).")
    ] = None,
    gpu: GpuOpt = None,
    min_vram: MinVramOpt = None,
    num_gpus: NumGpusOpt = None,
    max_price: MaxPriceOpt = None,
    min_reliability: MinRelOpt = 0.98,
    disk: DiskOpt = 32.0,
    min_cuda: MinCudaOpt = None,
    country: CountryOpt = None,
    interruptible: InterruptibleOpt = False,
    rebid: Annotated[
        bool,
        typer.Option(
            "--rebid", help="When outbid, bid what wins now up to --max-price (else release)."
        ),
    ] = False,
    unverified: UnverifiedOpt = False,
    provider: ProviderOpt = None,
    image: Annotated[
        str | None, typer.Option("--image", help="Image (default ostris/aitoolkit:latest).")
    ] = None,
    template: Annotated[
        str | None, typer.Option("--template", help="Template hash to start from.")
    ] = None,
    sync_every: Annotated[
        str, typer.Option("--sync-every", help="Download checkpoints this often.")
    ] = "10m",
    resume_on_loss: Annotated[
        int, typer.Option("--resume-on-loss", help="Rent again and resume this many times.")
    ] = 2,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before renting.")] = False,
    detach_: Annotated[
        bool, typer.Option("--detach", "-d", help="Return at once; see `gpushop jobs`.")
    ] = False,
    full_log: FullLogOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train a FLUX LoRA with ai-toolkit: validate the dataset, show the plan, rent, upload,
    train (checkpoints synced as they come), download the LoRA, release."""
    from gpushop.jobs.spec import JobSpec, Transfer
    from gpushop.recipes import (
        FluxLoraSpec,
        build_config,
        config_yaml,
        estimate_disk,
        estimate_run,
        needs_hf_token,
        offer_needs,
        parse_resolutions,
        validate_dataset,
    )
    from gpushop.recipes.flux_lora import TrainPlan
    from gpushop.units import parse_duration

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
    if needs_hf_token(model) and not os.environ.get("HF_TOKEN"):
        raise UsageError(
            f"{model} is gated: accept its licence on huggingface.co and set HF_TOKEN "
            "(it is sent to the instance over SSH only)"
        )
    cfg = settings()
    recipe_img = _image_for(template, image, cfg)
    disk_estimate = estimate_disk(spec, data, recipe_img)
    needs = offer_needs(spec, disk_estimate, recipe_img)
    flags = offer_options(
        gpu=gpu,
        min_vram=max(min_vram or 0.0, needs.min_vram_gb),
        num_gpus=num_gpus,
        max_price=max_price,
        min_reliability=min_reliability,
        disk=max(disk, needs.disk_gb),
        min_cuda=max(min_cuda or 0.0, needs.min_cuda or 0.0) or None,
        country=country,
        interruptible=interruptible,
        unverified=unverified,
        sort=_value_sort(),
        offer=None,
        attempts=3,
        provider=provider,
        rebid=rebid,
    )
    best = _best_offer(flags)
    run_estimate = estimate_run(
        spec, best.gpu_name, images=len(data), inet_down_mbps=best.inet_down_mbps, image=recipe_img
    )
    plan = TrainPlan(spec, data, best, disk_estimate, run_estimate, recipe_img, template)
    if as_json and not detach_:
        print_json({"plan": plan.to_json()})
    else:
        print("\n".join(plan.lines()), file=sys.stderr if as_json else sys.stdout)
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError("not a terminal: add --yes to rent without asking")
        if not typer.confirm("Rent and train?", default=True):
            raise typer.Exit(1)

    base = f"{REMOTE_ROOT}/{spec.name}"
    training_folder = f"{base}/output"
    config = build_config(spec, f"{base}/dataset", training_folder)
    out_dir = (out or Path("output") / spec.name).resolve()
    command = recipe_img.run_command(f"{base}/config.yaml")
    if recipe_img.setup:
        command = (
            f"if [ ! -f {recipe_img.workdir}/run.py ]; then {recipe_img.setup}; fi && {command}"
        )
    job_spec = JobSpec(
        command=command,
        uploads=[],  # staged below, once the job id is known
        downloads=[Transfer(str(out_dir), f"{training_folder}/{spec.name}")],
        workdir="/workspace",
        env_from_local=["HF_TOKEN"] if needs_hf_token(model) else [],
        sync_every_s=None if sync_every == "off" else parse_duration(sync_every),
        resume_on_loss=resume_on_loss,
        offer=flags,
        image=None if template else recipe_img.image,
        template_hash=template,
        max_duration_s=run_estimate.max_duration_s(),
        recipe={"recipe": "flux-lora", "name": spec.name, "rank": spec.rank, "steps": spec.steps},
    )
    job_id = create_job("flux-lora", spec.name, job_spec)
    stage = _stage(job_id, data.path, data.files(), config_yaml(config))
    job_spec.uploads = [Transfer(str(stage), base)]
    _save_spec(job_id, job_spec)
    if detach_:
        detach(job_id, {})
        if as_json:
            print_json({"job_id": job_id, "state": "pending", "plan": plan.to_json()})
        else:
            print(job_id)
        return
    print(f"job {job_id}", file=sys.stderr)
    from gpushop.recipes.aitoolkit import is_milestone

    job = drive(
        job_id,
        hooks=flux_hooks_for(job_id, spec.name, spec.rank, out_dir),
        log_to_stderr=as_json,
        bar=flux_bar(spec.name),
        keep=None if full_log else is_milestone,
    )
    if job.state.value == "succeeded" and not as_json:
        final = out_dir / f"{spec.name}.safetensors"
        print(f"LoRA: {final} ({final.stat().st_size / 1e6:.1f} MB)")
    finish(job, as_json)


def _value_sort() -> Any:
    from gpushop.models import SortKey

    return SortKey.VALUE


def _image_for(template: str | None, image: str | None, cfg: Any) -> RecipeImage:
    from gpushop.recipes import recipe_image

    if not template:
        return recipe_image(image)

    async def find() -> list[dict[str, Any]]:
        from gpushop.shop import Shop

        async with Shop(cfg) as shop:
            provider: Any = shop.provider("vastai")
            found: list[dict[str, Any]] = await provider.search_templates(
                {"hash_id": {"eq": template}}
            )
            return found

    found = run_async(find())
    if not found:
        raise UsageError(f"no template with hash {template!r} (see `gpushop templates`)")
    t = found[0]
    tag = t.get("tag") or "latest"
    ref = str(t.get("image") or "")
    return recipe_image(f"{ref}:{tag}" if ref and ":" not in ref else ref or None)


def _best_offer(flags: dict[str, Any]) -> Offer:
    from gpushop.jobs.offer_flags import QUERY_DEFAULTS, QUERY_KEYS
    from gpushop.models import SortKey
    from gpushop.offer_flags import build_query

    stored = flags["query"]
    query = build_query(**{k: stored.get(k, QUERY_DEFAULTS.get(k)) for k in QUERY_KEYS})
    cfg = settings()

    async def search() -> Offer:
        from gpushop.shop import Shop

        async with Shop(cfg, provider=flags.get("provider")) as shop:
            result = await shop.market.search(query, SortKey.VALUE, 1)
            if not result.offers:
                raise NoMatchError(f"no offer fits the recipe: {query.describe()}")
            return result.offers[0]

    return run_async(search())


def _stage(job_id: str, dataset: Path, files: list[str], config: str) -> Path:
    """The upload as the instance will see it: ``dataset/`` (only the files the trainer reads;
    hard links, so no copy of big images) and ``config.yaml``."""
    from gpushop.jobs.runner import job_dir

    stage = job_dir(job_id) / "stage"
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


def _save_spec(job_id: str, spec: Any) -> None:
    from gpushop.store import Store

    store = Store.open(settings().db_url)
    try:
        store.update_job(job_id, spec=spec.to_json())
    finally:
        store.close()


def flux_hooks_for(job_id: str, name: str, rank: int, out_dir: Path) -> Hooks:
    from gpushop.jobs.runner import Hooks, ResumePlan
    from gpushop.jobs.spec import JobSpec, Transfer
    from gpushop.recipes.aitoolkit import ResumeChoice, choose_resume, resumed_step
    from gpushop.recipes.safetensors import SafetensorsError, verify_lora

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


def flux_bar(name: str) -> Callable[[str], Progress | None]:
    """ai-toolkit's training bar (its description is the job's name), one redraw at a time."""
    from gpushop.recipes.aitoolkit import last_progress

    return lambda piece: last_progress(piece, name)


def flux_hooks(job: Job) -> Hooks:
    """Hooks for a stored flux-lora job (``gpushop attach``)."""
    recipe = job.spec.get("recipe", {})
    downloads = job.spec.get("downloads") or [{"local": "."}]
    return flux_hooks_for(
        job.id,
        str(recipe.get("name", job.name)),
        int(recipe.get("rank", 16)),
        Path(downloads[0]["local"]),
    )


def register(app: typer.Typer) -> None:
    train_app.command("flux-lora")(flux_lora)
    app.add_typer(train_app, name="train")
