"""A job's stored log as a live sequence of entries (what the SSE stream sends): what is there
after a given ``seq``, then each new entry as it comes, then the job's end once it has ended and
every entry was given. Readers on the replica that writes the log are woken at each write;
readers elsewhere poll."""

from __future__ import annotations

import asyncio
import codecs
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from gpushop.service.job_supervisor import Supervisor
from gpushop.store import Store
from gpushop.store.job_log import NOTE, OUT

POLL_S = 0.25  # how often a reader looks for entries another replica wrote
KEEPALIVE_S = 15.0


@dataclass(frozen=True, slots=True)
class Item:
    kind: str  # "log", "note", "end", or "idle" (nothing for KEEPALIVE_S)
    data: dict[str, Any]
    seq: int | None = None


async def follow(
    store: Store, supervisor: Supervisor, job_id: str, after: int, offset: int = 0
) -> AsyncIterator[Item]:
    """The entries after seq ``after`` (output before byte ``offset`` trimmed), then live ones,
    then ``end``."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    if after:  # a resumed stream: a character cut at the end of the last piece sent comes now
        before = await asyncio.to_thread(store.job_log.since, job_id, after - 1, 1)
        if before and before[0].seq == after and before[0].kind == OUT:
            decoder.decode(before[0].data)
    last_sent = time.monotonic()
    while True:
        entries = await asyncio.to_thread(store.job_log.since, job_id, after)
        for entry in entries:
            after = entry.seq
            if entry.kind == NOTE:
                yield Item("note", {"text": entry.data.decode(errors="replace")}, entry.seq)
                continue
            data, start = entry.data, entry.offset
            if start < offset:  # resumed from a byte offset inside this piece
                data, start = data[offset - start :], offset
            # a character cut between two pieces is sent whole, with the second: each event's
            # offset is where its text starts in the log's bytes
            held = len(decoder.getstate()[0])
            text = decoder.decode(data)
            if text:
                yield Item("log", {"offset": start - held, "text": text}, entry.seq)
        if entries:
            last_sent = time.monotonic()
            continue  # there may be more at once
        job = await asyncio.to_thread(store.get_job, job_id)
        if job is None or job.state.terminal:
            # the runner writes the last entries before the end state: one more look
            if not await asyncio.to_thread(store.job_log.since, job_id, after, 1):
                yield Item(
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
            yield Item("idle", {})
            last_sent = time.monotonic()
        await supervisor.wait_log(job_id, POLL_S)
