"""Following a running job: its remote log appended to the local one (and the store's), its
status, reconnects, the timeout, a resumed run's real start, and outputs synced as it goes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

import asyncssh

from gpushop.jobs import remote
from gpushop.jobs.contract import (
    RentalLost,
)
from gpushop.jobs.losses import Losses
from gpushop.jobs.resume_watch import RESUME_WATCH_BYTES, ResumeWatch, plan_of
from gpushop.jobs.runner_base import (
    RECONNECT_DELAYS,
    STATUS_POLL_S,
)
from gpushop.jobs.session import RemoteJob
from gpushop.jobs.spec import JobSpec
from gpushop.models import JobState
from gpushop.ssh import client as ssh
from gpushop.ssh import transfer
from gpushop.store import Job, Rental

log = logging.getLogger("gpushop.jobs")


class Following(Losses):
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

    def _resume_watch(self, job: Job, path: Path, base: int) -> ResumeWatch | None:
        """For a resumed run not yet checked: reads its log (what came before a reconnect or a
        re-attach too) for where the job really started."""
        current = self.store.get_job(job.id) or job
        plan = plan_of(current)
        if not current.details.get("resume_watch") or plan is None or plan.step is None:
            return None
        watch = ResumeWatch(self.hooks.resumed_at, plan)
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

    def _resumed(self, job_id: str, watch: ResumeWatch) -> None:
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
