"""A job's log as server-sent events: each entry of the stored log (store/job_log.py) is one
event whose id is its ``seq``, so a client that reconnects with ``Last-Event-ID`` gets exactly
what follows; ``end`` closes the stream once the job has ended and every entry was sent."""

from __future__ import annotations

import asyncio
import codecs
import time
from collections.abc import AsyncIterator

import orjson

from gpushop.service.job_supervisor import Supervisor
from gpushop.store import Store
from gpushop.store.job_log import NOTE

POLL_S = 0.25  # how often a reader looks for entries another replica wrote
KEEPALIVE_S = 15.0  # a comment line: proxies keep the connection, clients see it is alive
RETRY_MS = 1000


def resume_point(last_event_id: str | None) -> int | None:
    """The seq a reconnecting client saw last (None: none, or not one of ours)."""
    if last_event_id is None or not last_event_id.strip().isdigit():
        return None
    return int(last_event_id.strip())


def _event(kind: str, data: dict[str, object], seq: int | None = None) -> bytes:
    head = f"id: {seq}\n" if seq is not None else ""
    return f"{head}event: {kind}\n".encode() + b"data: " + orjson.dumps(data) + b"\n\n"


async def events(
    store: Store, supervisor: Supervisor, job_id: str, after: int, offset: int = 0
) -> AsyncIterator[bytes]:
    """The entries after seq ``after`` (output before byte ``offset`` trimmed), then live ones
    as they come, then ``end``."""
    yield f"retry: {RETRY_MS}\n\n".encode()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    last_sent = time.monotonic()
    while True:
        entries = await asyncio.to_thread(store.job_log.since, job_id, after)
        for entry in entries:
            after = entry.seq
            if entry.kind == NOTE:
                yield _event("note", {"text": entry.data.decode(errors="replace")}, entry.seq)
                continue
            data, start = entry.data, entry.offset
            if start < offset:  # resumed from a byte offset inside this piece
                data, start = data[offset - start :], offset
            text = decoder.decode(data)
            if data:
                yield _event("log", {"offset": start, "text": text}, entry.seq)
        if entries:
            last_sent = time.monotonic()
            continue  # there may be more at once
        job = await asyncio.to_thread(store.get_job, job_id)
        if job is None or job.state.terminal:
            # the job's last entries are written before its end state: one more look
            if not await asyncio.to_thread(store.job_log.since, job_id, after, 1):
                yield _event(
                    "end",
                    {
                        "state": job.state.value if job else "gone",
                        "exit_code": job.exit_code if job else None,
                        "error": job.error if job else None,
                    },
                )
                return
            continue
        if time.monotonic() - last_sent > KEEPALIVE_S:
            yield b": keepalive\n\n"
            last_sent = time.monotonic()
        await supervisor.wait_log(job_id, POLL_S)
