"""/v1/jobs and /v1/train: submit a job (its inputs as an archive) or a FLUX LoRA training (its
dataset as an archive), list, get, cancel; the log as text from an offset and as a live SSE
stream that resumes from Last-Event-ID; the artifacts listed with their sha256 and downloaded.
A user sees their own jobs; an admin sees everyone's."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, File, Form, Header, Query, Request, Response, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile as StarletteUpload
from starlette.exceptions import HTTPException

from gpushop.api import job_stream
from gpushop.api.auth import CurrentUser
from gpushop.api.rentals import OfferFields
from gpushop.config import Settings
from gpushop.service import artifacts, team_jobs
from gpushop.service.job_supervisor import Supervisor
from gpushop.service.types import Store

router = APIRouter(prefix="/v1", tags=["jobs"])
M = TypeVar("M", bound=BaseModel)
MAX_TEXT = 4 * 1024 * 1024


class OfferBody(OfferFields):
    """The offer flags of `gpushop run` (and of `train`, raised to what the recipe needs)."""

    sort: Literal["value", "price", "reliability", "perf"] = "value"
    rebid: bool = False


class RunBody(BaseModel):
    """`gpushop run`'s options, as JSON (the ``spec`` part of the form)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    cmd: str = Field(min_length=1, max_length=65_536, description="run with bash -lc")
    name: str | None = Field(default=None, min_length=1, max_length=64)
    workdir: str = Field(default="/workspace", max_length=1024)
    inputs_to: str | None = Field(
        default=None, max_length=1024, description="where the inputs go (default: workdir)"
    )
    env: dict[str, str] = Field(default_factory=dict, description="plain values, stored")
    secrets: dict[str, str] = Field(
        default_factory=dict, description="kept encrypted; sent to the instance over SSH only"
    )
    downloads: list[str] = Field(
        default_factory=list, max_length=64, description="remote paths: the job's artifacts"
    )
    timeout: str | None = Field(default=None, max_length=32, description="e.g. 2h")
    sync_every: str = Field(default="10m", max_length=32, description="a duration, or off")
    max_duration: str | None = Field(default=None, max_length=32)
    resume_on_loss: int = Field(default=0, ge=0, le=10)
    image: str | None = Field(default=None, max_length=512)
    template: str | None = Field(default=None, max_length=128)
    offer: OfferBody = Field(default_factory=OfferBody)


class FluxBody(BaseModel):
    """`gpushop train flux-lora`'s options, as JSON (the ``options`` part of the form)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    trigger: str | None = Field(default=None, max_length=128)
    steps: int = Field(default=1000, ge=1, le=1_000_000)
    rank: int = Field(default=16, ge=1, le=1024)
    lr: float = Field(default=1e-4, gt=0, le=1)
    resolution: str = Field(default="512,768,1024", max_length=64)
    model: str = Field(default="black-forest-labs/FLUX.1-dev", max_length=256)
    save_every: int = Field(default=250, ge=1, le=1_000_000)
    image: str | None = Field(default=None, max_length=512)
    template: str | None = Field(default=None, max_length=128)
    resume_on_loss: int = Field(default=2, ge=0, le=10)
    sync_every: str = Field(default="5m", max_length=32)
    secrets: dict[str, str] = Field(default_factory=dict, description="HF_TOKEN for a gated model")
    offer: OfferBody = Field(default_factory=OfferBody)
    dry_run: bool = Field(default=False, description="plan only: nothing is rented")


class UnsupportedBody(HTTPException):
    def __init__(self, message: str) -> None:
        super().__init__(415, message)


def _parse(model: type[M], text: str | bytes, part: str) -> M:
    try:
        return model.model_validate_json(text)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", part, *e["loc"])} for e in exc.errors()]
        ) from None


def _store(request: Request) -> Store:
    store: Store = request.app.state.stores.get()
    return store


def _cfg(request: Request) -> Settings:
    cfg: Settings = request.app.state.settings
    return cfg


def _supervisor(request: Request) -> Supervisor:
    supervisor: Supervisor = request.app.state.replica.jobs
    return supervisor


async def _saved(upload: StarletteUpload, folder: Path) -> Path:
    """The upload as a file of its own (unpacked from there, then removed)."""
    target = folder / "upload"

    def copy() -> None:
        upload.file.seek(0)
        with target.open("wb") as out:
            shutil.copyfileobj(upload.file, out, 1024 * 1024)

    await asyncio.to_thread(copy)
    return target


_RUN_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/RunBody"}},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["spec"],
                "properties": {
                    "spec": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "description": "RunBody, as JSON",
                    },
                    "inputs": {
                        "type": "string",
                        "format": "binary",
                        "description": "tar, tar.gz or zip; unpacked into inputs_to",
                    },
                },
            }
        },
    },
}


@router.post("/jobs", status_code=202, openapi_extra={"requestBody": _RUN_BODY})
async def submit(user: CurrentUser, request: Request, response: Response) -> dict[str, Any]:
    """Run a command on the best offer: answers once the job is written (202, Location); the
    service rents, uploads, runs, follows, downloads the artifacts and releases, and finishes it
    even if this replica dies. The body: RunBody as JSON, or a form with ``spec`` (RunBody as
    JSON) and an ``inputs`` archive."""
    cfg, store = _cfg(request), _store(request)
    owner = request.app.state.replica.owner
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    with tempfile.TemporaryDirectory(dir=_tmp_root(cfg)) as tmp:
        archive: Path | None = None
        if kind == "application/json":
            body = _parse(RunBody, await request.body(), "body")
        elif kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
            async with request.form(max_files=1, max_fields=4) as form:
                spec, inputs = form.get("spec"), form.get("inputs")
                if not isinstance(spec, str):
                    raise RequestValidationError(
                        [{"loc": ("body", "spec"), "msg": "Field required", "type": "missing"}]
                    )
                body = _parse(RunBody, spec, "spec")
                if isinstance(inputs, StarletteUpload):
                    archive = await _saved(inputs, Path(tmp))
        else:
            raise UnsupportedBody("send RunBody as application/json, or a multipart/form-data form")
        req = team_jobs.RunRequest(
            **{**body.model_dump(), "offer": team_jobs.OfferRequest(**body.offer.model_dump())}
        )
        job = await asyncio.to_thread(team_jobs.submit_run, cfg, store, owner, user, req, archive)
    _supervisor(request).start(job.id)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return await asyncio.to_thread(team_jobs.view, store, job)


def document(schema: dict[str, Any]) -> None:
    """Put the JSON parts' models in the OpenAPI document (the form's ``spec`` and
    ``options`` are JSON of these), for clients and schemathesis alike."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (RunBody, FluxBody):
        found = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(found.pop("$defs", {}))
        components[model.__name__] = found
    for name, part in components.items():
        if name.startswith("Body_train_flux_lora"):
            part["properties"]["options"]["contentMediaType"] = "application/json"


@router.post("/train/flux-lora", status_code=202)
async def train_flux_lora(
    user: CurrentUser,
    request: Request,
    response: Response,
    options: Annotated[str, Form(description="FluxBody, as JSON")],
    dataset: Annotated[UploadFile, File(description="the dataset folder: tar, tar.gz or zip")],
) -> dict[str, Any]:
    """Train a FLUX LoRA: the dataset is checked as `gpushop train flux-lora` checks it (422
    with every bad file listed, nothing rented), the best reliable offer found, and the job
    started (202, Location); ``dry_run``: the plan only (200)."""
    body = _parse(FluxBody, options, "options")
    cfg, store = _cfg(request), _store(request)
    fields = body.model_dump(exclude={"dry_run"})
    req = team_jobs.FluxRequest(
        **{**fields, "offer": team_jobs.OfferRequest(**body.offer.model_dump())}
    )
    incoming = await asyncio.to_thread(artifacts.incoming, cfg)
    try:
        with tempfile.TemporaryDirectory(dir=_tmp_root(cfg)) as tmp:
            archive = await _saved(dataset, Path(tmp))
            limit = cfg.gpushop_max_upload_bytes * artifacts.UNPACK_FACTOR
            await asyncio.to_thread(artifacts.unpack, archive, incoming / "inputs", limit)
        folder = artifacts.dataset_in(incoming / "inputs")
        run = await team_jobs.plan_flux(cfg, req, folder)
        if body.dry_run:
            response.status_code = 200
            return {"plan": run.to_json(), "lines": run.lines}
        owner = request.app.state.replica.owner
        job = await asyncio.to_thread(
            team_jobs.create_flux, cfg, store, owner, user, req, run, incoming
        )
    finally:
        await asyncio.to_thread(shutil.rmtree, incoming, True)  # gone once it is the job's
    _supervisor(request).start(job.id)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return await asyncio.to_thread(team_jobs.view, store, job)


def _tmp_root(cfg: Settings) -> Path:
    path = artifacts.root(cfg) / "incoming"
    path.mkdir(parents=True, exist_ok=True)
    return path


@router.get("/jobs")
def list_(
    user: CurrentUser,
    request: Request,
    everyone: Annotated[bool, Query(alias="all")] = False,
    ended: bool = False,
) -> list[dict[str, Any]]:
    """Your jobs, newest first (an admin's ``all``: everyone's), unfinished ones unless
    ``ended``; each row as `gpushop jobs --json` shows it."""
    return team_jobs.listing(_store(request), user, everyone=everyone, include_ended=ended)


@router.get("/jobs/{job_id}")
def get(job_id: str, user: CurrentUser, request: Request) -> dict[str, Any]:
    """State, phase (the latest step), rental, cost so far, timings."""
    store = _store(request)
    return team_jobs.view(store, team_jobs.visible(store, user, job_id))


@router.post("/jobs/{job_id}/cancel", status_code=202)
def cancel(job_id: str, user: CurrentUser, request: Request) -> dict[str, Any]:
    """Stop the job: what it wrote so far is downloaded and its rental released, by whichever
    replica drives it; cancelling an ended job changes nothing."""
    store = _store(request)
    job = team_jobs.cancel(store, _supervisor(request), user, job_id)
    return team_jobs.view(store, job)


@router.get(
    "/jobs/{job_id}/log",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}, "text/event-stream": {}}}},
)
async def log_text(
    job_id: str,
    user: CurrentUser,
    request: Request,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_TEXT)] = MAX_TEXT,
    accept: Annotated[str | None, Header()] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Response:
    """The job's output from byte ``offset`` (at most ``limit`` bytes); X-Next-Offset says
    where to go on, X-Log-Size how much there is, X-Job-State whether more may come. With
    ``Accept: text/event-stream``: the live stream (as /log/stream)."""
    if accept and "text/event-stream" in accept:
        return await log_stream(job_id, user, request, offset, last_event_id)
    store = _store(request)
    job = await asyncio.to_thread(team_jobs.visible, store, user, job_id)
    data = await asyncio.to_thread(store.job_log.read, job.id, offset, limit)
    size = await asyncio.to_thread(store.job_log.size, job.id)
    return Response(
        data,
        media_type="text/plain; charset=utf-8",
        headers={
            "X-Log-Offset": str(offset),
            "X-Next-Offset": str(offset + len(data)),
            "X-Log-Size": str(size),
            "X-Job-State": job.state.value,
        },
    )


@router.get(
    "/jobs/{job_id}/log/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def log_stream(
    job_id: str,
    user: CurrentUser,
    request: Request,
    offset: Annotated[int | None, Query(ge=0)] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Server-sent events: ``log`` (the job's output, ``{"offset", "text"}``), ``note``
    (gpushop's steps: rented, uploaded, ...), ``end`` (``{"state", "exit_code", "error"}``,
    then the stream closes). Each event's id is its place in the log: reconnect with
    ``Last-Event-ID`` and nothing is lost or repeated (or start at a byte ``offset``)."""
    store = _store(request)
    job = await asyncio.to_thread(team_jobs.visible, store, user, job_id)
    after = job_stream.resume_point(last_event_id)
    if after is None and offset:
        after = await asyncio.to_thread(store.job_log.seq_at, job.id, offset)
    events = job_stream.events(store, _supervisor(request), job.id, after or 0, offset or 0)
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/jobs/{job_id}/artifacts")
async def list_artifacts(job_id: str, user: CurrentUser, request: Request) -> list[dict[str, Any]]:
    """What the job's downloads brought back so far: path, size, sha256."""
    store, cfg = _store(request), _cfg(request)
    job = await asyncio.to_thread(team_jobs.visible, store, user, job_id)
    digests: artifacts.Digests = request.app.state.digests
    found = await asyncio.to_thread(artifacts.listing, artifacts.outputs_dir(cfg, job.id), digests)
    return [a.as_json() for a in found]


@router.get(
    "/jobs/{job_id}/artifacts/{path:path}",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def download_artifact(
    job_id: str, path: str, user: CurrentUser, request: Request
) -> FileResponse:
    """One artifact, streamed; its sha256 in X-Checksum-Sha256 (and the ETag)."""
    store, cfg = _store(request), _cfg(request)
    job = await asyncio.to_thread(team_jobs.visible, store, user, job_id)
    real = await asyncio.to_thread(artifacts.resolve, artifacts.outputs_dir(cfg, job.id), path)
    digests: artifacts.Digests = request.app.state.digests
    size, sha = await asyncio.to_thread(digests.of, real)
    return FileResponse(
        real,
        media_type="application/octet-stream",
        filename=real.name,
        headers={"X-Checksum-Sha256": sha, "ETag": f'"{sha}"', "Content-Length": str(size)},
    )
