"""Drive a job from wherever it is to its end: rent, upload, launch, follow, sync, download,
release. Every step can be re-run after a crash (``gpushop attach``): transfers skip what is
already there, a launched job is found by its pid file, and the local log is the concatenation
of the remote logs, so its size says where to resume reading.

Whatever happens (success, failure, timeout, Ctrl-C, a lost rental), the outputs are downloaded
as far as they can be and the rental is released; the local log is always kept.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncssh

from gpushop.errors import GpushopError
from gpushop.fleet.provision import UpOptions
from gpushop.jobs import remote
from gpushop.jobs.contract import (
    CANCELLED_BY_USER,
    HANDED_OFF,
    LEASE_LOST,
    JobLeaseLost,
    log_path,
)
from gpushop.jobs.following import Following
from gpushop.jobs.logbook import LogBook
from gpushop.jobs.offer_flags import up_options
from gpushop.jobs.resume_watch import plan_of
from gpushop.jobs.runner_base import (
    STATUS_POLL_S,
    Noted,
    abort_kill_s,
)
from gpushop.jobs.session import RemoteJob
from gpushop.jobs.spec import JobSpec, Transfer, launch_env
from gpushop.models import Feature, JobState, RentalState
from gpushop.ssh import client as ssh
from gpushop.ssh import transfer
from gpushop.store import Job, Rental

log = logging.getLogger("gpushop.jobs")


class JobRunner(Following):
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
            self.out = Noted(self.out, self.book, self.service.hidden_paths)
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
        plan = plan_of(job)
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
        await self._flush_log()  # a reader that sees the end has seen the whole log
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
                        async with asyncio.timeout(abort_kill_s()):
                            await RemoteJob(conn, job.remote_dir or spec.remote_dir(job_id)).kill()
                    except TimeoutError:
                        raise ssh.SshError(
                            f"stopping the job got no answer from the instance within "
                            f"{abort_kill_s():.0f} s"
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
        await self._flush_log()
        self.store.update_job(
            job_id,
            state=final,
            error=reason,
            ended_at=datetime.now(UTC),
            cost_usd=self.cost(job),
            owner_pid=None,
            owner_host=None,
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


def _exists(path: str) -> bool:
    return Path(path).exists()
