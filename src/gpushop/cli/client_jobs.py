"""`run`, `jobs`, `logs`, `attach` and `train flux-lora` through a team service (GPUSHOP_SERVER, or
`gpushop login`): the service drives the job, this terminal follows it, with the progress lines,
log, summary, ``--json`` keys and exit codes of the local commands (rendered by cli/jobs.py).

* ``run --upload DIR[:REMOTE]``: the uploads are packed here into one tar.gz (a temporary file,
  streamed from disk), which the service unpacks into one folder of the instance: each DIR
  still lands at its REMOTE (client/jobs.py inputs_layout). ``--download REMOTE[:LOCAL]``: the
  job's artifacts are downloaded to LOCAL at the end, each checked against its sha256.
  ``--env`` secrets (``--env K``, or a value that looks like a credential) are sent once, in
  the request's ``secrets``; the service keeps them encrypted.
* The log comes as server-sent events, resumed where it stopped when the connection drops.
* Ctrl-C (or SIGTERM) while ``run``, ``train`` or ``attach`` follows a job does what it does to
  a local job: the job is cancelled (the service downloads what it wrote and releases its
  rental); the command waits for its end, brings back what came back and prints the summary
  (exit 130). Ctrl-C again stops waiting: the service finishes the cancel on its own.
  ``logs -f`` only stops following.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import posixpath
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from gpushop.cli.common import call_service, print_json, warn
from gpushop.cli.jobs import TerminalOutput, detached, show_end
from gpushop.errors import GpushopError, UsageError
from gpushop.models import JobState

if TYPE_CHECKING:
    from gpushop.client.http import ApiClient
    from gpushop.client.session import Remote
    from gpushop.service.types import JobSpec

# a job's summary (`run --json`, `attach --json`): the local command's keys, from the service's view
SUMMARY_KEYS = (
    "job_id",
    "kind",
    "name",
    "state",
    "exit_code",
    "error",
    "cost_usd",
    "rentals",
    "resumes",
    "resumed",
    "timings",
    "created_at",
    "ended_at",
)
COST_POLL_S = 2.0  # a training's bar shows the cost so far, asked this often


def summary(view: dict[str, Any]) -> dict[str, Any]:
    return {key: view.get(key) for key in SUMMARY_KEYS}


def listing(service: Remote, *, include_ended: bool) -> list[dict[str, Any]]:
    """The user's jobs as `jobs --json` rows (the service adds whose they are: not shown)."""
    from gpushop.client import jobs as api

    rows = call_service(service, lambda c: api.jobs(c, include_ended=include_ended))
    return [{k: v for k, v in row.items() if k != "user_id"} for row in rows]


# --- following --------------------------------------------------------------------------------


async def follow(
    client: ApiClient, view: dict[str, Any], output: TerminalOutput, *, cancel_on_interrupt: bool
) -> dict[str, Any]:
    """Show the job's live log and steps until its end; its final view. Interrupted (and
    ``cancel_on_interrupt``): the job is cancelled, and followed to its end all the same."""
    from gpushop.client import jobs as api

    job_id = str(view["job_id"])
    latest = dict(view)
    output.cost = lambda: latest.get("cost_usd")
    poll = asyncio.create_task(_poll_cost(client, job_id, latest)) if output.bar else None
    last: str | None = None
    cancelling = False
    try:
        while True:
            try:
                events = api.follow_log(client, job_id, after=last, on_reconnect=output.message)
                async with contextlib.aclosing(events):
                    async for event in events:
                        last = event.id or last
                        if event.kind == "log":
                            output.log(str(event.data.get("text", "")).encode())
                        elif event.kind == "note":
                            output.message(str(event.data.get("text", "")))
                return await api.job(client, job_id)
            except asyncio.CancelledError:
                if cancelling or not cancel_on_interrupt:
                    raise
                cancelling = True
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()  # handled: what follows may wait again
                output.message(
                    f"interrupted: cancelling job {job_id} (the service downloads what it wrote "
                    "and releases its rental; Ctrl-C again stops waiting for that)"
                )
                await api.cancel(client, job_id)
    finally:
        if poll is not None:
            poll.cancel()


async def _poll_cost(client: ApiClient, job_id: str, latest: dict[str, Any]) -> None:
    from gpushop.client import jobs as api

    while True:
        await asyncio.sleep(COST_POLL_S)
        with contextlib.suppress(GpushopError):  # a courtesy figure: never fails the job
            latest["cost_usd"] = (await api.job(client, job_id)).get("cost_usd")


async def bring_back(
    client: ApiClient, job_id: str, where: dict[str, Path], output: TerminalOutput
) -> None:
    """Download the job's artifacts named in ``where`` (a download's remote basename -> the
    local path), each checked against its sha256."""
    from gpushop.client import jobs as api

    if not where:
        return
    found = api.placed(await api.artifacts(client, job_id), where)
    for name, local in where.items():
        mine = [(a, p) for a, p in found if str(a["path"]).split("/")[0] == name]
        if not mine:
            output.message(f"nothing came back for {name}")
            continue
        size = await api.download(client, job_id, mine, output.progress(f"download {name}"))
        output.message(
            f"downloaded {name} -> {local}: {len(mine)} files, {size / 1e6:.1f} MB, "
            "verified by sha256"
        )


def _by_terminal(
    service: Remote, output: TerminalOutput, go: Any, job_id: str | None = None
) -> dict[str, Any]:
    """Run ``go(client)`` with the output closed after, and the hidden-lines note, as locally."""
    try:
        view: dict[str, Any] = call_service(service, go)
    finally:
        output.close()
    if output.hidden_lines:
        print(
            f"({output.hidden_lines} more lines of the job's log: gpushop logs "
            f"{job_id or view['job_id']}; --full-log shows them all as they come)",
            file=sys.stderr,
        )
    return view


# --- run --------------------------------------------------------------------------------------


def run(
    service: Remote,
    spec: JobSpec,
    secrets: dict[str, str],
    body: dict[str, Any],
    *,
    detach: bool,
    as_json: bool,
) -> None:
    """`gpushop run` through the service. ``body``: RunBody but for what the spec holds
    (env, secrets, downloads, the inputs' folder)."""
    from gpushop.client import jobs as api

    # `--env K`: your value (parse_env checked it is set), sent with the job as a secret
    mine = {name: os.environ[name] for name in spec.env_from_local if name not in secrets}
    secrets = {**mine, **secrets}
    body = {
        **body,
        "workdir": spec.workdir,
        "env": spec.env,
        "secrets": secrets,
        "downloads": [t.remote for t in spec.downloads],
    }
    where = {posixpath.basename(t.remote.rstrip("/")): Path(t.local) for t in spec.downloads}
    uploads = [(t.local, t.remote) for t in spec.uploads]
    layout = api.inputs_layout(uploads) if uploads else None
    if detach and where:
        warn(
            "--download with --detach: the artifacts stay on the service (`attach` follows the "
            "job, it does not download them); leave out --detach to have them here"
        )
    output = TerminalOutput(log_to_stderr=as_json)

    async def go(client: ApiClient) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="gpushop-inputs-") as tmp:
            archive = None
            if layout is not None:
                body["inputs_to"], entries = layout
                archive = Path(tmp) / "inputs.tar.gz"
                packed = await asyncio.to_thread(api.pack, entries, archive)
                for skipped in packed.skipped:
                    warn(f"--upload: {skipped} is not a file or folder: left out")
                output.message(
                    f"uploading {packed.files} files ({packed.bytes / 1e6:.1f} MB) for "
                    f"{body['inputs_to']} to {client.remote.server}"
                )
            view = await api.submit_run(client, body, archive, output.progress("upload inputs"))
        if detach:
            return view
        print(f"job {view['job_id']}", file=sys.stderr)
        final = await follow(client, view, output, cancel_on_interrupt=True)
        await bring_back(client, str(final["job_id"]), where, output)
        return final

    view = _by_terminal(service, output, go)
    if detach:
        detached(str(view["job_id"]), as_json)
        return
    show_end(summary(view), as_json)


# --- logs, attach -----------------------------------------------------------------------------


def logs(service: Remote, job_id: str, *, follow_: bool) -> None:
    """The job's log as the service keeps it; ``follow_``: live until the job ends."""
    from gpushop.client import jobs as api

    def write(data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()

    if not follow_:
        call_service(service, lambda c: api.read_log(c, job_id, write))
        return
    output = TerminalOutput()

    async def go(client: ApiClient) -> dict[str, Any]:
        return await follow(client, {"job_id": job_id}, output, cancel_on_interrupt=False)

    _by_terminal(service, output, go, job_id)


def attach(service: Remote, job_id: str, *, quiet: bool, full_log: bool, as_json: bool) -> None:
    """Follow a job the service drives to its end (its log from the start), then its summary
    and exit code; Ctrl-C cancels it, as it does locally."""
    from gpushop.client import jobs as api

    view = call_service(service, lambda c: api.job(c, job_id))
    if not JobState(view["state"]).terminal:
        from gpushop.service.jobs import flux_bar, milestones_for

        flux = view["kind"] == "flux-lora"
        output = TerminalOutput(
            show_log=not quiet,
            log_to_stderr=as_json,
            bar=flux_bar(str(view["name"])) if flux else None,
            keep=None if full_log else milestones_for(str(view["kind"])),
        )
        print(f"job {job_id} is run by {service.server}: following it", file=sys.stderr)

        async def go(client: ApiClient) -> dict[str, Any]:
            return await follow(client, view, output, cancel_on_interrupt=True)

        view = _by_terminal(service, output, go, job_id)
    show_end(summary(view), as_json)


# --- train flux-lora --------------------------------------------------------------------------


def flux_lora(
    service: Remote,
    *,
    dataset: Path,
    options: dict[str, Any],
    out: Path | None,
    yes: bool,
    detach: bool,
    full_log: bool,
    as_json: bool,
) -> None:
    """`gpushop train flux-lora` through the service: the dataset is sent and checked there (a
    bad one: every bad file listed, exit 2, nothing rented), the plan shown, confirmed unless
    ``yes``, the training followed, the LoRA's folder downloaded to ``out`` and verified."""
    from gpushop.client import jobs as api
    from gpushop.client.http import BadDataset
    from gpushop.service.jobs import flux_bar, milestones_for
    from gpushop.service.types import DatasetError

    if not dataset.exists():  # as the local check says it
        raise DatasetError(dataset, ["the folder does not exist"])
    if not dataset.is_dir():
        raise DatasetError(dataset, ["not a folder (give the folder holding the images)"])
    name = str(options["name"])
    token = os.environ.get("HF_TOKEN")
    if token:  # a gated model's: sent once, kept encrypted by the service
        options = {**options, "secrets": {"HF_TOKEN": token}}
    out_dir = (out or Path("output") / name).resolve()
    output = TerminalOutput(
        log_to_stderr=as_json,
        bar=flux_bar(name),
        keep=None if full_log else milestones_for("flux-lora"),
    )
    with tempfile.TemporaryDirectory(prefix="gpushop-dataset-") as tmp:
        archive = Path(tmp) / "dataset.tar.gz"
        # the trainer reads the folder's own files: its subfolders are not sent
        packed = api.pack([(dataset, dataset.resolve().name)], archive, top_level_only=True)
        output.message(
            f"sending the dataset ({packed.files} files, {packed.bytes / 1e6:.1f} MB) to "
            f"{service.server} to be checked and planned"
        )

        def send(dry_run: bool) -> Any:
            label = "upload dataset"
            return lambda c: api.train_flux(
                c, options, archive, output.progress(label), dry_run=dry_run
            )

        try:
            plan = call_service(service, send(True))
        except BadDataset as exc:
            raise DatasetError(dataset, exc.problems) from None
        output.close()
        if as_json and not detach:
            print_json({"plan": plan["plan"]})
        else:
            print("\n".join(plan["lines"]), file=sys.stderr if as_json else sys.stdout)
        if not yes:
            if not sys.stdin.isatty():
                raise UsageError("not a terminal: add --yes to rent without asking")
            if not typer.confirm("Rent and train?", default=True):
                raise typer.Exit(1)

        async def go(client: ApiClient) -> dict[str, Any]:
            try:
                view: dict[str, Any] = await send(False)(client)
            except BadDataset as exc:
                raise DatasetError(dataset, exc.problems) from None
            if detach:
                return view
            print(f"job {view['job_id']}", file=sys.stderr)
            final = await follow(client, view, output, cancel_on_interrupt=True)
            await bring_back(client, str(final["job_id"]), {name: out_dir}, output)
            return final

        view = _by_terminal(service, output, go)
    if detach:
        detached(str(view["job_id"]), as_json, {"plan": plan["plan"]}, hint=False)
        return
    if view["state"] == JobState.SUCCEEDED.value:
        problems = _verify_lora(view, name, int(options["rank"]), out_dir)
        if problems:
            raise GpushopError(f"the LoRA downloaded to {out_dir}: {'; '.join(problems)}")
        if not as_json:
            final = out_dir / f"{name}.safetensors"
            print(f"LoRA: {final} ({final.stat().st_size / 1e6:.1f} MB)")
    show_end(summary(view), as_json)


def _verify_lora(view: dict[str, Any], name: str, rank: int, out_dir: Path) -> list[str]:
    """The recipe's own check of the final LoRA (as a local run's hooks make it), on the copy
    downloaded here."""
    from gpushop.service.training import flux_hooks_for
    from gpushop.service.types import Job

    now = datetime.now(UTC)
    # the hook takes the job's record (it reads nothing of it): the service's job, as one
    record = Job(str(view["job_id"]), "flux-lora", name, JobState(view["state"]), now, now)
    return flux_hooks_for(name, rank, out_dir).verify(record)
