"""Jobs over HTTP, for the team service: a user's `run` or `train flux-lora` becomes a job this
replica drives (service/job_supervisor.py), its inputs unpacked under GPUSHOP_ARTIFACTS_DIR, its
secrets sealed with GPUSHOP_SECRET_KEY (only a takeover opens them, and they reach the instance
over SSH only). Each user sees their own jobs; an admin sees everyone's."""

from __future__ import annotations

import dataclasses
import json
import os
import posixpath
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gpushop.config import Settings
from gpushop.errors import NotFound, UsageError
from gpushop.fleet.owners import Owner, owner_alive
from gpushop.jobs.spec import _ENV_NAME, JobSpec, Transfer
from gpushop.models import JobState, SortKey
from gpushop.service import artifacts, jobs, training
from gpushop.service.job_supervisor import Supervisor
from gpushop.store import Job, Store, User


@dataclass(frozen=True)
class OfferRequest:
    """The offer flags of `gpushop run` and `train`, as JSON."""

    gpu: list[str] | None = None
    min_vram: float | None = None
    num_gpus: int | None = None
    max_price: float | None = None
    min_reliability: float = 0.98
    disk: float = 32.0
    min_cuda: float | None = None
    country: list[str] | None = None
    interruptible: bool = False
    unverified: bool = False
    sort: str = "value"
    provider: str | None = None
    offer: str | None = None
    attempts: int = 3
    rebid: bool = False

    def flags(self) -> dict[str, Any]:
        try:
            sort = SortKey(self.sort)
        except ValueError:
            raise UsageError(f"offer.sort: one of {', '.join(k.value for k in SortKey)}") from None
        values = {k: v for k, v in self.__dict__.items() if k != "rebid"}
        return {**values, "sort": sort}


@dataclass(frozen=True)
class RunRequest:
    """What `gpushop run` takes, as JSON; ``downloads`` come back as the job's artifacts."""

    cmd: str
    name: str | None = None
    workdir: str = "/workspace"
    inputs_to: str | None = None  # where the inputs archive is unpacked (default: workdir)
    env: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    downloads: list[str] = field(default_factory=list)
    timeout: str | None = None
    sync_every: str = "10m"
    max_duration: str | None = None
    resume_on_loss: int = 0
    image: str | None = None
    template: str | None = None
    offer: OfferRequest = field(default_factory=OfferRequest)


@dataclass(frozen=True)
class FluxRequest:
    """What `gpushop train flux-lora` takes, as JSON (the dataset comes as an archive)."""

    name: str
    trigger: str | None = None
    steps: int = 1000
    rank: int = 16
    lr: float = 1e-4
    resolution: str = "512,768,1024"
    model: str = "black-forest-labs/FLUX.1-dev"
    save_every: int = 250
    image: str | None = None
    template: str | None = None
    resume_on_loss: int = 2
    sync_every: str = "5m"
    secrets: dict[str, str] = field(default_factory=dict)
    offer: OfferRequest = field(default_factory=OfferRequest)


# -- submitting ----------------------------------------------------------------------------------
def _check_secrets(secrets: dict[str, str]) -> None:
    for name in secrets:
        if not _ENV_NAME.fullmatch(name):
            raise UsageError(f"secrets.{name}: not an environment variable name")


def _seal(cfg: Settings, secrets: dict[str, str]) -> str | None:
    if not secrets:
        return None
    from gpushop.service.webhooks import box

    return box(cfg).seal(json.dumps(secrets))


def _new_job(
    store: Store, owner: Owner, user: User, kind: str, name: str, spec: JobSpec, sealed: str | None
) -> Job:
    return store.new_job(
        kind=kind,
        name=name,
        spec=spec.to_json(),
        owner_host=owner.host,
        owner_pid=owner.pid,
        user_id=user.id,
        sealed_secrets=sealed,
        lease_s=owner.lease_s,
    )


def submit_run(
    cfg: Settings,
    store: Store,
    owner: Owner,
    user: User,
    req: RunRequest,
    archive: Path | None,
) -> Job:
    """Validate, create the job (this replica owns it) and unpack its inputs; the caller
    starts driving it. Nothing is rented before every check passed."""
    _check_secrets(req.secrets)
    for key in req.env:
        if not _ENV_NAME.fullmatch(key):
            raise UsageError(f"env.{key}: not an environment variable name")
    spec, secrets = jobs.run_spec(
        cmd=req.cmd,
        uploads=[],
        downloads=[],
        workdir=req.workdir,
        env=[f"{k}={v}" for k, v in req.env.items()],  # a secret-looking value moves to secrets
        timeout=req.timeout,
        sync_every=req.sync_every,
        max_duration=req.max_duration,
        resume_on_loss=req.resume_on_loss,
        offer=jobs.offer_options(cfg, rebid=req.offer.rebid, **req.offer.flags()),
        image=req.image,
        template=req.template,
    )
    if not req.workdir.startswith("/"):
        raise UsageError("workdir: an absolute path on the instance")
    secrets = {**secrets, **req.secrets}
    spec.env_from_local = sorted({*spec.env_from_local, *req.secrets})
    names = [posixpath.basename(d.rstrip("/")) for d in req.downloads]
    if len(set(names)) != len(names) or not all(names):
        raise UsageError("downloads: each must end in a distinct name (it names the artifact)")
    sealed = _seal(cfg, secrets)
    name = req.name or req.cmd.split()[0][:64]
    job = _new_job(store, owner, user, "run", name, spec, sealed)
    try:
        out = artifacts.outputs_dir(cfg, job.id)
        out.mkdir(parents=True, exist_ok=True)
        spec.downloads = [
            Transfer(str(out / n), _remote(d, req.workdir))
            for n, d in zip(names, req.downloads, strict=True)
        ]
        if archive is not None:
            inputs = artifacts.inputs_dir(cfg, job.id)
            artifacts.unpack(
                archive, inputs, cfg.gpushop_max_upload_bytes * artifacts.UNPACK_FACTOR
            )
            spec.uploads = [
                Transfer(str(inputs), _remote(req.inputs_to or req.workdir, req.workdir))
            ]
        return store.update_job(job.id, spec=spec.to_json())
    except BaseException as exc:
        _never_started(cfg, store, job.id, exc)
        raise


def _remote(path: str, workdir: str) -> str:
    if ".." in path.split("/"):
        raise UsageError(f"{path!r}: '..' is not allowed in remote paths")
    return path if path.startswith("/") else f"{workdir.rstrip('/')}/{path}"


def _never_started(cfg: Settings, store: Store, job_id: str, exc: BaseException) -> None:
    """A submission that failed after its row was written: failed, nothing rented."""
    store.update_job(
        job_id,
        state=JobState.FAILED,
        error=f"not started: {exc}",
        ended_at=datetime.now(UTC),
        owner_host=None,
        owner_pid=None,
        sealed_secrets=None,
    )
    artifacts.remove(cfg, job_id)


async def plan_flux(cfg: Settings, req: FluxRequest, dataset: Path) -> training.FluxRun:
    """Check the dataset and options and find the offer, as `train flux-lora` does; nothing
    is rented (a DatasetError lists every bad file)."""
    _check_secrets(req.secrets)
    offer = {**req.offer.flags(), "rebid": req.offer.rebid}
    return await training.plan_flux_lora(
        cfg,
        dataset=dataset,
        name=req.name,
        trigger=req.trigger,
        steps=req.steps,
        rank=req.rank,
        lr=req.lr,
        resolution=req.resolution,
        model=req.model,
        save_every=req.save_every,
        image=req.image,
        template=req.template,
        resume_on_loss=req.resume_on_loss,
        offer=offer,
        hf_token=bool(req.secrets.get("HF_TOKEN")),
    )


def create_flux(
    cfg: Settings,
    store: Store,
    owner: Owner,
    user: User,
    req: FluxRequest,
    run: training.FluxRun,
    incoming: Path,
) -> Job:
    """The planned run's job: ``incoming`` (the unpacked upload, artifacts.incoming) becomes
    the job's folder, the dataset is staged there and the LoRA comes back to its artifacts."""
    spec = training.flux_job_spec(
        run,
        Path("/nonexistent"),  # set below, once the job has its folder
        sync_every=req.sync_every,
        resume_on_loss=req.resume_on_loss,
        template=req.template,
    )
    job = _new_job(store, owner, user, "flux-lora", req.name, spec, _seal(cfg, req.secrets))
    try:
        folder = artifacts.job_root(cfg, job.id)
        folder.parent.mkdir(parents=True, exist_ok=True)
        relative = Path(run.dataset.path).resolve().relative_to(incoming.resolve())
        os.replace(incoming, folder)
        run.dataset = dataclasses.replace(run.dataset, path=folder / relative)
        out = artifacts.outputs_dir(cfg, job.id) / req.name
        out.mkdir(parents=True, exist_ok=True)
        spec.downloads = [Transfer(str(out), spec.downloads[0].remote)]
        training.stage_flux(run, spec, folder / "stage")
        plan = run.to_json()
        plan["gated_model"] = plan.pop("needs_hf_token")  # a flag, though its name trips the guard
        plan["lines"] = run.lines  # the plan as `train flux-lora` prints it
        return store.update_job(job.id, spec=spec.to_json(), details={"plan": plan})
    except BaseException as exc:
        _never_started(cfg, store, job.id, exc)
        raise


def reseal(cfg: Settings, store: Store) -> int:
    """The secrets of every unfinished job re-encrypted under GPUSHOP_SECRET_KEY's first key
    (`gpushop secrets rotate`); how many jobs."""
    from gpushop.service.webhooks import box

    opened = box(cfg)
    found = store.sealed_jobs()
    for job_id, sealed in found:
        store.update_job(job_id, sealed_secrets=opened.reseal(sealed))
    return len(found)


# -- reading -------------------------------------------------------------------------------------
def visible(store: Store, user: User, job_id: str) -> Job:
    """The job if the user may see it (theirs, or any for an admin): 404 otherwise."""
    job = store.get_job(job_id)
    if job is None or job.user_id is None or not (user.is_admin or job.user_id == user.id):
        raise NotFound(f"no job {job_id!r}")
    return job


def view(store: Store, job: Job, supervisor: Supervisor | None = None) -> dict[str, Any]:
    """A job as GET /v1/jobs/{id} shows it: state, phase, rental, cost, timings."""
    summary = jobs.job_summary_in(store, job)
    rental = store.get(job.rental_id) if job.rental_id else None
    cost = summary["cost_usd"]
    if cost is None and job.details.get("rentals"):
        from gpushop.jobs.runner import JobRunner

        cost = JobRunner.cost_of(store, job)
    note = store.job_log.last_note(job.id)
    return {
        **summary,
        "user_id": job.user_id,
        "cost_usd": cost,
        "phase": note.data.decode(errors="replace") if note else job.state.value,
        "watched": owner_alive(
            job.owner_host,
            job.owner_pid,
            job.heartbeat_at,
            datetime.now(UTC),
            lease_until=job.lease_until,
        ),
        "rental": None
        if rental is None
        else {
            "rental_id": rental.id,
            "state": rental.state.value,
            "provider": rental.provider,
            "gpu_name": rental.gpu_name,
            "price_per_hour": rental.price_per_hour,
            "ssh": {"host": rental.ssh_host, "port": rental.ssh_port, "user": rental.ssh_user}
            if rental.ssh_host
            else None,
        },
        "log_bytes": store.job_log.size(job.id),
        "cancel_requested": bool(job.details.get("cancel_requested")),
        "plan": job.details.get("plan"),
    }


def listing(
    store: Store, user: User, *, everyone: bool, include_ended: bool
) -> list[dict[str, Any]]:
    """The user's jobs, newest first, as `gpushop jobs --json` rows (an admin's ``everyone``:
    all users')."""
    mine = None if everyone and user.is_admin else user.id
    found = store.list_jobs(active_only=not include_ended, user_id=mine, service_only=True)
    return [{**row, "user_id": job.user_id} for job, row in jobs.rows_for(store, found)]


def cancel(store: Store, supervisor: Supervisor, user: User, job_id: str) -> Job:
    """Ask for the job to be cancelled: its driver stops it (outputs so far kept, rental
    released), on whichever replica that is."""
    job = visible(store, user, job_id)
    if job.state.terminal:
        return job
    job = store.update_job(job_id, details={"cancel_requested": True})
    supervisor.cancel(job_id)
    return job
