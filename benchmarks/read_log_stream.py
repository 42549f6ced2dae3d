"""SSE readers of a job's log (run as its own process, so that the readers and the writer share
no event loop): READERS streams of GET /v1/jobs/{id}/log/stream at once. Prints ``ready`` once
every stream has answered, then, when each has had its ``end`` event, a summary as JSON: bytes
and lines per reader, when the first and last output arrived (time.monotonic(), which every
process of the host shares), the process's CPU time, and, with ``delays``, the delay of each
line, from the monotonic timestamp that starts it (its write) to its arrival.

    python benchmarks/read_log_stream.py BASE_URL TOKEN JOB_ID READERS [delays]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson


@dataclass
class Reader:
    started: float = 0.0
    first: float | None = None
    last: float | None = None
    bytes: int = 0
    lines: int = 0
    gaps: int = 0  # a log event that did not start where the previous one ended
    ended: bool = False
    delays: list[float] = field(default_factory=list)
    _pending: str = ""

    def log(self, event: dict[str, Any], now: float, delays: bool) -> None:
        if event["offset"] != self.bytes:
            self.gaps += 1
        text: str = event["text"]
        self.bytes += len(text.encode())
        self.first = self.first or now
        self.last = now
        if not delays:
            self.lines += text.count("\n")
            return
        *whole, self._pending = (self._pending + text).split("\n")
        self.lines += len(whole)
        self.delays.extend(now - float(one[: one.index(" ")]) for one in whole)


async def _follow(
    client: httpx.AsyncClient, path: str, reader: Reader, ready: Callable[[], None], delays: bool
) -> None:
    """Events split by hand from the bytes (cheaper than line by line: one process reads for
    every reader, and must not be what limits them)."""
    reader.started = time.monotonic()
    async with client.stream("GET", path) as response:
        response.raise_for_status()
        ready()
        buffer, scanned = bytearray(), 0
        async for chunk in response.aiter_bytes():
            now = time.monotonic()
            buffer += chunk
            while (end := buffer.find(b"\n\n", max(0, scanned - 1))) >= 0:
                event = bytes(buffer[:end])
                del buffer[: end + 2]
                scanned = 0
                kind, data = b"message", b""
                for line in event.split(b"\n"):
                    if line.startswith(b"event: "):
                        kind = line[7:]
                    elif line.startswith(b"data: "):
                        data = line[6:]
                if kind == b"log":
                    reader.log(orjson.loads(data), now, delays)
                elif kind == b"end":
                    reader.ended = True
                    return
            scanned = len(buffer)


async def main(base: str, token: str, job_id: str, count: int, delays: bool) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=count + 4)
    timeout = httpx.Timeout(10.0, read=60.0)
    readers = [Reader() for _ in range(count)]
    answered = 0

    def ready() -> None:
        nonlocal answered
        answered += 1
        if answered == count:
            print("ready", flush=True)

    path = f"/v1/jobs/{job_id}/log/stream"
    async with httpx.AsyncClient(
        base_url=base, headers=headers, limits=limits, timeout=timeout
    ) as client:
        await asyncio.gather(*(_follow(client, path, r, ready, delays) for r in readers))
    ordered = sorted(d for r in readers for d in r.delays)
    return {
        "readers": count,
        "cpu_s": time.process_time(),
        "started_s": min(r.started for r in readers),
        "first_s": min(r.first or float("inf") for r in readers),
        "last_s": max(r.last or 0.0 for r in readers),
        "bytes": [r.bytes for r in readers],
        "lines": [r.lines for r in readers],
        "gaps": sum(r.gaps for r in readers),
        "ended": sum(r.ended for r in readers),
        "p50_ms": statistics.median(ordered) * 1000 if ordered else None,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
        if ordered
        else None,
        "max_ms": ordered[-1] * 1000 if ordered else None,
    }


if __name__ == "__main__":
    base, token, job_id, count, *flags = sys.argv[1:]
    result = asyncio.run(main(base, token, job_id, int(count), "delays" in flags))
    print(json.dumps(result))
