"""Drive a job from wherever it is to its end: rent, upload, launch, follow, sync, download,
release. Every step can be re-run after a crash (``gpushop attach``): transfers skip what is
already there, a launched job is found by its pid file, and the local log is the concatenation
of the remote logs, so its size says where to resume reading.

Whatever happens (success, failure, timeout, Ctrl-C, a lost rental), the outputs are downloaded
as far as they can be and the rental is released; the local log is always kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import asyncssh

from gpushop.config import data_dir
from gpushop.errors import GpushopError, MoneyLimitError, ProviderError
from gpushop.fleet import rebid
from gpushop.fleet.connect import connect_rental
from gpushop.fleet.owners import Owner
from gpushop.fleet.provision import Provisioner, UpOptions
from gpushop.fleet.reconcile_plan import outbid
from gpushop.fleet.release import ReleaseFailed, release_rental
from gpushop.fleet.wait import NotReady
from gpushop.jobs import remote
from gpushop.jobs.logbook import LogBook
from gpushop.jobs.offer_flags import up_options
from gpushop.jobs.session import RemoteJob
from gpushop.jobs.spec import JobSpec, Transfer, launch_env
from gpushop.models import Feature, InstanceStatus, JobState, RentalState
from gpushop.providers.base import Provider
from gpushop.ssh import client as ssh
from gpushop.ssh import transfer
from gpushop.ssh.keys import KeyPair
from gpushop.store import Job, Rental, Store, User, accrued_cost

log = logging.getLogger("gpushop.jobs")
RESUME_WATCH_BYTES = 16_000_000  # a resumed run that has not said where it started by then
STATUS_POLL_S = 1.0
RECONNECT_DELAYS = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)  # ~1 minute of SSH trouble on a live host
# Ctrl-C / SIGTERM: how long stopping the job may take (the kill itself gives it ~2 s); an
# instance that does not answer by then is released anyway, its outputs unsaved
ABORT_KILL_S = 20.0
MAX_REBIDS = 10  # --rebid: a market that outbids a job ten times is not worth chasing


LEASE_LOST = "lease lost"
HANDED_OFF = "handed off"
CANCELLED_BY_USER = "cancelled by its user"


class JobFailed(GpushopError):
    exit_code = 1


class JobLeaseLost(GpushopError):
    """The process stopped driving the job without ending it: another took it over (its lease
    lapsed), or it was handed off (a replica shutting down)."""

    def __init__(self, job_id: str, why: str) -> None:
        super().__init__(f"job {job_id}: {why}; another process drives it now")
        self.why = why


@dataclass(frozen=True)
class ServiceRun:
    """A job of the team service: its log also in the store, its rentals its user's, and a
    cancel asked through any replica obeyed."""

    user: User | None = None
    on_log: Callable[[str], None] | None = None


class RentalLost(GpushopError):
    """The instance went away (outbid, host offline, destroyed) while the job ran."""


class Output(Protocol):
    def message(self, text: str) -> None: ...

    def log(self, data: bytes) -> None: ...

    def progress(self, label: str) -> Callable[[int, int], None]: ...


@dataclass(frozen=True)
class ResumePlan:
    """What a resumed job gets back on its new rental, and where it should pick up."""

    files: list[Transfer]  # each a local file -> the remote directory it goes into, in order
    step: int | None = None  # where the job should resume (a recipe's unit, e.g. a step)
    reached: int | None = None  # how far the lost run had got, in the same unit
    note: str = ""  # for the user, e.g. "reached step 637; resuming from step 600 (...)"

    def to_json(self) -> dict[str, object]:
        return {
            "files": [{"local": t.local, "remote": t.remote} for t in self.files],
            "step": self.step,
            "reached": self.reached,
            "note": self.note,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ResumePlan:
        files = [Transfer(str(f["local"]), str(f["remote"])) for f in data.get("files", [])]
        return cls(files, data.get("step"), data.get("reached"), str(data.get("note", "")))


@dataclass
class Hooks:
    """Recipe-specific knowledge the generic runner lacks."""

    # what a lost rental cost in progress, e.g. "lost 237 steps (resuming at step 1000)"
    lost: Callable[[Job, Path], str | None] = lambda job, log_path: None
    # problems with the downloaded outputs (an empty list: all good)
    verify: Callable[[Job], list[str]] = lambda job: []
    # what a resume uploads (job, spec, local log); None: every synced download, back where
    # the job wrote it
    resume: Callable[[Job, JobSpec, Path], ResumePlan | None] = lambda job, spec, log: None
    # where a resumed run says it started, from its log so far (None: it has not said yet)
    resumed_at: Callable[[str], int | None] = lambda text: None
    extra: dict[str, object] = field(default_factory=dict)


def job_dir(job_id: str) -> Path:
    """Where the job's local log lives (kept on failure, and after success too)."""
    path = data_dir() / "jobs" / job_id
    path.mkdir(parents=True, exist_ok=True)
    return path


def log_path(job_id: str) -> Path:
    return job_dir(job_id) / "job.log"


class JobRunner:
    def __init__(
        self,
        store: Store,
        providers: dict[str, Provider],
        provisioner: Provisioner,
        keypair: KeyPair,
        output: Output,
        *,
        hooks: Hooks | None = None,
        secrets: dict[str, str] | None = None,
        owner: Owner | None = None,
        service: ServiceRun | None = None,
    ) -> None:
        self.store = store
        self.providers = providers
        self.provisioner = provisioner
        self.keypair = keypair
        self.out = output
        self.hooks = hooks or Hooks()
        self.secrets = secrets or {}
        self.owner = owner or Owner.me()
        self.service = service
        self.book = LogBook(Path("/dev/null"))
        self._conn: asyncssh.SSHClientConnection | None = None
        self._stop: str | None = None  # why the drive was cancelled from outside

    # -- the loop ------------------------------------------------------------------------------

    async def drive(self, job_id: str) -> Job:
        job = self.store.claim_job(
            job_id, self.owner.host, self.owner.pid, lease_s=self.owner.lease_s
        )
        self.book = LogBook(
            log_path(job_id),
            self.store if self.service else None,
            job_id,
            self.service.on_log if self.service else None,
        )
        if self.service is not None:
            self.book.align()  # a takeover goes on from what the store holds
            self.out = _Noted(self.out, self.book)
        work = asyncio.current_task()
        beat = asyncio.create_task(self._heartbeat(job_id, work))
        try:
            async with self.book.flushing():
                try:
                    if job.details.get("cancel_requested"):
                        self._stop = CANCELLED_BY_USER
                        raise asyncio.CancelledError
                    while not job.state.terminal:
                        job = await self._step(job)
                    return job
                except BaseException as exc:
                    if self._stop in (LEASE_LOST, HANDED_OFF):
                        await self._close()
                        if self._stop == HANDED_OFF:
                            self.store.update_job(
                                job_id, owner_host=None, owner_pid=None, lease_until=None
                            )
                        raise JobLeaseLost(job_id, self._stop) from None
                    # Ctrl-C, SIGTERM, a cancel or an error: outputs so far, then release.
                    # Never leave it billing.
                    cancelled = isinstance(exc, KeyboardInterrupt | asyncio.CancelledError)
                    reason = (self._stop or "interrupted") if cancelled else str(exc)
                    final = JobState.CANCELLED if cancelled else JobState.FAILED
                    await asyncio.shield(self._abort(job_id, reason, final))
                    raise
        finally:
            beat.cancel()
            await self._close()

    def stop(self, why: str, task: asyncio.Task[Any]) -> None:
        """Stop driving from outside: ``CANCELLED_BY_USER`` aborts the job (outputs, release);
        ``HANDED_OFF`` leaves it running for another process to take over."""
        self._stop = why
        task.cancel()

    async def _step(self, job: Job) -> Job:
        spec = JobSpec.from_json(job.spec)
        if job.state in (JobState.PENDING, JobState.PROVISIONING):
            return await self._rent(job, spec)
        if job.state is JobState.UPLOADING:
            return await self._upload_and_launch(job, spec)
        if job.state is JobState.RUNNING:
            return await self._follow(job, spec)
        if job.state is JobState.DOWNLOADING:
            return await self._download(job, spec)
        if job.state is JobState.RELEASING:
            return await self._release(job)
        raise AssertionError(f"no step for {job.state}")

    # -- steps ---------------------------------------------------------------------------------

    async def _rent(self, job: Job, spec: JobSpec) -> Job:
        if job.rental_id:
            rental = self.store.get(job.rental_id)
            if rental is not None and rental.state is RentalState.READY:
                return self.store.update_job(job.id, state=JobState.UPLOADING)
        job = self.store.update_job(job.id, state=JobState.PROVISIONING)
        rental = await self._provisioned_before(job)
        if rental is None:
            opts: UpOptions = up_options(spec)
            if self.service is not None:
                opts.user = self.service.user

            def claimed(written: Rental) -> None:  # a takeover finds it (_provisioned_before)
                self.store.update_job(job.id, details={"renting": written.id})

            self.out.message(f"searching: {opts.query.describe()}")
            rental = await self.provisioner.up(opts, self.out.message, claimed)
        rentals = [*job.details.get("rentals", []), rental.id]
        self.out.message(
            f"rented {rental.id}: {rental.num_gpus}x {rental.gpu_name} at "
            f"${rental.price_per_hour or 0:.3f}/h ({rental.provider} {rental.instance_id})"
        )
        return self.store.update_job(
            job.id,
            state=JobState.UPLOADING,
            rental_id=rental.id,
            remote_dir=spec.remote_dir(job.id),
            details={"rentals": rentals, "renting": None},
        )

    async def _provisioned_before(self, job: Job) -> Rental | None:
        """A rental the job's previous owner was provisioning when it died: the service's
        takeovers finish it (service/replica.py), so wait for it rather than rent twice."""
        rental_id = job.details.get("renting")
        while rental_id:
            rental = self.store.get(str(rental_id))
            if rental is None or rental.state.terminal:
                return None
            if rental.state is RentalState.READY:
                self.out.message(f"using {rental.id}, provisioned before the takeover")
                return rental
            await asyncio.sleep(STATUS_POLL_S)
        return None

    async def _upload_and_launch(self, job: Job, spec: JobSpec) -> Job:
        rental = self._rental(job)
        conn = await self._connection(rental)
        started = time.monotonic()
        await RemoteJob(conn, spec.remote_dir(job.id)).prepare(spec.workdir)
        moves = list(spec.uploads)
        plan = _plan(job)
        if job.details.get("restore") and plan is not None:
            # a resumed job, as its recipe says: only what it needs, one file after the other
            moves += [t for t in plan.files if _exists(t.local)]
        elif job.details.get("restore"):
            # a resumed job: what was synced back so far goes where the job wrote it
            moves += [Transfer(t.local, t.remote) for t in spec.downloads if _exists(t.local)]
        for move in moves:
            report = await transfer.upload(
                conn,
                Path(move.local),
                move.remote,
                endpoint=self._endpoint(rental),
                progress=self.out.progress(f"upload {Path(move.local).name}"),
            )
            self.out.message(
                f"uploaded {move.local} -> {move.remote}: {report.files} files "
                f"({report.skipped} already there), {report.bytes / 1e6:.1f} MB "
                f"at {report.mb_per_s:.0f} MB/s ({report.method})"
            )
        self.store.record_timing(rental.id, "upload", time.monotonic() - started, job_id=job.id)
        await self._launch(conn, job, spec)
        base = self.book.size()
        watch = bool(job.details.get("restore")) and plan is not None and plan.step is not None
        return self.store.update_job(
            job.id,
            state=JobState.RUNNING,
            started_at=job.started_at or datetime.now(UTC),
            log_offset=0,
            details={
                "log_base": base,
                "restore": False,
                "run_started": time.time(),
                "resume_watch": watch or bool(job.details.get("resume_watch")),
            },
        )

    async def _launch(self, conn: asyncssh.SSHClientConnection, job: Job, spec: JobSpec) -> None:
        env = launch_env(spec, self.secrets, local_env=self.service is None)
        command = spec.command
        provider = self.providers[self._rental(job).provider]
        if spec.image and not provider.supports(Feature.CONTAINERS):
            # a VM from an OS image: the job's image runs under docker on it
            command = remote.in_docker(spec.image, spec.workdir, sorted(env), command)
        job_remote = RemoteJob(conn, spec.remote_dir(job.id))
        fresh = await job_remote.launch(spec.workdir, command, spec.timeout_s, env)
        self.out.message(
            f"job {job.id} started on the instance (detached from this session)"
            if fresh
            else f"job {job.id} was already started on the instance"
        )

    async def _follow(self, job: Job, spec: JobSpec) -> Job:
        rental = self._rental(job)
        sync = asyncio.create_task(self._sync_loop(job, spec, rental))
        try:
            status = await self._stream_until_done(job, spec, rental)
        except RentalLost as exc:
            return await self._lost(job, spec, rental, str(exc))
        finally:
            sync.cancel()
            with contextlib.suppress(BaseException):
                await sync
        job = self.store.get_job(job.id) or job
        run_s = time.time() - float(job.details.get("run_started", time.time()))
        self.store.record_timing(rental.id, "run", run_s, job_id=job.id)
        code = status.exit_code
        outcome = (
            JobState.SUCCEEDED
            if code == 0
            else JobState.TIMED_OUT
            if code == remote.TIMEOUT_EXIT and spec.timeout_s is not None
            else JobState.FAILED
        )
        self.out.message(f"job ended with exit code {code}")
        return self.store.update_job(
            job.id,
            state=JobState.DOWNLOADING,
            exit_code=code,
            details={"outcome": outcome.value},
        )

    async def _stream_until_done(self, job: Job, spec: JobSpec, rental: Rental) -> remote.Status:
        directory = job.remote_dir or spec.remote_dir(job.id)
        troubles = 0
        while True:
            try:
                conn = await self._connection(rental)
                job_remote = RemoteJob(conn, directory)
                await self._tail(job_remote, job)
                status = await job_remote.status()
            except (ssh.SshError, asyncssh.Error, OSError, ValueError) as exc:
                await self._close()
                if not await self._instance_alive(rental):
                    raise RentalLost(f"instance {rental.instance_id} is gone ({exc})") from None
                if troubles >= len(RECONNECT_DELAYS):
                    raise RentalLost(f"SSH to {rental.id} keeps failing: {exc}") from None
                self.out.message(f"connection lost ({exc}); reconnecting")
                await asyncio.sleep(RECONNECT_DELAYS[troubles])
                troubles += 1
                continue
            troubles = 0
            if status.finished:
                received = self.book.size() - int(job.details.get("log_base", 0))
                if status.log_size > received:
                    continue  # the last bytes came after the follower stopped: read them
                return status
            if status.vanished:
                raise RentalLost("the job's processes are gone without an exit code")
            if self._overdue(job, spec):
                self.out.message(f"job exceeded its timeout of {spec.timeout_s:.0f}s: stopping it")
                await job_remote.kill()
                return remote.Status(True, False, remote.TIMEOUT_EXIT, status.log_size)
            await asyncio.sleep(STATUS_POLL_S)  # tail ended but the job lives: a blip

    async def _tail(self, job_remote: RemoteJob, job: Job) -> None:
        """Append the remote log, from where the local copy ends, to the local log and the
        terminal, until the job's wrapper ends (or the connection breaks)."""
        base = int(job.details.get("log_base", 0))
        offset = max(0, self.book.size() - base)
        last_save = [time.monotonic()]
        watch = self._resume_watch(job, self.book.path, base)

        def chunk(data: bytes) -> None:
            self.book.write(data)
            self.out.log(data)
            if watch is not None and watch.feed(data):
                self._resumed(job.id, watch)
            if time.monotonic() - last_save[0] > 1.0:
                self.store.update_job(job.id, log_offset=self.book.size())
                last_save[0] = time.monotonic()

        reached = await job_remote.follow(offset, chunk)
        self.store.update_job(job.id, log_offset=reached)

    def _resume_watch(self, job: Job, path: Path, base: int) -> _ResumeWatch | None:
        """For a resumed run not yet checked: reads its log (what came before a reconnect or a
        re-attach too) for where the job really started."""
        current = self.store.get_job(job.id) or job
        plan = _plan(current)
        if not current.details.get("resume_watch") or plan is None or plan.step is None:
            return None
        watch = _ResumeWatch(self.hooks.resumed_at, plan)
        try:
            with path.open("rb") as f:
                f.seek(base)
                seen = f.read(RESUME_WATCH_BYTES)
        except OSError:
            seen = b""
        if seen and watch.feed(seen):
            self._resumed(job.id, watch)
            return None
        return watch

    def _resumed(self, job_id: str, watch: _ResumeWatch) -> None:
        """Say where the resumed run started and what that cost; loudly when it is not where
        the plan said (the job redoes work, or skips it)."""
        plan, found = watch.plan, watch.found
        record: dict[str, object] = {"planned": plan.step, "reached": plan.reached}
        if found is None:
            self.out.message(
                f"WARNING: the resumed job never said where it started (planned: {plan.step})"
            )
        else:
            lost = max(0, (plan.reached or 0) - found)
            record.update(found=found, lost=lost, as_planned=found == plan.step)
            if found == plan.step:
                self.out.message(f"the job resumed from step {found} as planned: {lost} steps lost")
            else:
                self.out.message(
                    f"WARNING: the job resumed from step {found}, NOT from step {plan.step} as "
                    f"planned: {lost} steps lost (it had reached {plan.reached or 0})"
                )
        job = self.store.get_job(job_id)
        history = list(job.details.get("resumed", [])) if job is not None else []
        self.store.update_job(
            job_id, details={"resume_watch": False, "resumed": [*history, record]}
        )

    def _overdue(self, job: Job, spec: JobSpec) -> bool:
        if spec.timeout_s is None:
            return False
        started = float(job.details.get("run_started", time.time()))
        # the instance's own `timeout` acts first; this catches a job that ignores it
        return time.time() - started > spec.timeout_s + remote.KILL_GRACE_S + 30

    async def _sync_loop(self, job: Job, spec: JobSpec, rental: Rental) -> None:
        """Outputs so far, every ``sync_every_s``: an interruption then loses little."""
        if not spec.sync_every_s or not spec.downloads:
            return
        while True:
            await asyncio.sleep(spec.sync_every_s)
            try:
                conn = await self._connection(rental)
                for move in spec.downloads:
                    report = await transfer.download(
                        conn,
                        move.remote,
                        Path(move.local),
                        endpoint=self._endpoint(rental),
                        strict=False,
                    )
                    if report.files:
                        self.out.message(
                            f"synced {report.files} new file(s) from {move.remote} "
                            f"({report.bytes / 1e6:.1f} MB)"
                        )
            except (ssh.SshError, asyncssh.Error, OSError) as exc:
                log.info("sync failed (next try in %ss): %s", spec.sync_every_s, exc)

    async def _lost(self, job: Job, spec: JobSpec, rental: Rental, why: str) -> Job:
        again = await self._rebid(job, spec, rental)
        if again is not None:
            return again
        self.out.message(f"rental {rental.id} lost: {why}")
        lost_note = self.hooks.lost(job, log_path(job.id))
        if lost_note:
            self.out.message(lost_note)
        await self._release_rental(rental, f"lost while running job {job.id}: {why}")
        resumes = int(job.details.get("resumes", 0))
        if resumes < spec.resume_on_loss:
            self.out.message(
                f"renting again to resume ({resumes + 1} of {spec.resume_on_loss} resumes)"
            )
            plan = self.hooks.resume(job, spec, log_path(job.id))
            if plan is not None:
                names = ", ".join(Path(t.local).name for t in plan.files) or "nothing"
                note = f" ({plan.note})" if plan.note else ""
                self.out.message(f"the resume uploads {names} only{note}")
            self.book.write(f"\n[gpushop] rental {rental.id} lost; resuming\n".encode())
            return self.store.update_job(
                job.id,
                state=JobState.PROVISIONING,
                rental_id=None,
                details={
                    "resumes": resumes + 1,
                    "restore": True,
                    "lost": lost_note or why,
                    "resume_plan": plan.to_json() if plan is not None else None,
                    "resume_watch": False,
                },
            )
        return self.store.update_job(
            job.id,
            state=JobState.RELEASING,
            error=f"rental lost: {why}",
            details={"outcome": JobState.FAILED.value},
        )

    async def _rebid(self, job: Job, spec: JobSpec, rental: Rental) -> Job | None:
        """``--rebid``: an outbid rental bids what wins now (never above the cap) and the job
        runs again on the same instance, whose files were kept. None when the rental was not
        outbid, did not ask for it, or the cap refused (the caller then releases it as before)."""
        rental = self.store.get(rental.id) or rental
        rebids = int(job.details.get("rebids", 0))
        if not rebid.wanted(rental) or not rental.instance_id or rebids >= MAX_REBIDS:
            return None
        provider = self.providers[rental.provider]
        try:
            inst = await provider.get_instance(rental.instance_id)
        except ProviderError:
            return None
        if inst is None or not outbid(inst) or rental.state is not RentalState.READY:
            return None
        await self._close()
        rental = self.store.transition(
            rental.id, RentalState.INTERRUPTED, "outbid", expect=RentalState.READY
        )
        try:
            rental = await rebid.rebid(self.store, provider, rental, progress=self.out.message)
            conn = await self._connection(rental)
            # the run's processes ended with the outbid: forget them (the log kept aside), so
            # the launch starts the command again instead of finding it "already started"
            d = shlex.quote(job.remote_dir or spec.remote_dir(job.id))
            await ssh.run(conn, f"cd {d} && rm -f pid exit exit.tmp && mv -f log log.outbid")
        except MoneyLimitError as exc:
            self.out.message(f"{rental.id} was outbid and not re-bid: {exc}")
            return None
        except (NotReady, ProviderError, ssh.SshError, OSError) as exc:
            self.out.message(f"{rental.id} was re-bid but did not run again: {exc}")
            return None
        plan = self.hooks.resume(job, spec, log_path(job.id))
        self.book.write(f"\n[gpushop] rental {rental.id} outbid and re-bid; again\n".encode())
        return self.store.update_job(
            job.id,
            state=JobState.UPLOADING,
            details={
                "rebids": rebids + 1,
                "restore": True,
                "resume_plan": plan.to_json() if plan is not None else None,
                "resume_watch": False,
            },
        )

    async def _download(self, job: Job, spec: JobSpec) -> Job:
        rental = self._rental(job)
        started = time.monotonic()
        conn = await self._connection(rental)
        for move in spec.downloads:
            report = await transfer.download(
                conn,
                move.remote,
                Path(move.local),
                endpoint=self._endpoint(rental),
                progress=self.out.progress(f"download {Path(move.remote).name}"),
                strict=job.details.get("outcome") == JobState.SUCCEEDED.value,
            )
            self.out.message(
                f"downloaded {move.remote} -> {move.local}: {report.files} files "
                f"({report.skipped} already here), {report.bytes / 1e6:.1f} MB, "
                f"verified by sha256"
            )
        self.store.record_timing(rental.id, "download", time.monotonic() - started, job_id=job.id)
        problems = self.hooks.verify(job) if job.details.get("outcome") == "succeeded" else []
        if problems:
            return self.store.update_job(
                job.id,
                state=JobState.RELEASING,
                error="; ".join(problems),
                details={"outcome": JobState.FAILED.value},
            )
        return self.store.update_job(job.id, state=JobState.RELEASING)

    async def _release(self, job: Job) -> Job:
        await self._close()
        if job.rental_id:
            rental = self.store.get(job.rental_id)
            if rental is not None and not rental.state.terminal:
                started = time.monotonic()
                await self._release_rental(rental, f"job {job.id} ended")
                self.store.record_timing(
                    rental.id, "released", time.monotonic() - started, job_id=job.id
                )
        outcome = JobState(job.details.get("outcome", JobState.FAILED.value))
        self._flush_log()  # a reader that sees the end has seen the whole log
        return self.store.update_job(
            job.id,
            state=outcome,
            ended_at=datetime.now(UTC),
            cost_usd=self.cost(job),
            owner_pid=None,
            owner_host=None,
        )

    async def _abort(self, job_id: str, reason: str, final: JobState) -> None:
        job = self.store.get_job(job_id)
        if job is None or job.state.terminal:
            return
        spec = JobSpec.from_json(job.spec)
        rental = self.store.get(job.rental_id) if job.rental_id else None
        if rental is not None and rental.state is RentalState.READY:
            try:
                conn = await self._connection(rental, quick=True)  # one try, 10 s at most
                if job.state is JobState.RUNNING:
                    try:
                        async with asyncio.timeout(ABORT_KILL_S):
                            await RemoteJob(conn, job.remote_dir or spec.remote_dir(job_id)).kill()
                    except TimeoutError:
                        raise ssh.SshError(
                            f"stopping the job got no answer from the instance within "
                            f"{ABORT_KILL_S:.0f} s"
                        ) from None
                if job.state in (JobState.RUNNING, JobState.DOWNLOADING):
                    for move in spec.downloads:
                        await transfer.download(
                            conn,
                            move.remote,
                            Path(move.local),
                            strict=False,
                            endpoint=self._endpoint(rental),
                        )
                    self.out.message("downloaded the outputs written so far")
            except (GpushopError, asyncssh.Error, OSError) as exc:
                self.out.message(f"could not save the outputs: {exc}")
        await self._close()
        if rental is not None and not rental.state.terminal:
            await self._release_rental(rental, f"job {job_id} {final.value}: {reason}")
        self.out.message(f"job {job_id} {final.value}; its log is kept at {log_path(job_id)}")
        self._flush_log()
        self.store.update_job(
            job_id,
            state=final,
            error=reason,
            ended_at=datetime.now(UTC),
            cost_usd=self.cost(job),
            owner_pid=None,
            owner_host=None,
        )

    # -- helpers -------------------------------------------------------------------------------

    def cost(self, job: Job) -> float:
        return self.cost_of(self.store, job)

    @staticmethod
    def cost_of(store: Store, job: Job) -> float:
        """What the job's rentals cost so far (all of it once they are released)."""
        now = datetime.now(UTC)
        total = 0.0
        for rid in job.details.get("rentals", []):
            rental = store.get(rid)
            if rental is not None:
                total += accrued_cost(rental, rental.created_at, now, now)
        return round(total, 6)

    def _flush_log(self) -> None:
        try:
            self.book.flush()
        except Exception as exc:  # the store is down: the end is recorded all the same
            log.warning("the job's last log lines did not reach the store: %s", exc)

    def _rental(self, job: Job) -> Rental:
        rental = self.store.get(job.rental_id) if job.rental_id else None
        if rental is None:
            raise JobFailed(f"job {job.id} has no rental")
        return rental

    def _endpoint(self, rental: Rental) -> transfer.Endpoint:
        assert rental.ssh_host and rental.ssh_port
        current = self.store.get(rental.id) or rental
        return transfer.Endpoint(
            host=rental.ssh_host,
            port=rental.ssh_port,
            user=rental.ssh_user or "root",
            key_path=self.keypair.private_path,
            host_key=current.host_key,
        )

    async def _connection(
        self, rental: Rental, *, quick: bool = False
    ) -> asyncssh.SSHClientConnection:
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        current = self.store.get(rental.id) or rental
        self._conn = await connect_rental(
            self.store, current, self.keypair, delays=(0.0,) if quick else (0.0, 0.5, 1.0, 2.0)
        )
        return self._conn

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.wait_closed(), 2)

    async def _instance_alive(self, rental: Rental) -> bool:
        if not rental.instance_id:
            return False
        try:
            inst = await self.providers[rental.provider].get_instance(rental.instance_id)
        except ProviderError:
            return True  # cannot tell: assume a blip, SSH retries decide
        return inst is not None and inst.status in (InstanceStatus.RUNNING, InstanceStatus.LOADING)

    async def _release_rental(self, rental: Rental, reason: str) -> None:
        rental = self.store.get(rental.id) or rental
        if rental.state.terminal:
            return
        try:
            await release_rental(self.store, self.providers[rental.provider], rental, reason)
            self.out.message(f"released {rental.id} (instance {rental.instance_id})")
        except (ReleaseFailed, ProviderError, OSError) as exc:
            self.out.message(
                f"could not release {rental.id} ({exc}): `gpushop reconcile` will destroy it"
            )

    async def _heartbeat(self, job_id: str, work: asyncio.Task[Any] | None) -> None:
        """Renew the lease; stop the work when another process took the job over (two owners
        must never drive one job), or, for the service, when its user asked to cancel it."""
        while True:
            await asyncio.sleep(self.owner.beat_s)
            kept = await asyncio.to_thread(
                self.store.heartbeat_job,
                job_id,
                self.owner.host,
                self.owner.pid,
                lease_s=self.owner.lease_s,
            )
            if work is None or self._stop is not None:
                continue
            if not kept and self.service is not None:
                self.stop(LEASE_LOST, work)
            elif self.service is not None:
                job = await asyncio.to_thread(self.store.get_job, job_id)
                if job is not None and job.details.get("cancel_requested"):
                    self.stop(CANCELLED_BY_USER, work)


class _ResumeWatch:
    """A resumed run's log, from its start until the recipe tells where the run started."""

    def __init__(self, resumed_at: Callable[[str], int | None], plan: ResumePlan) -> None:
        self.resumed_at = resumed_at
        self.plan = plan
        self.found: int | None = None
        self.done = False
        self._seen = 0
        self._partial = b""  # the line being written (bars are redrawn with \r)

    def feed(self, data: bytes) -> bool:
        """True once, when it is known (or when too much log said nothing): report it then.
        The recipe reads whole lines, each once."""
        if self.done:
            return False
        self._seen += len(data)
        text = self._partial + data
        end = max(text.rfind(b"\n"), text.rfind(b"\r")) + 1
        self._partial = text[end:]
        if end:
            self.found = self.resumed_at(text[:end].decode(errors="replace"))
        self.done = self.found is not None or self._seen > RESUME_WATCH_BYTES
        return self.done


def _plan(job: Job) -> ResumePlan | None:
    raw = job.details.get("resume_plan")
    return ResumePlan.from_json(raw) if isinstance(raw, dict) else None


def _exists(path: str) -> bool:
    return Path(path).exists()


class _Noted:
    """The face's output, with every message also a note in the job's stored log."""

    def __init__(self, face: Output, book: LogBook) -> None:
        self.face = face
        self.book = book

    def message(self, text: str) -> None:
        self.book.note(text)
        self.face.message(text)

    def log(self, data: bytes) -> None:
        self.face.log(data)

    def progress(self, label: str) -> Callable[[int, int], None]:
        return self.face.progress(label)
