"""A job's live log over SSE (issue 13 §5): a `LogBook` writes the log as the runner does (a real
Store on PostgreSQL, inside ``book.flushing()``, ``book.write(chunk)``), and readers in another
process follow GET /v1/jobs/{id}/log/stream of one `gpushop serve`. The writer is not in the
serve process, so its readers poll the store (every 0.25 s): the cross-replica case. Each line
starts with the monotonic time of its write, so each reader knows every line's delay.

- steady: ai-toolkit-like progress lines at a fixed rate; delay write -> client (p50, p99), with
  one reader and with many at once;
- burst: megabytes written as fast as the book takes them; throughput end to end (MB/s, lines/s);
- the finished log read again from its start: SSE (one reader, many readers) against two
  baselines measured in the same run on the same bytes: GET /v1/jobs/{id}/log (text, the same
  serve process and rows, in its 4 MiB pages) and a raw SELECT of the rows (psycopg).

    .venv/bin/python benchmarks/bench_job_log.py [--rate 200] [--seconds 4] [--burst-mb 20]
        [--readers 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from gpushop.jobs.logbook import FLUSH_BYTES, FLUSH_S, LogBook
from gpushop.models import JobState
from gpushop.service import job_logs, users
from gpushop.store import Store

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import serve_process  # noqa: E402

CHUNK_BYTES = 64 * 1024  # what one read of the remote log gives the runner, at most
Writer = Callable[[Store, str, Path], Coroutine[Any, Any, dict[str, Any]]]


def _bodies(count: int) -> list[str]:
    """ai-toolkit's progress lines (after the timestamp each line starts with), ~120 bytes."""
    out = []
    for i in range(count):
        pct = i * 100 // count
        bar = "█" * (pct * 15 // 100) + " " * (15 - pct * 15 // 100)
        loss = 0.5 - 0.4 * i / count
        out.append(
            f" mylora: {pct:3d}%|{bar}| {i}/{count} [00:41<04:52, 3.00it/s, lr: 1.0e-04 "
            f"loss: {loss:.3e}]\n"
        )
    return out


def _stamp() -> str:
    return f"{time.monotonic():017.6f}"


def steady(rate: float, seconds: float) -> Writer:
    """One line per write, each on its schedule (open loop)."""

    async def write(store: Store, job_id: str, path: Path) -> dict[str, Any]:
        bodies = _bodies(int(rate * seconds))
        book = LogBook(path, store, job_id)
        written = 0
        async with book.flushing():
            start = time.monotonic()
            for i, body in enumerate(bodies):
                pause = start + i / rate - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
                line = (_stamp() + body).encode()
                book.write(line)
                written += len(line)
        return {"written": written, "lines_written": len(bodies), "write_s": start}

    return write


def burst(megabytes: float) -> Writer:
    """Chunks of whole lines, as fast as the book takes them (the loop yields between chunks,
    as the runner's does between reads)."""

    async def write(store: Store, job_id: str, path: Path) -> dict[str, Any]:
        sample = sum(len((_stamp() + b).encode()) for b in _bodies(1000)) / 1000
        bodies = _bodies(int(megabytes * 1e6 / sample))
        per_chunk = max(1, int(CHUNK_BYTES // sample))
        book = LogBook(path, store, job_id)
        written = 0
        async with book.flushing():
            start = time.monotonic()
            for i in range(0, len(bodies), per_chunk):
                stamp = _stamp()
                chunk = "".join(stamp + b for b in bodies[i : i + per_chunk]).encode()
                book.write(chunk)
                written += len(chunk)
                await asyncio.sleep(0)
        flushed = time.monotonic()
        return {
            "written": written,
            "lines_written": len(bodies),
            "write_s": start,
            "flushed_s": flushed,
        }

    return write


@dataclass(frozen=True, slots=True)
class Serve:
    url: str
    token: str
    pid: int

    def cpu_s(self) -> float:
        """The serve process's CPU time so far (user + system, from /proc)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _readers(serve: Serve, job_id: str, count: int, delays: bool) -> subprocess.Popen[str]:
    """The readers' process, once every stream has answered."""
    script = str(HERE / "read_log_stream.py")
    args = [serve.url, serve.token, job_id, str(count), *(["delays"] * delays)]
    proc = subprocess.Popen(
        [sys.executable, script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise RuntimeError(f"the SSE readers did not start: {proc.communicate()[1][-2000:]}")
    return proc


def _read(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"the SSE readers failed: {err[-2000:]}")
    result: dict[str, Any] = json.loads(out)
    return result


def _new_job(store: Store, user_id: str, name: str) -> str:
    # owned by this live process under a long lease: no replica takes it over to drive it
    return store.new_job(
        kind="run",
        name=name,
        spec={"command": "bench"},
        owner_host=socket.gethostname(),
        owner_pid=os.getpid(),
        user_id=user_id,
        lease_s=3600,
    ).id


def live(
    serve: Serve, store: Store, user_id: str, home: Path, readers: int, writer: Writer
) -> dict[str, Any]:
    """Readers following a job's stream while the writer writes it; the job then ends."""
    job_id = _new_job(store, user_id, "bench-log")
    proc = _readers(serve, job_id, readers, True)
    cpu, start = serve.cpu_s(), time.monotonic()
    try:
        wrote = asyncio.run(writer(store, job_id, home / f"{job_id}.log"))
        store.update_job(job_id, state=JobState.SUCCEEDED, exit_code=0, ended_at=datetime.now(UTC))
    except BaseException:
        proc.kill()
        raise
    read = _read(proc)
    share = (serve.cpu_s() - cpu) / (time.monotonic() - start)
    return {**wrote, **read, "job_id": job_id, "serve_cpu": share}


def replay(serve: Serve, job_id: str, readers: int) -> dict[str, Any]:
    """Readers of an ended job's stream from its start: bytes / (last byte - request sent)."""
    cpu = serve.cpu_s()
    read = _read(_readers(serve, job_id, readers, False))
    sent = sum(read["bytes"]) / 1e6
    read["mb_s"] = sent / (read["last_s"] - read["started_s"])
    read["cpu_ms_mb"] = (serve.cpu_s() - cpu) * 1000 / sent
    return read


def text_read(serve: Serve, job_id: str) -> dict[str, Any]:
    """GET /v1/jobs/{id}/log page after page (X-Next-Offset) to X-Log-Size."""
    headers = {"Authorization": f"Bearer {serve.token}"}
    got, pages = 0, 0
    with httpx.Client(base_url=serve.url, headers=headers, timeout=120) as client:
        cpu, start = serve.cpu_s(), time.monotonic()
        while True:
            answer = client.get(f"/v1/jobs/{job_id}/log", params={"offset": got})
            answer.raise_for_status()
            got, pages = int(answer.headers["x-next-offset"]), pages + 1
            if got >= int(answer.headers["x-log-size"]):
                break
        elapsed = time.monotonic() - start
        cpu_ms_mb = (serve.cpu_s() - cpu) * 1000 / (got / 1e6)
    return {"bytes": got, "pages": pages, "mb_s": got / 1e6 / elapsed, "cpu_ms_mb": cpu_ms_mb}


def select_read(db_url: str, job_id: str) -> dict[str, Any]:
    """The job's output rows, straight from PostgreSQL (the store's ceiling)."""
    with psycopg.connect(db_url) as conn:
        start = time.monotonic()
        rows = conn.execute(
            "SELECT data FROM job_log WHERE job_id = %s AND kind = 'out' ORDER BY seq", (job_id,)
        ).fetchall()
        elapsed = time.monotonic() - start
    got = sum(len(r[0]) for r in rows)
    return {"bytes": got, "rows": len(rows), "mb_s": got / 1e6 / elapsed}


def run(rate: float, seconds: float, burst_mb: float, readers: int) -> dict[str, Any]:
    schema = f"gpushop_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    db_url = f"postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
    home = Path(tempfile.mkdtemp(prefix="gpushop-bench-job-log-"))
    env = {
        **os.environ,
        "GPUSHOP_DB_URL": db_url,
        "GPUSHOP_CACHE_DIR": str(home / "cache"),
        "GPUSHOP_DATA_DIR": str(home / "data"),
        "GPUSHOP_API_RATE_LIMIT": "100000/second",
        "GPUSHOP_SYNC_INTERVAL": "3600",
    }
    server: subprocess.Popen[str] | None = None
    try:
        with Store.open(db_url) as store:
            user, token = users.add(store, "bench")
            url, server = serve_process.start(
                env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            serve = Serve(url, token, server.pid)
            one = live(serve, store, user.id, home, 1, steady(rate, seconds))
            many = live(serve, store, user.id, home, readers, steady(rate, seconds))
            big = live(serve, store, user.id, home, 1, burst(burst_mb))
            return {
                "rate": rate,
                "seconds": seconds,
                "readers": readers,
                "steady_1": one,
                "steady_n": many,
                "burst": big,
                "select": select_read(db_url, big["job_id"]),
                "text": text_read(serve, big["job_id"]),
                "replay_1": replay(serve, big["job_id"], 1),
                "replay_n": replay(serve, big["job_id"], readers),
            }
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        shutil.rmtree(home, ignore_errors=True)
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _whole(r: dict[str, Any], written: int) -> str:
    """Whether every reader got every byte, in order (and the end)."""
    complete = all(b == written for b in r["bytes"]) and r["gaps"] == 0
    ended = f", {r['ended']}/{r['readers']} saw the end" if r["ended"] != r["readers"] else ""
    return ("every byte to every reader" if complete else "BYTES MISSING") + ended


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="lines/s of the steady log")
    parser.add_argument("--seconds", type=float, default=4.0, help="of the steady log")
    parser.add_argument("--burst-mb", type=float, default=20.0)
    parser.add_argument("--readers", type=int, default=20, help="concurrent SSE readers")
    args = parser.parse_args(argv)
    r = run(args.rate, args.seconds, args.burst_mb, args.readers)
    s1, sn, b = r["steady_1"], r["steady_n"], r["burst"]
    print(
        "== job log as SSE: a LogBook on PostgreSQL in this process (flushes every "
        f"{FLUSH_S:g} s or {FLUSH_BYTES // 1024} KiB), read through GET "
        "/v1/jobs/{id}/log/stream of one `gpushop serve`"
    )
    print(
        f"   the writer is not in the serve process, so its readers poll the store every "
        f"{job_logs.POLL_S:g} s: the cross-replica case (on the writing replica a flush wakes them)"
    )
    line_b = s1["written"] / s1["lines_written"]
    for label, x in (("1 reader", s1), (f"{r['readers']} readers", sn)):
        print(
            f"   steady {r['rate']:g} lines/s for {r['seconds']:g} s ({line_b:.0f} B lines), "
            f"{label:>10}: delay write -> client p50 {x['p50_ms']:5.0f} ms, p99 {x['p99_ms']:5.0f} "
            f"ms, max {x['max_ms']:5.0f} ms; serve CPU {x['serve_cpu']:4.0%} of a core "
            f"({_whole(x, x['written'])})"
        )
    span = b["last_s"] - b["write_s"]
    writer_mb_s = b["written"] / 1e6 / (b["flushed_s"] - b["write_s"])
    print(
        f"   burst of {b['written'] / 1e6:.1f} MB ({b['lines_written']:,} lines, "
        f"{CHUNK_BYTES // 1024} KiB writes) as fast as the book takes it: all in the store at "
        f"{writer_mb_s:.1f} MB/s"
    )
    print(
        f"     1 reader, end to end (first write -> its last byte at the client): "
        f"{b['written'] / 1e6 / span:5.1f} MB/s, {b['lines_written'] / span:,.0f} lines/s; "
        f"delay p50 {b['p50_ms']:.0f} ms, p99 {b['p99_ms']:.0f} ms ({_whole(b, b['written'])})"
    )
    sel, text, one, many = r["select"], r["text"], r["replay_1"], r["replay_n"]
    print(f"   the ended {b['written'] / 1e6:.1f} MB log read from its start:")
    print(
        f"     baseline raw SELECT of its {sel['rows']} rows (psycopg):        "
        f"{sel['mb_s']:6.1f} MB/s"
    )
    print(
        f"     baseline GET /v1/jobs/{{id}}/log, text, {text['pages']} pages of 4 MiB:  "
        f"{text['mb_s']:6.1f} MB/s  (serve CPU {text['cpu_ms_mb']:4.1f} ms per MB)"
    )
    print(
        f"     SSE from seq 0, 1 reader:                            {one['mb_s']:6.1f} MB/s  "
        f"(serve CPU {one['cpu_ms_mb']:4.1f} ms per MB; {one['mb_s'] / text['mb_s']:.2f}x the "
        f"text's rate, {one['mb_s'] / sel['mb_s']:.2f}x the SELECT's)"
    )
    print(
        f"     SSE from seq 0, {many['readers']} readers at once, in all:          "
        f"{many['mb_s']:6.1f} MB/s  (serve CPU {many['cpu_ms_mb']:4.1f} ms per MB; "
        f"{many['mb_s'] / text['mb_s']:.2f}x the text's rate; {_whole(many, b['written'])})"
    )
    print(
        "     (the text GET isolates what SSE costs: same serve process, rows and bytes, only "
        "the framing differs; the SELECT is the store's ceiling; one client process reads for "
        f"all readers, on {os.cpu_count()} CPUs)"
    )


if __name__ == "__main__":
    main()
