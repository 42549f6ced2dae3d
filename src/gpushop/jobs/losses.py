"""A rental lost while the job ran: re-bid when outbid (``--rebid``), else release it and, if
the job may resume, rent again with what the recipe says the resume needs."""

from __future__ import annotations

import logging
import shlex
from pathlib import Path

from gpushop.errors import MoneyLimitError, ProviderError
from gpushop.fleet import rebid
from gpushop.fleet.reconcile_plan import outbid
from gpushop.fleet.wait import NotReady
from gpushop.jobs.contract import (
    log_path,
)
from gpushop.jobs.runner_base import (
    MAX_REBIDS,
    RunnerBase,
)
from gpushop.jobs.spec import JobSpec
from gpushop.models import JobState, RentalState
from gpushop.ssh import client as ssh
from gpushop.store import Job, Rental

log = logging.getLogger("gpushop.jobs")


class Losses(RunnerBase):
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
