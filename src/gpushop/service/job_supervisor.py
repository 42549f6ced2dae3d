"""Jobs the service drives: each in a task of the replica that owns it, under that replica's
lease (the runner renews it and stops if another replica took the job over). A replica that
dies leaves its jobs' leases to lapse: another claims each (compare-and-set, exactly one wins)
and goes on following it where the store's log ends, as `gpushop attach` does. A replica that
shuts down hands its jobs off at once (the jobs go on running on their instances).

Readers of a job's log on this replica are woken as soon as a piece reaches the store; readers
on other replicas poll it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from gpushop import metrics
from gpushop.config import Settings, data_dir
from gpushop.errors import GpushopError
from gpushop.fleet.owners import Owner, owner_alive
from gpushop.jobs.contract import CANCELLED_BY_USER, HANDED_OFF, JobLeaseLost, ServiceRun
from gpushop.jobs.runner import JobRunner
from gpushop.models import JobState
from gpushop.service import artifacts
from gpushop.store import Job, Store
from gpushop.store.job_log import NOTE
from gpushop.store.secret_box import SecretUnreadable

log = logging.getLogger("gpushop.jobs")


class _Quiet:
    """What the runner tells a terminal goes to the service's log (the job's own log in the
    store gets the same lines as notes)."""

    cost: Callable[[], float | None] | None = None

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id

    def message(self, text: str) -> None:
        log.info("job %s: %s", self.job_id, text)

    def log(self, data: bytes) -> None:
        pass

    def progress(self, label: str) -> Callable[[int, int], None]:
        return lambda done, total: None


class Supervisor:
    def __init__(self, cfg: Settings, owner: Owner, store: Callable[[], Store]) -> None:
        self.cfg = cfg
        self.owner = owner
        self._store = store
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._runners: dict[str, JobRunner] = {}
        self._wakers: dict[str, asyncio.Event] = {}
        self._closing = False

    # -- driving -------------------------------------------------------------------------------

    def start(self, job_id: str) -> None:
        """Drive the job (already claimed by this replica) in a task of this process."""
        if job_id in self._tasks or self._closing:
            return
        task = asyncio.create_task(self._supervise(job_id), name=f"job {job_id}")
        self._tasks[job_id] = task
        task.add_done_callback(lambda _: self._forget(job_id))

    def _forget(self, job_id: str) -> None:
        self._tasks.pop(job_id, None)
        self._runners.pop(job_id, None)
        self._wake(job_id)

    async def _supervise(self, job_id: str) -> None:
        from gpushop.service.jobs import views_for
        from gpushop.shop import Shop

        store = await asyncio.to_thread(self._store)
        job = await asyncio.to_thread(store.get_job, job_id)
        if job is None or job.state.terminal:
            return
        try:
            try:
                secrets = await asyncio.to_thread(self.secrets_of, job)
            except SecretUnreadable as exc:
                # only a (re)launch needs them: a running job is followed to its end all the
                # same, and a launch that lacks them fails the job naming the secret
                secrets = {}
                note = f"its secrets do not open here ({exc}); a relaunch would fail"
                await asyncio.to_thread(store.job_log.append, job_id, [(NOTE, note.encode())])
            user = await asyncio.to_thread(store.users.get, job.user_id) if job.user_id else None
            hooks, _ = views_for(job)
            provider = job.spec.get("offer", {}).get("provider")
            async with Shop(self.cfg, provider=provider) as shop:
                runner = JobRunner(
                    shop.store,
                    shop.provider_map(),
                    shop.provisioner(self.owner),
                    shop.keypair(),
                    _Quiet(job_id),
                    hooks=hooks,
                    secrets=secrets,
                    owner=self.owner,
                    service=ServiceRun(
                        user=user,
                        on_log=self._wake,
                        hidden_paths=(str(artifacts.root(self.cfg)), str(data_dir())),
                    ),
                )
                self._runners[job_id] = runner
                done = await runner.drive(job_id)
                log.info("job %s ended: %s", job_id, done.state.value)
        except JobLeaseLost as exc:
            log.warning("%s", exc)
        except asyncio.CancelledError:
            if not self._closing:
                raise
        except GpushopError as exc:
            log.warning("job %s: %s", job_id, exc)
            await asyncio.to_thread(self._fail_unstarted, store, job_id, str(exc))

    def _fail_unstarted(self, store: Store, job_id: str, why: str) -> None:
        """A job whose driving could not even begin (its secrets do not open): failed, with the
        reason, rather than taken over again and again."""
        job = store.get_job(job_id)
        if job is not None and job.state is JobState.PENDING:
            store.update_job(job_id, state=JobState.FAILED, error=why, ended_at=datetime.now(UTC))

    def secrets_of(self, job: Job) -> dict[str, str]:
        if not job.sealed_secrets:
            return {}
        from gpushop.service.webhooks import box

        opened: dict[str, str] = json.loads(box(self.cfg).open(job.sealed_secrets))
        return opened

    def cancel(self, job_id: str) -> bool:
        """Cancel the job if this replica drives it (its runner aborts it: outputs, release);
        False when another does (it sees the request in the store within a beat)."""
        runner, task = self._runners.get(job_id), self._tasks.get(job_id)
        if runner is None or task is None:
            return False
        runner.stop(CANCELLED_BY_USER, task)
        return True

    def driving(self, job_id: str) -> bool:
        return job_id in self._tasks

    # -- takeovers -----------------------------------------------------------------------------

    async def take_over_abandoned(self) -> list[str]:
        """Claim the service's unfinished jobs whose owner's lease lapsed; drive each here."""
        store = await asyncio.to_thread(self._store)
        found = await asyncio.to_thread(store.list_jobs, active_only=True, service_only=True)
        now = datetime.now(UTC)
        claimed: list[str] = []
        for job in found:
            if job.id in self._tasks or owner_alive(
                job.owner_host, job.owner_pid, job.heartbeat_at, now, lease_until=job.lease_until
            ):
                continue
            won = await asyncio.to_thread(
                store.take_over_job,
                job,
                self.owner.host,
                self.owner.pid,
                lease_s=self.owner.lease_s,
            )
            if won is None:
                continue  # another replica was first
            log.warning("took over %s job %s from %s", won.state.value, won.id, job.owner_host)
            metrics.TAKEOVERS.inc()
            before = f"{job.owner_host}:{job.owner_pid}" if job.owner_host else "nobody"
            note = f"taken over by {self.owner.name} (from {before}, whose lease lapsed)"
            await asyncio.to_thread(store.job_log.append, won.id, [(NOTE, note.encode())])
            self.start(won.id)
            claimed.append(won.id)
        return claimed

    # -- readers -------------------------------------------------------------------------------

    def _wake(self, job_id: str) -> None:
        event = self._wakers.pop(job_id, None)
        if event is not None:
            event.set()

    async def wait_log(self, job_id: str, timeout: float) -> None:
        """Until a new piece of the job's log is in the store (when this replica writes it) or
        ``timeout`` (a reader polls for what other replicas write)."""
        event = self._wakers.setdefault(job_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    async def aclose(self) -> None:
        """Hand every job off: they go on running on their instances, and another replica
        takes them over at once (their lease is given up, not left to lapse)."""
        self._closing = True
        for job_id, task in list(self._tasks.items()):
            runner = self._runners.get(job_id)
            if runner is not None:
                runner.stop(HANDED_OFF, task)
            else:
                task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()))
