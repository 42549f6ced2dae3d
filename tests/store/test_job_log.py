"""A service job's log in the store, on SQLite and PostgreSQL: pieces keep their byte offsets,
notes interleave in order, reads from any offset and resumes after any seq give exactly the
bytes written; a takeover's local copy is made what the store holds; a job's sealed secrets
are dropped when it ends and re-encrypted by a key rotation."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpushop.config import load_settings
from gpushop.jobs.logbook import LogBook
from gpushop.models import JobState
from gpushop.service import team_jobs
from gpushop.store import Store
from gpushop.store.job_log import NOTE, OUT
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
