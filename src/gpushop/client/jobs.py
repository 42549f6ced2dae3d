"""What `run`, `jobs`, `logs`, `attach` and `train flux-lora` ask a team service: submit a job with
its inputs (one archive, packed here from the upload folders) or a training with its dataset,
list and cancel jobs, read a job's log (as text from an offset, or live as server-sent events,
resumed with Last-Event-ID when the connection drops), and download its artifacts, each checked
against the sha256 the service lists.

The job's views are the service's JSON (GET /v1/jobs/{id}); the rendering is the CLI's, the same
as for a local job.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import posixpath
import stat
import tarfile
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from gpushop.client.http import ApiClient, ServiceUnreachable
from gpushop.errors import GpushopError, NotFound, UsageError

Notify = Callable[[str], None]
Progress = Callable[[int, int], None]  # (bytes done, bytes in all)

SUBMIT_TIMEOUT_S = 600.0  # an upload, then the service unpacks it (and plans a training)
# the live log: the service sends a keepalive every 15 s, so a silence this long is a dead link
STREAM_READ_TIMEOUT_S = 45.0
# a stream that keeps failing without a single event in between: given up after this many
RECONNECTS = 8
RECONNECT_DELAYS_S = (0.5, 1.0, 2.0, 3.0, 5.0)
DOWNLOAD_ATTEMPTS = 3
CHUNK = 1024 * 1024
PART_SUFFIX = ".gpushop-part"


def _path(job_id: str, action: str = "") -> str:
    return f"/v1/jobs/{quote(job_id, safe='')}" + (f"/{action}" if action else "")


def _no_job(job_id: str) -> UsageError:
    """What the local commands say of a job they do not know (another user's, here)."""
    return UsageError(f"no job {job_id!r} (see `gpushop jobs --all`)")


# --- the inputs archive -----------------------------------------------------------------------


def inputs_layout(uploads: list[tuple[str, str]]) -> tuple[str, list[tuple[Path, str]]]:
    """The service unpacks ONE inputs archive into one folder of the instance (``inputs_to``):
    that folder, and what the archive holds (each local file or folder, and its place in the
    archive: "" for the root), so that every ``(local, remote)`` upload lands at its remote
    path, as a local run puts it. Uploads whose remote paths share no folder but ``/`` are
    refused."""
    parents = [r if os.path.isdir(local) else posixpath.dirname(r) for local, r in uploads]
    root = posixpath.commonpath(parents)
    if root == "/":
        where = ", ".join(remote for _, remote in uploads)
        raise UsageError(
            f"--upload: through a team service the uploads travel as one archive, unpacked into "
            f"one folder of the instance, and {where} share none but /; put them under one "
            "folder (e.g. --upload DIR:/workspace/NAME)"
        )
    entries = []
    for local, remote in uploads:
        place = posixpath.relpath(remote, root)
        entries.append((Path(local), "" if place == "." else place))
    return root, entries


@dataclass(frozen=True)
class Packed:
    files: int
    bytes: int
    skipped: list[str]  # links to folders, sockets...: not in the archive


def pack(entries: list[tuple[Path, str]], target: Path, *, top_level_only: bool = False) -> Packed:
    """Write ``entries`` (a file or folder, and its place in the archive) as a tar.gz at
    ``target``. A link to a file is packed as the file (the service takes no links); a link
    to a folder, or anything else that is not a file or folder, is left out and named in
    ``skipped``. ``top_level_only``: a folder's own files only (a dataset: its subfolders are
    not read by the trainer)."""
    files = size = 0
    skipped: list[str] = []
    with tarfile.open(target, "w:gz", compresslevel=6, dereference=True) as tar:

        def add_file(path: Path, name: str) -> None:
            nonlocal files, size
            try:
                info = path.stat()  # the link's target
            except OSError:
                skipped.append(str(path))
                return
            if not stat.S_ISREG(info.st_mode):
                skipped.append(str(path))
                return
            tar.add(path, arcname=name, recursive=False)
            files += 1
            size += info.st_size

        for local, place in entries:
            if not local.is_dir():
                add_file(local, place or local.name)
                continue
            for dirpath, dirnames, filenames in os.walk(local):
                here = Path(dirpath)
                relative = here.relative_to(local).as_posix()
                prefix = posixpath.normpath(posixpath.join(place, relative)) if place else relative
                prefix = "" if prefix == "." else prefix
                if prefix:
                    tar.add(here, arcname=prefix, recursive=False)
                for name in sorted(filenames):
                    add_file(here / name, posixpath.join(prefix, name) if prefix else name)
                if top_level_only:
                    dirnames.clear()
                for name in list(dirnames):
                    if (here / name).is_symlink():
                        skipped.append(str(here / name))
                dirnames[:] = sorted(d for d in dirnames if not (here / d).is_symlink())
    return Packed(files, size, skipped)


class _Reading(io.FileIO):
    """A file whose reads (by httpx, as the upload streams) are reported to ``progress``."""

    def __init__(self, path: Path, progress: Progress) -> None:
        super().__init__(path, "rb")
        self._progress = progress
        self._total = os.fstat(self.fileno()).st_size
        self._done = 0

    def read(self, size: int | None = -1, /) -> bytes:
        chunk = super().read(size)
        self._done += len(chunk or b"")
        self._progress(self._done, self._total)
        return chunk or b""

    def seek(self, offset: int, whence: int = os.SEEK_SET, /) -> int:
        position = super().seek(offset, whence)
        self._done = position
        return position


# --- submitting -------------------------------------------------------------------------------


async def submit_run(
    client: ApiClient, body: dict[str, Any], inputs: Path | None, progress: Progress
) -> dict[str, Any]:
    """POST /v1/jobs: the job's view (state pending). ``inputs``: the archive, streamed."""
    if inputs is None:
        view: dict[str, Any] = await client.call(
            "POST", "/v1/jobs", json=body, read_timeout=SUBMIT_TIMEOUT_S
        )
        return view
    with _Reading(inputs, progress) as archive:
        view = await client.call(
            "POST",
            "/v1/jobs",
            data={"spec": orjson.dumps(body).decode()},
            files={"inputs": ("inputs.tar.gz", archive, "application/gzip")},
            read_timeout=SUBMIT_TIMEOUT_S,
        )
    return view


async def train_flux(
    client: ApiClient,
    options: dict[str, Any],
    dataset: Path,
    progress: Progress,
    *,
    dry_run: bool,
) -> dict[str, Any]:
    """POST /v1/train/flux-lora with the dataset archive: the plan (``dry_run``: ``{"plan",
    "lines"}``, nothing rented) or the job's view. A bad dataset: BadDataset, every bad file."""
    form = {"options": orjson.dumps({**options, "dry_run": dry_run}).decode()}
    with _Reading(dataset, progress) as archive:
        answer: dict[str, Any] = await client.call(
            "POST",
            "/v1/train/flux-lora",
            data=form,
            files={"dataset": ("dataset.tar.gz", archive, "application/gzip")},
            read_timeout=SUBMIT_TIMEOUT_S,
        )
    return answer


# --- reading ----------------------------------------------------------------------------------


async def job(client: ApiClient, job_id: str) -> dict[str, Any]:
    """GET /v1/jobs/{id}: state, phase, rental, cost so far, timings."""
    try:
        view: dict[str, Any] = await client.get(_path(job_id))
    except NotFound:
        raise _no_job(job_id) from None
    return view


async def jobs(client: ApiClient, *, include_ended: bool) -> list[dict[str, Any]]:
    """The user's jobs, newest first, as the service lists them."""
    rows: list[dict[str, Any]] = await client.get(
        "/v1/jobs", {"ended": "true" if include_ended else None}
    )
    return rows


async def cancel(client: ApiClient, job_id: str) -> dict[str, Any]:
    """Ask the service to stop the job: it downloads what the job wrote and releases."""
    try:
        view: dict[str, Any] = await client.call("POST", _path(job_id, "cancel"))
    except NotFound:
        raise _no_job(job_id) from None
    return view


async def read_log(client: ApiClient, job_id: str, write: Callable[[bytes], None]) -> int:
    """The job's log as it is now, page by page from offset 0, each page to ``write``; its
    size."""
    offset = 0
    while True:
        try:
            response = await client.send(
                "GET",
                _path(job_id, "log"),
                params={"offset": offset},
                headers={"Accept": "text/plain"},
                unclear_retry=True,
            )
        except NotFound:
            raise _no_job(job_id) from None
        if response.content:
            write(response.content)
        offset = int(response.headers.get("x-next-offset", offset + len(response.content)))
        size = int(response.headers.get("x-log-size", offset))
        if not response.content or offset >= size:
            return offset


@dataclass(frozen=True)
class LogEvent:
    """One event of the live log: ``log`` (``{"offset", "text"}``: the job's output), ``note``
    (``{"text"}``: gpushop's steps), ``end`` (``{"state", "exit_code", "error"}``)."""

    kind: str
    data: dict[str, Any]
    id: str | None = None


async def _events(response: httpx.Response) -> AsyncIterator[LogEvent]:
    """Server-sent events as they arrive (comments, keepalives and ``retry:`` skipped)."""
    fields: dict[str, str] = {}
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data:
                try:
                    payload = orjson.loads("\n".join(data))
                except orjson.JSONDecodeError:
                    payload = None
                if isinstance(payload, dict):
                    yield LogEvent(fields.get("event", "message"), payload, fields.get("id"))
            fields, data = {}, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        else:
            fields[name] = value


async def follow_log(
    client: ApiClient,
    job_id: str,
    *,
    after: str | None = None,
    on_reconnect: Notify | None = None,
) -> AsyncGenerator[LogEvent, None]:
    """The job's live log from event ``after`` (None: from the start) until its ``end``
    event. A connection that drops, stalls or closes early is opened again with Last-Event-ID:
    nothing is lost or repeated. Gives up (ServiceUnreachable) after RECONNECTS failures in a
    row with no event between them."""
    last = after
    failures = 0
    while True:
        headers = {"Accept": "text/event-stream"}
        if last is not None:
            headers["Last-Event-ID"] = last
        why = "the service closed the stream before the job's end"
        try:
            async with client.stream(
                _path(job_id, "log/stream"), headers=headers, read_timeout=STREAM_READ_TIMEOUT_S
            ) as response:
                async for event in _events(response):
                    failures = 0
                    if event.id is not None:
                        last = event.id
                    yield event
                    if event.kind == "end":
                        return
        except NotFound:
            raise _no_job(job_id) from None
        except ServiceUnreachable as exc:
            why = str(exc)
        except httpx.TransportError as exc:  # cut or stalled while it streamed
            why = f"the connection to the service dropped ({type(exc).__name__})"
        failures += 1
        if failures > RECONNECTS:
            raise ServiceUnreachable(
                f"{why}; gave up after {RECONNECTS} attempts (`gpushop logs {job_id} -f` "
                "follows it again)"
            )
        if on_reconnect is not None:
            since = f" after event {last}" if last is not None else ""
            on_reconnect(f"{why}: reconnecting{since}")
        await asyncio.sleep(RECONNECT_DELAYS_S[min(failures, len(RECONNECT_DELAYS_S)) - 1])


# --- artifacts --------------------------------------------------------------------------------


async def artifacts(client: ApiClient, job_id: str) -> list[dict[str, Any]]:
    """What the job's downloads brought back to the service: ``[{path, size, sha256}]``."""
    try:
        found: list[dict[str, Any]] = await client.get(_path(job_id, "artifacts"))
    except NotFound:
        raise _no_job(job_id) from None
    return found


def placed(
    found: list[dict[str, Any]], where: dict[str, Path]
) -> list[tuple[dict[str, Any], Path]]:
    """Each artifact under one of ``where``'s names (the first part of its path: a download's
    remote basename) with the local file it becomes: ``name/a/b`` -> ``where[name]/a/b``, and an
    artifact that is the name itself (a file's download) -> ``where[name]``."""
    out = []
    for artifact in found:
        parts = PurePosixPath(str(artifact["path"])).parts
        if not parts or ".." in parts or parts[0] == "/" or parts[0] not in where:
            continue
        out.append((artifact, where[parts[0]].joinpath(*parts[1:])))
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


async def download(
    client: ApiClient,
    job_id: str,
    wanted: list[tuple[dict[str, Any], Path]],
    progress: Progress,
) -> int:
    """Download each artifact to its local file, written whole or not at all (a part file,
    renamed once its sha256 is the one the service lists); a file already there with that
    sha256 is kept. The bytes downloaded."""
    total = sum(int(a["size"]) for a, _ in wanted)
    done = 0
    for artifact, target in wanted:
        expected = str(artifact["sha256"])
        there = target.is_file() and target.stat().st_size == artifact["size"]
        if there and await asyncio.to_thread(_sha256, target) == expected:
            done += int(artifact["size"])
            progress(done, total)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
            try:
                await _fetch(client, job_id, artifact, target, progress, (done, total))
                break
            except (httpx.TransportError, ServiceUnreachable, _Mismatch) as exc:
                if attempt == DOWNLOAD_ATTEMPTS:
                    if isinstance(exc, httpx.TransportError):
                        raise ServiceUnreachable(
                            f"downloading {artifact['path']} from {client.remote.server} failed "
                            f"{DOWNLOAD_ATTEMPTS} times ({type(exc).__name__})"
                        ) from None
                    raise GpushopError(str(exc)) from None
                await asyncio.sleep(RECONNECT_DELAYS_S[attempt - 1])
        done += int(artifact["size"])
    return done


class _Mismatch(GpushopError):
    pass


async def _fetch(
    client: ApiClient,
    job_id: str,
    artifact: dict[str, Any],
    target: Path,
    progress: Progress,
    so_far: tuple[int, int],
) -> None:
    path = str(artifact["path"])
    part = target.with_name(target.name + PART_SUFFIX)
    digest = hashlib.sha256()
    got = 0
    try:
        async with client.stream(_path(job_id, f"artifacts/{quote(path, safe='/')}")) as response:
            announced = response.headers.get("x-checksum-sha256")
            with part.open("wb") as out:
                async for chunk in response.aiter_bytes(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    got += len(chunk)
                    progress(so_far[0] + got, so_far[1])
        actual = digest.hexdigest()
        for claimed in (str(artifact["sha256"]), announced):
            if claimed is not None and claimed != actual:
                raise _Mismatch(
                    f"{path}: downloaded {got} bytes whose sha256 is {actual}, "
                    f"not the {claimed} the service lists: not kept"
                )
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
