"""``gpushop run / jobs / logs / attach / timings``: jobs on rented instances."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gpushop.cli.common import print_json, run_async, settings, team_service
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
    SortOpt,
    UnverifiedOpt,
)
from gpushop.models import SortKey

if TYPE_CHECKING:
    from gpushop.cli.live_progress import LiveLog
    from gpushop.service.types import Hooks, Job, Progress

FullLogOpt = Annotated[
    bool,
    typer.Option(
        "--full-log", help="Show the trainer's whole log as it comes, not only its milestones."
    ),
]

# exit codes of a job command: its outcome, as a shell would see it
EXIT_BY_STATE = {"succeeded": 0, "failed": 1, "timed_out": 124, "cancelled": 130}


class TerminalOutput:
    """Progress lines on stderr, the job's log on stdout, transfers as rich progress bars.

    With ``bar`` (a recipe's parser of its trainer's progress bar), the trainer's bar is one live
    bar on a terminal and a plain line now and then elsewhere (cli/live_progress.py); ``cost``
    gives the cost so far that it shows."""

    def __init__(
        self,
        *,
        show_log: bool = True,
        log_to_stderr: bool = False,
        bar: Callable[[str], Progress | None] | None = None,
        keep: Callable[[str], bool] | None = None,
    ) -> None:
        self.show_log = show_log
        self.keep = keep
        self._sink = sys.stderr if log_to_stderr else sys.stdout
        self._bars: Any = None
        self.bar = bar
        self.cost: Callable[[], float | None] | None = None
        self._live_log: LiveLog | None = None

    def message(self, text: str) -> None:
        self._stop_bars()
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        if self._live_log is not None and self._live_log.message(f"[{stamp}] {text}"):
            return  # above the live bar
        print(f"[{stamp}] {text}", file=sys.stderr, flush=True)

    def log(self, data: bytes) -> None:
        if self.show_log and self.bar is not None:
            self._stop_bars()
            if self._live_log is None:
                from gpushop.cli.live_progress import LiveLog

                self._live_log = LiveLog(self._sink, self.bar, cost=self.cost, keep=self.keep)
            self._live_log.feed(data)
        elif self.show_log:
            self._stop_bars()
            self._sink.buffer.write(data)
            self._sink.flush()

    def close(self) -> None:
        """The end: the log's last line, and every bar stopped."""
        self._stop_bars()
        if self._live_log is not None:
            self._live_log.close()

    @property
    def hidden_lines(self) -> int:
        """Lines of the log not shown (``keep`` said no)."""
        return self._live_log.hidden if self._live_log is not None else 0

    def progress(self, label: str) -> Callable[[int, int], None]:
        if self._live_log is not None:
            self._live_log.stop_bar()  # one live display at a time
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TransferSpeedColumn,
        )

        if self._bars is None:
            console = Console(stderr=True)
            if not console.is_terminal:
                return lambda done, total: None  # a pipe or a CI log: the summary line says it
            self._bars = Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                console=console,
                transient=True,
            )
            self._bars.start()
        task = self._bars.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            if self._bars is not None:
                self._bars.update(task, completed=done, total=total or None)

        return update

    def _stop_bars(self) -> None:
        if self._bars is not None:
            self._bars.stop()
            self._bars = None


def _list(values: list[str] | None) -> list[str]:
    return list(values or [])


def drive(
    job_id: str,
    *,
    secrets: dict[str, str] | None = None,
    hooks: Hooks | None = None,
    show_log: bool = True,
    log_to_stderr: bool = False,
    bar: Callable[[str], Progress | None] | None = None,
    keep: Callable[[str], bool] | None = None,
) -> Job:
    """Drive the job to its end, on this terminal. ``keep``: only the log lines it keeps are
    shown (the rest are counted, and stay in the job's log)."""
    from gpushop.service import jobs as service

    output = TerminalOutput(show_log=show_log, log_to_stderr=log_to_stderr, bar=bar, keep=keep)
    try:
        return run_async(service.drive(settings(), job_id, output, hooks=hooks, secrets=secrets))
    finally:
        output.close()
        if output.hidden_lines:
            print(
                f"({output.hidden_lines} more lines of the job's log: gpushop logs {job_id}; "
                "--full-log shows them all as they come)",
                file=sys.stderr,
            )


def finish(job: Job, as_json: bool) -> None:
    """The summary of an ended job, and its outcome as the exit code."""
    show_end(job_summary(job), as_json)


def show_end(summary: dict[str, Any], as_json: bool) -> None:
    """An ended job's summary (as `run --json` prints it), and its outcome as the exit code:
    a local job's or a team service's alike."""
    if as_json:
        print_json(summary)
    else:
        phases = ", ".join(f"{k} {v:.1f}s" for k, v in summary["timings"].items())
        print(
            f"job {summary['job_id']} {summary['state']}"
            + (f" (exit {summary['exit_code']})" if summary["exit_code"] is not None else "")
            + f"; cost ${summary['cost_usd'] or 0:.4f}; {phases}",
            file=sys.stderr,
        )
        if summary["error"]:
            print(f"  {summary['error']}", file=sys.stderr)
    code = EXIT_BY_STATE.get(summary["state"], 1)
    if code:
        raise typer.Exit(code)


def detached(
    job_id: str, as_json: bool, extra: dict[str, Any] | None = None, *, hint: bool = True
) -> None:
    """What `--detach` prints: the job's id (``extra``: more of it, with ``--json``)."""
    if as_json:
        print_json({"job_id": job_id, "state": "pending", **(extra or {})})
        return
    print(job_id)
    if hint:
        print(
            f"  follow: gpushop logs {job_id} -f   attach: gpushop attach {job_id}",
            file=sys.stderr,
        )


def job_summary(job: Job) -> dict[str, Any]:
    from gpushop.service import jobs as service

    return service.job_summary(settings(), job)


def offer_options(
    *,
    gpu: list[str] | None,
    min_vram: float | None,
    num_gpus: int | None,
    max_price: float | None,
    min_reliability: float,
    disk: float,
    min_cuda: float | None,
    country: list[str] | None,
    interruptible: bool,
    unverified: bool,
    sort: SortKey,
    offer: str | None,
    attempts: int,
    provider: str | None = None,
    rebid: bool = False,
) -> dict[str, Any]:
    from gpushop.service import jobs as service

    return service.offer_options(
        settings(),
        rebid=rebid,
        gpu=gpu,
        min_vram=min_vram,
        num_gpus=num_gpus,
        max_price=max_price,
        min_reliability=min_reliability,
        disk=disk,
        min_cuda=min_cuda,
        country=country,
        interruptible=interruptible,
        unverified=unverified,
        sort=sort,
        offer=offer,
        attempts=attempts,
        provider=provider,
    )


def run(
    cmd: Annotated[str, typer.Option("--cmd", help="Shell command to run on the instance.")],
    upload: Annotated[
        list[str] | None,
        typer.Option(
            "--upload",
            help="DIR[:REMOTE], repeatable (REMOTE: WORKDIR/DIR's name). Through a team service "
            "they travel as one tar.gz unpacked in one folder: each DIR still lands at its "
            "REMOTE, and the REMOTEs must share a folder other than /.",
        ),
    ] = None,
    download: Annotated[
        list[str] | None,
        typer.Option(
            "--download",
            help="REMOTE[:LOCAL], repeatable (LOCAL: ./REMOTE's name). Through a team service: "
            "the job's artifacts, downloaded at the end and checked by sha256.",
        ),
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
    sort: SortOpt = SortKey.VALUE,
    provider: ProviderOpt = None,
    offer: Annotated[
        str | None,
        typer.Option("--offer", help="Rent exactly this offer: its id or a table's short id."),
    ] = None,
    attempts: Annotated[int, typer.Option("--attempts", help="Offers to try at most.")] = 3,
    image: Annotated[str | None, typer.Option("--image", help="Docker image.")] = None,
    template: Annotated[str | None, typer.Option("--template", help="Template hash.")] = None,
    env: Annotated[
        list[str] | None,
        typer.Option("--env", help="KEY=VALUE, or KEY to pass your own value; repeatable."),
    ] = None,
    workdir: Annotated[str, typer.Option("--workdir", help="Where CMD runs.")] = "/workspace",
    timeout: Annotated[
        str | None, typer.Option("--timeout", help="Stop the command after this (e.g. 2h).")
    ] = None,
    sync_every: Annotated[
        str,
        typer.Option("--sync-every", help="Download new outputs this often while it runs."),
    ] = "10m",
    max_duration: Annotated[
        str | None,
        typer.Option(
            "--max-duration", help="Rental released after this (default: 4h, or --timeout + 1h)."
        ),
    ] = None,
    resume_on_loss: Annotated[
        int,
        typer.Option("--resume-on-loss", help="Rent again and resume this many times."),
    ] = 0,
    detach_: Annotated[
        bool, typer.Option("--detach", "-d", help="Return at once; see `gpushop jobs`.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Rent, upload, run CMD detached on the instance, follow its log, download, release.

    With a team service (GPUSHOP_SERVER, or `gpushop login`) the service does all that and this
    command follows it; secrets go to the service once and are kept encrypted there. Ctrl-C
    cancels the job, as locally (its outputs so far come back, the rental is released); through
    a service the command waits for that and shows the summary (exit 130), and a second Ctrl-C
    stops waiting."""
    from gpushop.service import jobs as service

    spec, secrets = service.run_spec(
        cmd=cmd,
        uploads=_list(upload),
        downloads=_list(download),
        workdir=workdir,
        env=_list(env),
        timeout=timeout,
        sync_every=sync_every,
        max_duration=max_duration,
        resume_on_loss=resume_on_loss,
        offer=offer_options(
            gpu=gpu,
            min_vram=min_vram,
            num_gpus=num_gpus,
            max_price=max_price,
            min_reliability=min_reliability,
            disk=disk,
            min_cuda=min_cuda,
            country=country,
            interruptible=interruptible,
            unverified=unverified,
            sort=sort,
            offer=offer,
            attempts=attempts,
            provider=provider,
            rebid=rebid,
        ),
        image=image,
        template=template,
    )
    cfg = settings()
    name = cmd.split()[0][:64]
    server = team_service(cfg)
    if server is not None:
        from gpushop.cli import client_jobs
        from gpushop.cli.rentals import _offer_shown

        body = {
            "cmd": cmd,
            "name": name,
            "timeout": timeout,
            "sync_every": sync_every,
            "max_duration": max_duration,
            "resume_on_loss": resume_on_loss,
            "image": image,
            "template": template,
            "offer": {
                "gpu": gpu,
                "min_vram": min_vram,
                "num_gpus": num_gpus,
                # the cap this machine sets (VASTAI_MAX_BID_PER_HOUR) holds there too
                "max_price": max_price if max_price is not None else cfg.vastai_max_bid_per_hour,
                "min_reliability": min_reliability,
                "disk": disk,
                "min_cuda": min_cuda,
                "country": country,
                "interruptible": interruptible,
                "unverified": unverified,
                "sort": sort.value,
                "provider": provider,
                "offer": _offer_shown(offer),
                "attempts": attempts,
                "rebid": rebid,
            },
        }
        client_jobs.run(server, spec, secrets, body, detach=detach_, as_json=as_json)
        return
    job_id = service.create_job(cfg, "run", name, spec)
    if detach_:
        service.detach(cfg, job_id, secrets)
        detached(job_id, as_json)
        return
    print(f"job {job_id}", file=sys.stderr)
    finish(drive(job_id, secrets=secrets, log_to_stderr=as_json), as_json)


def jobs(
    all_: Annotated[bool, typer.Option("--all", "-a", help="Also ended jobs.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Your jobs: state, where they run, how long, what they cost."""
    from gpushop.service import jobs as service

    cfg = settings()
    server = team_service(cfg)
    if server is not None:
        from gpushop.cli import client_jobs

        rows = client_jobs.listing(server, include_ended=all_)
    else:
        rows = [row for _, row in service.list_jobs(cfg, active_only=not all_)]
    if as_json:
        print_json(rows)
        return
    if not rows:
        print("no jobs" + ("" if all_ else " running (--all shows ended ones)"))
        return
    from gpushop.cli.render import jobs_table

    # a service's job nobody drives is taken over by another replica: nothing to attach
    jobs_table(rows, datetime.now(UTC), unwatched_hint=server is None)


def _load_job(job_id: str) -> Job:
    from gpushop.service import jobs as service

    return service.load_job(settings(), job_id)


def _watched(job: Job) -> bool:
    from gpushop.service import jobs as service

    return service.watched(job)


def follow_local(job_id: str, *, offset: int = 0, follow: bool = True) -> Job:
    """Print the local log from ``offset``; with ``follow``, keep printing while the process
    that drives the job lives. Returns the job as last seen."""
    from gpushop.service import jobs as service

    path = service.log_path(job_id)
    while True:
        job = _load_job(job_id)
        if path.exists():
            with path.open("rb") as fh:
                fh.seek(offset)
                data = fh.read()
            if data:
                sys.stdout.buffer.write(data)
                sys.stdout.flush()
                offset += len(data)
        if not follow or job.state.terminal or not _watched(job):
            return job
        time.sleep(0.2)


def logs(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing.")] = False,
) -> None:
    """A job's log (kept locally, also after the job failed; a team service's job: as the
    service keeps it, live with -f until the job ends)."""
    server = team_service(settings())
    if server is not None:
        from gpushop.cli import client_jobs

        client_jobs.logs(server, job_id, follow_=follow)
        return
    job = follow_local(job_id, follow=follow)
    if follow and not job.state.terminal and not _watched(job):
        print(
            f"gpushop: no gpushop process is following job {job_id}; "
            f"`gpushop attach {job_id}` resumes it",
            file=sys.stderr,
        )


def attach(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    quiet: Annotated[bool, typer.Option("--quiet", help="Do not print the job's log.")] = False,
    full_log: FullLogOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Resume a job: follow its log, then download and release as the job would have. Recovers
    a job whose gpushop process died; follows one whose process still lives. A team service's
    job: followed to its end (the service drives it), then its summary; Ctrl-C cancels it."""
    from gpushop.service import jobs as service

    server = team_service(settings())
    if server is not None:
        from gpushop.cli import client_jobs

        client_jobs.attach(server, job_id, quiet=quiet, full_log=full_log, as_json=as_json)
        return
    job = _load_job(job_id)
    if not job.state.terminal and _watched(job):
        print(f"job {job_id} is being run by pid {job.owner_pid}: following it", file=sys.stderr)
        job = follow_local(job_id)
    elif not job.state.terminal:
        log = service.log_path(job_id)
        start = log.stat().st_size if log.exists() else 0
        if not quiet and start:
            follow_local(job_id, follow=False)
        hooks, bar = service.views_for(job)
        job = drive(
            job_id,
            hooks=hooks,
            show_log=not quiet,
            log_to_stderr=as_json,
            bar=bar,
            keep=None if full_log else service.milestones_for(job.kind),
        )
    finish(job, as_json)


def timings(
    as_json: JsonOpt = False,
) -> None:
    """Per-phase timings of your rentals and jobs by GPU model, image and provider (median, p90),
    to set realistic timeouts and watchdogs."""
    from gpushop.service import jobs as service

    rows = service.timing_rows(settings())
    if as_json:
        print_json(rows)
        return
    if not rows:
        print("no timings yet: they are recorded by `gpushop up`, `run` and `train`")
        return
    from rich.table import Table

    from gpushop.cli.render import console

    table = Table(header_style="bold")
    for col in ("GPU", "image", "provider", "phase", "n", "median s", "p90 s"):
        table.add_column(col, no_wrap=True)
    for r in rows:
        table.add_row(
            r["gpu_name"] or "-",
            r["image"] or "-",
            r["provider"] or "-",
            r["phase"],
            str(r["count"]),
            f"{r['median_s']:.1f}",
            f"{r['p90_s']:.1f}",
        )
    console().print(table)


def register(app: typer.Typer) -> None:
    app.command()(run)
    app.command()(jobs)
    app.command()(logs)
    app.command()(attach)
    app.command()(timings)
