"""A service job's log in the store, on SQLite and PostgreSQL: pieces keep their byte offsets,
notes interleave in order, reads from any offset and resumes after any seq give exactly the
bytes written; a takeover's local copy is made what the store holds; a job's sealed secrets
are dropped when it ends and re-encrypted by a key rotation."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gpushop.config import load_settings
from gpushop.jobs.logbook import LogBook
from gpushop.models import JobState
from gpushop.service import team_jobs
from gpushop.store import Store
from gpushop.store.job_log import MAX_ROW, NOTE, OUT
from gpushop.store.secret_box import SecretBox, keygen


def _job(store: Store, sealed: str | None = None) -> str:
    return store.new_job(
        kind="run",
        name="j",
        spec={"command": "x"},
        owner_host="h",
        owner_pid=1,
        user_id="u1",
        sealed_secrets=sealed,
    ).id


def test_pieces_offsets_notes_and_reads_from_anywhere(store: Store) -> None:
    job = _job(store)
    log = store.job_log
    written = [b"alpha\n", b"be", b"ta\n", "gamma \u00e9\n".encode()]
    log.append(job, [(OUT, written[0]), (NOTE, b"rented r1"), (OUT, written[1])])
    log.append(job, [(OUT, written[2]), (OUT, written[3]), (NOTE, b"done")])
    whole = b"".join(written)
    assert log.size(job) == len(whole)
    entries = log.since(job, 0)
    assert [e.kind for e in entries] == [OUT, NOTE, OUT, OUT, NOTE]  # consecutive outs merged
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert [e.offset for e in entries if e.kind == OUT] == [0, 6, 8]
    for start in range(len(whole) + 1):
        assert log.read(job, start, 1000) == whole[start:]
        assert log.read(job, start, 3) == whole[start : start + 3]
    # resuming after any seq: the rest, in order
    for after in range(6):
        rest = b"".join(e.data for e in log.since(job, after) if e.kind == OUT)
        assert whole.endswith(rest)
    # from a byte offset: the entries from there hold it
    for start in range(len(whole)):
        held = [e for e in log.since(job, log.seq_at(job, start)) if e.kind == OUT]
        assert held[0].offset <= start < held[0].offset + len(held[0].data)
    assert log.read(_job(store), 0, 10) == b"" and log.size("jnothing") == 0


def test_a_big_piece_is_kept_in_bounded_rows(store: Store) -> None:
    job = _job(store)
    big = bytes(range(256)) * 4096 + b"tail"  # 1 MiB and 4 bytes
    store.job_log.append(job, [(OUT, big), (NOTE, b"n")])
    entries = store.job_log.since(job, 0, 100)
    assert max(len(e.data) for e in entries) <= MAX_ROW and len(entries) == 6
    assert store.job_log.read(job, 0, 2 * len(big)) == big
    assert store.job_log.read(job, MAX_ROW - 2, 4) == big[MAX_ROW - 2 : MAX_ROW + 2]


def test_a_takeover_rebuilds_or_cuts_back_its_local_copy(store: Store, tmp_path: Path) -> None:
    job = _job(store)
    store.job_log.append(job, [(OUT, b"0123456789")])
    here = tmp_path / "job.log"
    here.write_bytes(b"0123")  # another host's copy was further: completed from the store
    LogBook(here, store, job).align()
    assert here.read_bytes() == b"0123456789"
    here.write_bytes(b"0123456789abc")  # this copy got bytes the store never did: cut back
    LogBook(here, store, job).align()
    assert here.read_bytes() == b"0123456789"


def test_sealed_secrets_end_with_the_job_and_follow_a_key_rotation(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    mp = monkeypatch
    old, new = keygen(), keygen()
    sealed = SecretBox(old).seal('{"HF_TOKEN": "hf_x"}')
    running, ending = _job(store, sealed), _job(store, sealed)
    store.update_job(ending, state=JobState.FAILED)
    assert store.get_job(ending).sealed_secrets is None  # type: ignore[union-attr]
    assert store.sealed_jobs() == [(running, sealed)]
    mp.setenv("GPUSHOP_SECRET_KEY", f"{new},{old}")
    assert team_jobs.reseal(load_settings(), store) == 1
    [(_, resealed)] = store.sealed_jobs()
    assert SecretBox(new).open(resealed) == '{"HF_TOKEN": "hf_x"}'


def test_a_character_cut_between_pieces_is_streamed_whole_also_after_a_resume(
    store: Store,
) -> None:
    from gpushop.config import load_settings
    from gpushop.fleet.owners import Owner
    from gpushop.service.job_logs import follow
    from gpushop.service.job_supervisor import Supervisor

    job = _job(store)
    for piece in (b"caf\xc3", b"\xa9 ", "\u00e9t\u00e9\n".encode()):  # "café été", cut in é
        store.job_log.append(job, [(OUT, piece)])
    store.update_job(job, state=JobState.SUCCEEDED)
    supervisor = Supervisor(load_settings(), Owner.me(), lambda: store)

    async def events(after: int) -> list[tuple[int | None, dict[str, object]]]:
        return [
            (item.seq, item.data)
            async for item in follow(store, supervisor, job, after)
            if item.kind == "log"
        ]

    whole = asyncio.run(events(0))
    assert "".join(str(d["text"]) for _, d in whole) == "caf\u00e9 \u00e9t\u00e9\n"
    assert [d["offset"] for _, d in whole] == [0, 3, 6]  # where each text starts, in bytes
    first_seq = whole[0][0]
    assert first_seq is not None
    resumed = asyncio.run(events(first_seq))
    assert "".join(str(d["text"]) for _, d in resumed) == "\u00e9 \u00e9t\u00e9\n"
    assert resumed[0][1]["offset"] == 3


def test_a_burst_reaches_the_store_exactly_once(store: Store, tmp_path: Path) -> None:
    """Output as fast as the book takes it: the flushes in their thread and the last one at the
    end (which cancels the flush loop, maybe mid-write) store every byte once, in order."""
    job = _job(store)
    line = "mylora:  42%|\u2588\u2588\u2588\u2588      | 420/1000 [00:41<00:52]\n".encode()
    chunk = line * (65536 // len(line))

    async def write() -> None:
        book = LogBook(tmp_path / "job.log", store, job)
        async with book.flushing():
            for _ in range(128):  # 8 MB
                book.write(chunk)
                await asyncio.sleep(0)

    asyncio.run(write())
    stored = store.job_log.read(job, 0, 64 * 1024 * 1024)
    assert len(stored) == 128 * len(chunk) and stored == (tmp_path / "job.log").read_bytes()
