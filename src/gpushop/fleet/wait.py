"""Waiting until an instance is really ready: its SSH server answers.

Two loops run together. The provider is polled no faster than its limits allow, for the status
(fail fast on states that never reach running). The SSH port, known from creation, is probed
directly every quarter second: it costs no API call, so readiness is seen within a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from gpushop.errors import GpushopError
from gpushop.models import Instance, InstanceStatus
from gpushop.providers.base import Provider
from gpushop.ssh.client import banner

PROBE_INTERVAL = 0.25
OFFLINE_GRACE = 60.0  # an "offline"/"unknown" host may be a blip; past this it is dead


class NotReady(GpushopError):
    """The instance will not become ready; the caller releases it and tries another offer."""

    def __init__(self, message: str, *, host_fault: bool = True) -> None:
        super().__init__(message)
        self.host_fault = host_fault


@dataclass
class Readiness:
    instance: Instance
    host: str
    port: int
    direct: bool
    seconds: float


def ssh_endpoints(inst: Instance) -> list[tuple[str, int, bool]]:
    """Where SSH may answer: direct first (faster, no proxy hop), then the provider's proxy."""
    out: list[tuple[str, int, bool]] = []
    if inst.direct_ssh_host and inst.direct_ssh_port:
        out.append((inst.direct_ssh_host, inst.direct_ssh_port, True))
    if (
        inst.ssh_host
        and inst.ssh_port
        and (inst.ssh_host, inst.ssh_port) not in {(h, p) for h, p, _ in out}
    ):
        out.append((inst.ssh_host, inst.ssh_port, False))
    return out


async def wait_ready(
    provider: Provider,
    instance_id: str,
    *,
    timeout_s: float,
    poll_interval_s: float = 2.2,
    on_status: Callable[[Instance], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Readiness:
    """Until SSH answers on the instance; raises NotReady (or a ProviderError).

    The API is polled in a task of its own: its calls may queue behind other processes sharing
    the key's rate limit, and must never hold up the SSH probe, which costs no API call.
    """
    started = clock()
    latest: list[Instance] = []
    failure: list[BaseException] = []

    async def poll() -> None:
        offline_since: float | None = None
        while True:
            try:
                inst = await provider.get_instance(instance_id)
                if inst is None:
                    raise NotReady(f"instance {instance_id} disappeared while starting")
                latest[:] = [inst]
                if on_status is not None:
                    on_status(inst)
                now = clock()
                status = inst.status
                if status is InstanceStatus.FAILED:
                    msg = inst.status_msg or "error"
                    raise NotReady(f"instance {instance_id} cannot start: {msg}")
                if status is InstanceStatus.STOPPED:
                    # DOCS: an instance that shows exited during start-up never reaches running
                    raise NotReady(
                        f"instance {instance_id} stopped while starting ({inst.raw_status})"
                    )
                if status is InstanceStatus.OFFLINE:
                    offline_since = offline_since or now
                    if now - offline_since > OFFLINE_GRACE:
                        raise NotReady(f"instance {instance_id} host is {inst.raw_status}")
                else:
                    offline_since = None
            except Exception as exc:  # handed to the waiting loop, which raises it
                failure.append(exc)
                return
            await asyncio.sleep(poll_interval_s)

    poller = asyncio.create_task(poll())
    try:
        while True:
            if failure:
                raise failure[0]
            if latest:
                for host, port, direct in ssh_endpoints(latest[0]):
                    if await banner(host, port, timeout=1.0):
                        return Readiness(latest[0], host, port, direct, clock() - started)
            if clock() - started > timeout_s:
                state = latest[0].raw_status if latest else "unknown"
                raise NotReady(
                    f"instance {instance_id} not ready after {timeout_s:.0f}s (status {state})"
                )
            await asyncio.sleep(PROBE_INTERVAL)
    finally:
        poller.cancel()
