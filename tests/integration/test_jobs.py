"""Jobs end to end against the emulator: `gpushop run / jobs / logs / attach / timings`.

Every job rents a real emulated instance with a real SSH server; the command runs detached in
the instance's sandbox, and the tests check what a user would: the files that came back, the
log, the exit code, and that no instance is left billing."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli_run import cli, interruptible_cli
from gpushop.fleet.owners import pid_alive
from gpushop.jobs.contract import log_path
from gpushop.store import Job, Store
from waiting import until

RUN = ("run", "--min-vram", "24", "--attempts", "2")


@pytest.fixture
def env(emulator: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    monkeypatch.setenv("VASTAI_URL", emulator.url)
    monkeypatch.setenv("VASTAI_API_KEY", emulator.api_key)
    monkeypatch.setenv("GPUSHOP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GPUSHOP_DATA_DIR", str(tmp_path / "data"))
    db_url = f"sqlite:///{tmp_path / 'store.db'}"
    monkeypatch.setenv("GPUSHOP_DB_URL", db_url)
    monkeypatch.chdir(tmp_path)
    yield emulator
    # A test that failed half-way may leave a detached supervisor running: it must not go on
    # renting from the emulator the next test of this worker resets and uses.
    if (tmp_path / "store.db").exists():
        with Store.open(db_url) as s:
            owners = {j.owner_pid for j in s.list_jobs() if j.owner_pid and not j.state.terminal}
        for pid in owners - {os.getpid()}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            until(lambda pid=pid: not pid_alive(pid), f"supervisor {pid} to die")


def live_instances(emu: Any) -> list[dict[str, Any]]:
    return [i for i in emu.control.state()["instances"] if i.get("actual_status") != "destroyed"]


def store() -> Store:
    return Store.open(os.environ["GPUSHOP_DB_URL"])


def only_job() -> Job | None:
    with store() as s:
        jobs = s.list_jobs()
    assert len(jobs) <= 1
    return jobs[0] if jobs else None


def job_now(job_id: str) -> Job:
    with store() as s:
        job = s.get_job(job_id)
    assert job is not None
    return job


def workspace(emu: Any, job: Job) -> Path:
    """The job's instance's /workspace, seen from this machine (the emulator's sandbox)."""
    with store() as s:
        rental = s.get(job.rental_id or "")
    assert rental is not None and rental.instance_id
    return Path(emu.control.instance(int(rental.instance_id))["sandbox"]) / "workspace"


def logged(job_id: str, text: str) -> bool:
    path = log_path(job_id)
    return path.exists() and text in path.read_text(errors="replace")


# A job that waits at a gate until the test opens it (touches /workspace/go): what the test
# does meanwhile (a sync, a crash, an SSH drop, Ctrl-C) surely happens while the job runs.
GATE = "while [ ! -e /workspace/go ]; do sleep 0.05; done"


def dataset(root: Path) -> Path:
    data = root / "data"
    (data / "sub").mkdir(parents=True)
    (data / "a.txt").write_text("alpha\n")
    (data / "sub" / "b.bin").write_bytes(os.urandom(300_000))
    return data


def test_run_uploads_runs_downloads_and_releases(env: Any, capsys: Any, tmp_path: Path) -> None:
    data = dataset(tmp_path)
    code, out, err = cli(
        capsys,
        *RUN,
        "--upload",
        f"{data}:/workspace/in",
        "--cmd",
        "mkdir -p out && wc -c < in/sub/b.bin > out/size.txt && cp in/a.txt out/ && echo done",
        "--download",
        f"/workspace/out:{tmp_path / 'results'}",
        "--json",
    )
    assert code == 0, err
    summary = json.loads(out)  # --json: stdout is the summary only; the log goes to stderr
    assert summary["state"] == "succeeded" and summary["exit_code"] == 0
    assert (tmp_path / "results" / "size.txt").read_text().strip() == "300000"
    assert (tmp_path / "results" / "a.txt").read_text() == "alpha\n"
    assert "done" in err  # the job's own output streamed to the terminal
    for phase in ("offer_chosen", "created", "ssh_ready", "upload", "run", "download", "released"):
        assert phase in summary["timings"], phase
    assert summary["cost_usd"] > 0
    assert live_instances(env) == []


def test_a_failing_command_keeps_its_log_and_still_releases(env: Any, capsys: Any) -> None:
    code, _, _ = cli(capsys, *RUN, "--cmd", "echo about to fail; exit 3")
    assert code == 1
    with store() as s:
        job = s.list_jobs()[0]
    assert job.state.value == "failed" and job.exit_code == 3
    assert "about to fail" in log_path(job.id).read_text()
    assert live_instances(env) == []


def test_timeout_stops_the_job_and_releases(env: Any, capsys: Any) -> None:
    started = time.monotonic()
    code, _, err = cli(capsys, *RUN, "--timeout", "2s", "--cmd", "/bin/sleep 120")
    assert code == 124, err
    assert time.monotonic() - started < 60
    with store() as s:
        assert s.list_jobs()[0].state.value == "timed_out"
    assert live_instances(env) == []


def test_bad_input_rents_nothing(env: Any, capsys: Any, tmp_path: Path) -> None:
    code, _, err = cli(capsys, *RUN, "--upload", str(tmp_path / "missing"), "--cmd", "true")
    assert code == 2 and "no such file" in err and "Traceback" not in err
    code, _, err = cli(capsys, *RUN, "--env", "1BAD=x", "--cmd", "true")
    assert code == 2 and "KEY=VALUE" in err
    code, _, err = cli(capsys, *RUN, "--timeout", "soon", "--cmd", "true")
    assert code == 2
    assert env.control.request_count("PUT /api/v0/asks/{id}/") == 0
    assert live_instances(env) == []


def test_a_secret_goes_over_ssh_only(env: Any, capsys: Any, tmp_path: Path) -> None:
    import hashlib

    secret = "hf_" + "s3cr3t" * 6
    digest = hashlib.sha256(secret.encode()).hexdigest()
    code, out, err = cli(
        capsys,
        *RUN,
        "--env",
        f"HF_TOKEN={secret}",
        "--env",
        "MODE=fast",
        "--cmd",
        # compared by digest: the command itself is stored, and must not hold the secret
        f'test "$(printf %s "$HF_TOKEN" | sha256sum | cut -c1-64)" = "{digest}" '
        '&& echo "token ok, mode $MODE"',
    )
    assert code == 0, err
    assert "token ok, mode fast" in out
    assert secret not in out + err
    db = Path(os.environ["GPUSHOP_DB_URL"].removeprefix("sqlite:///"))
    for path in db.parent.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    for request in env.control.requests():
        assert secret not in json.dumps(request), "the secret reached the provider API"


def test_sync_every_brings_outputs_back_while_the_job_runs(
    env: Any, capsys: Any, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    code, out, _ = cli(
        capsys,
        *RUN,
        "--detach",
        "--sync-every",
        "1s",
        "--cmd",
        f"mkdir -p out; echo step 1 > out/ckpt_1; {GATE}; "
        "for i in 2 3 4 5 6 7 8; do echo step $i > out/ckpt_$i; done",
        "--download",
        f"/workspace/out:{results}",
    )
    assert code == 0
    job_id = out.split()[0]
    # the job holds at its gate until the first checkpoint came back: by a sync, as it runs
    until((results / "ckpt_1").exists, "a checkpoint synced back")
    job = job_now(job_id)
    assert job.state.value == "running", "a checkpoint came back before the job could end"
    (workspace(env, job) / "go").touch()
    job = until(lambda: (j := job_now(job_id)).state.terminal and j, "the job to end")
    assert job.state.value == "succeeded"
    assert sorted(p.name for p in results.iterdir()) == [f"ckpt_{i}" for i in range(1, 9)]
    assert live_instances(env) == []


def test_detach_then_attach_recovers_a_crashed_client(
    env: Any, capsys: Any, tmp_path: Path
) -> None:
    import threading

    code, out, _ = cli(
        capsys,
        *RUN,
        "--detach",
        "--cmd",
        f"for i in $(seq 1 6); do echo line $i; done; {GATE}; "
        "for i in $(seq 7 12); do echo line $i; done",
    )
    assert code == 0
    job_id = out.split()[0]
    # wait until the job runs and its supervisor has streamed some of it, then kill the
    # supervisor as a crash would
    until(lambda: logged(job_id, "line 6"), "the supervisor to stream the first lines")
    job = job_now(job_id)
    assert job.state.value == "running" and job.owner_pid
    os.kill(job.owner_pid, signal.SIGKILL)
    until(lambda: not pid_alive(job.owner_pid or 0), "the killed supervisor to be gone")
    code, listing, _ = cli(capsys, "jobs")
    assert job_id in listing and "unwatched" in listing
    gate = workspace(env, job) / "go"
    db_url = os.environ["GPUSHOP_DB_URL"]  # read now: the thread may outlive monkeypatch
    attached = threading.Event()

    def open_the_gate_once_attached() -> None:
        # the rest of the job runs while `attach` follows it, not before
        while not attached.is_set():
            with Store.open(db_url) as s:
                current = s.get_job(job_id)
            if current is not None and current.owner_pid == os.getpid():
                break
            attached.wait(0.05)
        gate.touch()

    opener = threading.Thread(target=open_the_gate_once_attached, daemon=True)
    opener.start()
    try:
        code, out, err = cli(capsys, "attach", job_id)
    finally:
        attached.set()
        opener.join()
    assert code == 0, err
    text = log_path(job_id).read_text()
    assert [line for line in text.splitlines() if line.startswith("line ")] == [
        f"line {i}" for i in range(1, 13)
    ], "each line once, in order, across the crash"
    code, out, _ = cli(capsys, "logs", job_id)
    assert "line 12" in out
    assert live_instances(env) == []


def test_an_ssh_drop_mid_run_resumes_the_log_where_it_was(env: Any, capsys: Any) -> None:
    import threading

    db_url = os.environ["GPUSHOP_DB_URL"]  # read now: the thread may outlive monkeypatch
    data_dir = os.environ["GPUSHOP_DATA_DIR"]
    done = threading.Event()

    def drop_mid_run() -> None:
        # once the first half of the log came through, drop SSH while the job holds at its
        # gate, then let it finish: the client must reconnect and resume the log
        while not done.wait(0.05):
            with Store.open(db_url) as s:
                jobs = s.list_jobs()
            log = Path(data_dir) / "jobs" / jobs[0].id / "job.log" if jobs else None
            if log is not None and log.exists() and "tick 5" in log.read_text(errors="replace"):
                with Store.open(db_url) as s:
                    rental = s.get(jobs[0].rental_id or "")
                assert rental is not None and rental.instance_id
                iid = int(rental.instance_id)
                env.control.drop_ssh(iid)
                (Path(env.control.instance(iid)["sandbox"]) / "workspace" / "go").touch()
                return

    dropper = threading.Thread(target=drop_mid_run, daemon=True)
    dropper.start()
    try:
        code, out, err = cli(
            capsys,
            *RUN,
            "--cmd",
            f"for i in $(seq 1 5); do echo tick $i; done; {GATE}; "
            "for i in $(seq 6 10); do echo tick $i; done",
        )
    finally:
        done.set()
        dropper.join()
    assert code == 0, err
    assert "reconnecting" in err
    assert [ln for ln in out.splitlines() if ln.startswith("tick")] == [
        f"tick {i}" for i in range(1, 11)
    ]


def ended(proc: subprocess.Popen[str], timeout: float) -> str:
    """The CLI's stderr once it has ended; if it hangs, a failure that shows where (with
    PYTHONFAULTHANDLER, SIGABRT makes it print every thread's stack)."""
    try:
        return proc.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        try:
            err = proc.communicate(timeout=10)[1]
        except subprocess.TimeoutExpired:
            proc.kill()
            err = proc.communicate()[1]
        pytest.fail(f"Ctrl-C did not end the run within {timeout:.0f} s:\n{err[-6000:]}")


def test_ctrl_c_downloads_what_exists_and_releases(env: Any, tmp_path: Path) -> None:
    results = tmp_path / "results"
    proc = subprocess.Popen(
        interruptible_cli(
            *RUN,
            "--cmd",
            "mkdir -p out; echo partial > out/first; echo written; /bin/sleep 300",
            "--download",
            f"/workspace/out:{results}",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
    )
    try:
        # Ctrl-C once the job's output says its first file is written
        job = until(only_job, "the job to be created")
        until(lambda: logged(job.id, "written"), "the job to write its first file")
        proc.send_signal(signal.SIGINT)
        err = ended(proc, 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert (results / "first").read_text() == "partial\n"
    with store() as s:
        assert s.list_jobs()[0].state.value == "cancelled"
    assert live_instances(env) == []


@pytest.mark.slow  # it waits out the 20 s bound on stopping the job
def test_ctrl_c_releases_an_instance_that_does_not_answer(env: Any, tmp_path: Path) -> None:
    """Ctrl-C when stopping the job gets no answer from the instance (here its pid file became a
    FIFO nobody writes: the kill's `cat` blocks for ever): the rental is released all the same,
    and the run ends, instead of waiting for ever on the instance."""
    proc = subprocess.Popen(
        interruptible_cli(*RUN, "--cmd", "echo written; /bin/sleep 300"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # the instance's silence is waited out 3 s (20 by default)
        env={**os.environ, "PYTHONFAULTHANDLER": "1", "GPUSHOP_STOP_TIMEOUT": "3"},
    )
    try:
        job = until(only_job, "the job to be created")
        until(lambda: logged(job.id, "written"), "the job to run and its log to be followed")
        pid_file = workspace(env, job_now(job.id)) / ".gpushop" / "jobs" / job.id / "pid"
        pid_file.unlink()
        os.mkfifo(pid_file)
        proc.send_signal(signal.SIGINT)
        err = ended(proc, 90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "no answer from the instance" in err and "released" in err, err
    with store() as s:
        assert s.list_jobs()[0].state.value == "cancelled"
    assert live_instances(env) == []


def test_timings_by_gpu_and_phase(env: Any, capsys: Any) -> None:
    assert cli(capsys, *RUN, "--cmd", "true")[0] == 0
    _, out, _ = cli(capsys, "timings", "--json")
    rows = json.loads(out)
    phases = {r["phase"] for r in rows}
    assert {"created", "ssh_ready", "run", "released"} <= phases
    assert all(r["gpu_name"] and r["provider"] == "vastai" for r in rows)
    assert all(r["median_s"] <= r["p90_s"] for r in rows)
