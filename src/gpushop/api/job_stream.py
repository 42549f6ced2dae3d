"""A job's log as server-sent events: each stored entry is one event whose id is its ``seq``,
so a client that reconnects with ``Last-Event-ID`` gets exactly what follows; ``end`` closes
the stream once the job has ended and every entry was sent."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson

from gpushop.service import job_logs
from gpushop.service.job_supervisor import Supervisor
from gpushop.service.types import Store

RETRY_MS = 1000


def resume_point(last_event_id: str | None) -> int | None:
    """The seq a reconnecting client saw last (None: none, or not one of ours)."""
    if last_event_id is None or not last_event_id.strip().isdigit():
        return None
    return int(last_event_id.strip())


async def events(
    store: Store, supervisor: Supervisor, job_id: str, after: int, offset: int = 0
) -> AsyncIterator[bytes]:
    yield f"retry: {RETRY_MS}\n\n".encode()
    async for item in job_logs.follow(store, supervisor, job_id, after, offset):
        if item.kind == "idle":
            yield b": keepalive\n\n"  # proxies keep the connection; clients see it is alive
            continue
        head = f"id: {item.seq}\n" if item.seq is not None else ""
        yield f"{head}event: {item.kind}\n".encode() + b"data: " + orjson.dumps(item.data) + b"\n\n"
