"""Jobs, for every face: build and create one, hand it to a background process, drive it to its
end (rent, upload, run, follow, download, release), list them, read their logs and timings.

Rendering (progress bars, tables, the exit code) is the face's; what is shown of a running job
comes through the ``Output`` it passes in."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from gpushop.config import Settings
from gpushop.errors import UsageError
from gpushop.fleet.owners import Owner, owner_alive
from gpushop.jobs import contract
from gpushop.jobs.contract import Hooks, Output
from gpushop.jobs.offer_flags import offer_flags
from gpushop.jobs.runner import JobRunner
from gpushop.jobs.spec import JobSpec, parse_download, parse_env, parse_upload
from gpushop.jobs.timings_report import summarize
from gpushop.recipes.aitoolkit import Progress, is_milestone, last_progress
from gpushop.store import Job, Store
from gpushop.units import parse_duration


class JobOutput(Output, Protocol):
    """An ``Output`` that may show the cost so far (the service tells it how to read it)."""

    cost: Callable[[], float | None] | None


def log_path(job_id: str) -> Path:
    return contract.log_path(job_id)


def job_dir(job_id: str) -> Path:
    return contract.job_dir(job_id)


# -- create --------------------------------------------------------------------------------------
def run_spec(
    *,
    cmd: str,
    uploads: list[str],
    downloads: list[str],
    workdir: str,
    env: list[str],
    timeout: str | None,
    sync_every: str,
    max_duration: str | None,
    resume_on_loss: int,
    offer: dict[str, Any],
    image: str | None,
    template: str | None,
) -> tuple[JobSpec, dict[str, str]]:
    """`gpushop run`'s job, and the secrets that go to the instance over SSH only."""
    if image and template:
        raise UsageError("give --image or --template, not both")
    if not cmd.strip():
        raise UsageError("--cmd must not be empty")
    if not 0 <= resume_on_loss <= 10:
        raise UsageError("--resume-on-loss must be between 0 and 10")
    timeout_s = parse_duration(timeout) if timeout else None
    plain, names, secrets = parse_env(env)
    limit = parse_duration(max_duration) if max_duration else 4 * 3600.0
    if max_duration is None and timeout_s is not None:
        limit = max(limit, timeout_s + 3600.0)
    if timeout_s is not None and timeout_s >= limit:
        raise UsageError("--timeout must be shorter than --max-duration")
    spec = JobSpec(
        command=cmd,
        uploads=[parse_upload(u, workdir) for u in uploads],
        downloads=[parse_download(d, workdir) for d in downloads],
        workdir=workdir,
        env=plain,
        env_from_local=names,
        timeout_s=timeout_s,
        sync_every_s=None if sync_every == "off" else parse_duration(sync_every),
        resume_on_loss=resume_on_loss,
        offer=offer,
        image=image,
        template_hash=template,
        max_duration_s=limit,
    )
    return spec, secrets


def offer_options(cfg: Settings, *, rebid: bool, **flags: Any) -> dict[str, Any]:
    """The offer part of a job's spec, from the offer flags (as `up` takes them)."""
    if rebid and not flags["interruptible"]:
        raise UsageError("--rebid needs --interruptible")
    max_price = flags["max_price"]
    return offer_flags(  # it keeps the query's flags (QUERY_KEYS) of what it is given
        {**flags, "settings_max_price": cfg.vastai_max_bid_per_hour},
        sort=flags["sort"].value,
        offer=flags["offer"],
        attempts=flags["attempts"],
        provider=flags.get("provider"),
        budget_usd=cfg.gpushop_budget_usd,
        price_cap=max_price if max_price is not None else cfg.vastai_max_bid_per_hour,
        rebid=rebid,
    )


def create_job(cfg: Settings, kind: str, name: str, spec: JobSpec) -> str:
    me = Owner.me()
    with Store.open(cfg.db_url) as store:
        return store.new_job(
            kind=kind, name=name, spec=spec.to_json(), owner_host=me.host, owner_pid=me.pid
        ).id


def save_spec(cfg: Settings, job_id: str, spec: JobSpec) -> None:
    with Store.open(cfg.db_url) as store:
        store.update_job(job_id, spec=spec.to_json())


def detach(cfg: Settings, job_id: str, secrets: dict[str, str]) -> None:
    """Hand the job to a background ``gpushop attach`` that outlives this terminal."""
    with Store.open(cfg.db_url) as store:
        store.update_job(job_id, owner_host=None, owner_pid=None)  # free for the child to claim
    log = job_dir(job_id) / "supervisor.log"
    env = {**os.environ, **secrets}  # secrets reach the child by its environment only
    # a shell that starts the supervisor in the background and exits at once: the supervisor
    # is nobody's child then (no zombie, no wait), in its own session, free of this terminal
    with log.open("ab") as out:
        subprocess.run(
            [
                "/bin/sh",
                "-c",
                '"$@" </dev/null >>"$0" 2>&1 &',
                str(log),
                sys.executable,
                "-m",
                "gpushop",
                "attach",
                job_id,
                "--quiet",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            check=True,
        )


# -- drive ---------------------------------------------------------------------------------------
async def drive(
    cfg: Settings,
    job_id: str,
    output: JobOutput,
    *,
    hooks: Hooks | None = None,
    secrets: dict[str, str] | None = None,
) -> Job:
    """Reconcile first (what a crashed run left behind), then drive the job to its end."""
    from gpushop.fleet.reconcile import reconcile
    from gpushop.shop import Shop

    with Store.open(cfg.db_url) as store:
        stored = store.get_job(job_id)
    choice = stored.spec.get("offer", {}).get("provider") if stored else None
    async with Shop(cfg, provider=choice) as shop:
        report = await reconcile(shop.store, shop.provider_map())
        for entry in report.actions:
            output.message(
                f"reconcile: {entry['kind']} {entry['rental_id'] or entry['instance_id']}"
            )
        job_runner = JobRunner(
            shop.store,
            shop.provider_map(),
            shop.provisioner(),
            shop.keypair(),
            output,
            hooks=hooks,
            secrets=secrets,
        )

        def cost() -> float | None:  # so far, as the job's summary will count it
            job = shop.store.get_job(job_id)
            return None if job is None else job_runner.cost(job)

        output.cost = cost
        return await job_runner.drive(job_id)


def views_for(job: Job) -> tuple[Hooks | None, Callable[[str], Progress | None] | None]:
    """A stored job's recipe hooks and its trainer's bar parser (``attach``)."""
    if job.kind == "flux-lora":
        from gpushop.service.training import flux_hooks

        name = str(job.spec.get("recipe", {}).get("name", job.name))
        return flux_hooks(job), flux_bar(name)
    return None, None


def milestones_for(kind: str) -> Callable[[str], bool] | None:
    """Which log lines of a job kind's trainer are worth a person's attention (None: all)."""
    return is_milestone if kind == "flux-lora" else None


def flux_bar(name: str) -> Callable[[str], Progress | None]:
    """ai-toolkit's training bar (its description is the job's name), one redraw at a time."""
    return lambda piece: last_progress(piece, name)


# -- read ----------------------------------------------------------------------------------------
def load_job(cfg: Settings, job_id: str) -> Job:
    with Store.open(cfg.db_url) as store:
        job = store.get_job(job_id)
    if job is None:
        raise UsageError(f"no job {job_id!r} (see `gpushop jobs --all`)")
    return job


def watched(job: Job) -> bool:
    """Whether a live gpushop process drives the job."""
    return owner_alive(
        job.owner_host,
        job.owner_pid,
        job.heartbeat_at,
        datetime.now(UTC),
        lease_until=job.lease_until,
    )


def list_jobs(cfg: Settings, *, active_only: bool) -> list[tuple[Job, dict[str, Any]]]:
    """Jobs, newest first, each with its row as `gpushop jobs --json` shows it."""
    with Store.open(cfg.db_url) as store:
        return rows_for(store, store.list_jobs(active_only=active_only))


def rows_for(store: Store, found: list[Job]) -> list[tuple[Job, dict[str, Any]]]:
    rentals = store.get_many(j.rental_id for j in found if j.rental_id)
    now = datetime.now(UTC)
    rows = []
    for j in found:
        rental = rentals.get(j.rental_id) if j.rental_id else None
        row = {
            "job_id": j.id,
            "kind": j.kind,
            "name": j.name,
            "state": j.state.value,
            "watched": owner_alive(
                j.owner_host, j.owner_pid, j.heartbeat_at, now, lease_until=j.lease_until
            ),
            "rental_id": j.rental_id,
            "gpu_name": rental.gpu_name if rental else None,
            "provider": rental.provider if rental else None,
            "exit_code": j.exit_code,
            "cost_usd": j.cost_usd,
            "created_at": j.created_at.isoformat(),
            "ended_at": j.ended_at.isoformat() if j.ended_at else None,
            "resumes": j.details.get("resumes", 0),
        }
        rows.append((j, row))
    return rows


def job_summary(cfg: Settings, job: Job) -> dict[str, Any]:
    with Store.open(cfg.db_url) as store:
        return job_summary_in(store, job)


def job_summary_in(store: Store, job: Job) -> dict[str, Any]:
    timings: dict[str, float] = {}
    for rid in job.details.get("rentals", []):
        for t in store.timings(rental_id=rid):
            timings[t["phase"]] = timings.get(t["phase"], 0.0) + t["seconds"]
    rentals = [store.get(r) for r in job.details.get("rentals", [])]
    return {
        "job_id": job.id,
        "kind": job.kind,
        "name": job.name,
        "state": job.state.value,
        "exit_code": job.exit_code,
        "error": job.error,
        "cost_usd": job.cost_usd,
        "rentals": [
            {
                "rental_id": r.id,
                "provider": r.provider,
                "gpu_name": r.gpu_name,
                "price_per_hour": r.price_per_hour,
                "state": r.state.value,
            }
            for r in rentals
            if r is not None
        ],
        "resumes": job.details.get("resumes", 0),
        "resumed": job.details.get("resumed", []),  # where each resume started, vs its plan
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "created_at": job.created_at.isoformat(),
        "ended_at": job.ended_at.isoformat() if job.ended_at else None,
    }


def timing_rows(cfg: Settings) -> list[dict[str, Any]]:
    """Per-phase timings by GPU model, image and provider (median, p90)."""
    with Store.open(cfg.db_url) as store:
        return summarize(store.timings())
