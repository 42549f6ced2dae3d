"""``gpushop train flux-lora``: a FLUX LoRA with ostris/ai-toolkit, from a local dataset folder
to the LoRA file, on the best reliable offer; the rental is released whatever happens."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from gpushop.cli.common import print_json, run_async, settings, team_service
from gpushop.cli.jobs import FullLogOpt, detached, drive, finish
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
from gpushop.errors import UsageError

train_app = typer.Typer(
    help="Training recipes: dataset in, model out, rental released.", no_args_is_help=True
)


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
    train (checkpoints synced as they come), download the LoRA, release.

    With a team service (GPUSHOP_SERVER, or `gpushop login`): the dataset folder's files are
    sent as a tar.gz and checked there (the same checks), the plan shown, the training run and
    followed by the service, and the LoRA's folder downloaded to --out, checked by sha256 and
    verified here; HF_TOKEN from your environment goes with it, kept encrypted. Ctrl-C cancels
    the training (what it saved comes back) and shows the summary."""
    from gpushop.service import jobs as job_service
    from gpushop.service import training as service

    cfg = settings()
    server = team_service(cfg)
    if server is not None:
        from gpushop.cli import client_jobs

        options = {
            "name": name,
            "trigger": trigger,
            "steps": steps,
            "rank": rank,
            "lr": lr,
            "resolution": resolution,
            "model": model,
            "save_every": save_every,
            "image": image,
            "template": template,
            "resume_on_loss": resume_on_loss,
            "sync_every": sync_every,
            "offer": {
                "gpu": gpu,
                "min_vram": min_vram,
                "num_gpus": num_gpus,
                "max_price": max_price if max_price is not None else cfg.vastai_max_bid_per_hour,
                "min_reliability": min_reliability,
                "disk": disk,
                "min_cuda": min_cuda,
                "country": country,
                "interruptible": interruptible,
                "unverified": unverified,
                "provider": provider,
                "rebid": rebid,
            },
        }
        client_jobs.flux_lora(
            server,
            dataset=dataset,
            options=options,
            out=out,
            yes=yes,
            detach=detach_,
            full_log=full_log,
            as_json=as_json,
        )
        return
    run = run_async(
        service.plan_flux_lora(
            cfg,
            dataset=dataset,
            name=name,
            trigger=trigger,
            steps=steps,
            rank=rank,
            lr=lr,
            resolution=resolution,
            model=model,
            save_every=save_every,
            image=image,
            template=template,
            resume_on_loss=resume_on_loss,
            offer={
                "gpu": gpu,
                "min_vram": min_vram,
                "num_gpus": num_gpus,
                "max_price": max_price,
                "min_reliability": min_reliability,
                "disk": disk,
                "min_cuda": min_cuda,
                "country": country,
                "interruptible": interruptible,
                "unverified": unverified,
                "provider": provider,
                "rebid": rebid,
            },
        )
    )
    if as_json and not detach_:
        print_json({"plan": run.to_json()})
    else:
        print("\n".join(run.lines), file=sys.stderr if as_json else sys.stdout)
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError("not a terminal: add --yes to rent without asking")
        if not typer.confirm("Rent and train?", default=True):
            raise typer.Exit(1)
    job_id, out_dir = service.create_flux_job(
        cfg, run, out=out, sync_every=sync_every, resume_on_loss=resume_on_loss, template=template
    )
    if detach_:
        job_service.detach(cfg, job_id, {})
        detached(job_id, as_json, {"plan": run.to_json()}, hint=False)
        return
    print(f"job {job_id}", file=sys.stderr)
    job = drive(
        job_id,
        hooks=service.flux_hooks_for(run.spec.name, run.spec.rank, out_dir),
        log_to_stderr=as_json,
        bar=job_service.flux_bar(run.spec.name),
        keep=None if full_log else job_service.milestones_for("flux-lora"),
    )
    if job.state.value == "succeeded" and not as_json:
        final = out_dir / f"{run.spec.name}.safetensors"
        print(f"LoRA: {final} ({final.stat().st_size / 1e6:.1f} MB)")
    finish(job, as_json)


def register(app: typer.Typer) -> None:
    train_app.command("flux-lora")(flux_lora)
    app.add_typer(train_app, name="train")
