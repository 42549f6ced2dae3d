"""The CLI's job commands as a client of the team service: with GPUSHOP_SERVER and GPUSHOP_TOKEN,
`train flux-lora`, `run`, `jobs`, `logs [-f]` and `attach` go to a real `gpushop serve` on the
emulator and show what they show locally: the LoRA downloaded and verified, the outputs back,
the same --json keys and exit codes; a bad dataset is every bad file listed, nothing rented;
the live log resumes where a cut connection left it; Ctrl-C cancels the job, as locally."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from cli_run import cli, interruptible_cli
from gpushop.client import jobs as api
from gpushop.client.http import ApiClient
from gpushop.client.session import Remote
from gpushop.recipes.safetensors import verify_lora
from gpushop.recipes.sample_data import png, write_sample_dataset
from gpushop.store.secret_box import keygen
from waiting import until

RUN = ("run", "--min-vram", "24", "--attempts", "2")
# a job waits here until the test opens the gate (touches /workspace/go on its instance)
GATE = "while [ ! -e /workspace/go ]; do sleep 0.05; done"
HF = "hf_" + "cl1entt0ken" * 4


@pytest.fixture
def service(
    environment: dict[str, str], serve: Any, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, str]:
    """A service (its URL) with a user whose token (returned) this process's CLI uses."""
    env = {**environment, "GPUSHOP_SECRET_KEY": keygen()}
    url, _ = serve(env)
    code, out, err = cli(capsys, "users", "add", "ann")
    assert code == 0, err
    monkeypatch.setenv("GPUSHOP_SERVER", url)
    monkeypatch.setenv("GPUSHOP_TOKEN", out.strip())
    return url, out.strip()


def local(capsys: Any, monkeypatch: pytest.MonkeyPatch, *argv: str) -> tuple[int, str, str]:
    """The same command locally (the local store is the service's here)."""
    with monkeypatch.context() as m:
        m.delenv("GPUSHOP_SERVER")
        m.delenv("GPUSHOP_TOKEN")
        return cli(capsys, *argv)


def live_instances(emu: Any) -> list[dict[str, Any]]:
    return [i for i in emu.control.state()["instances"] if i.get("actual_status") != "destroyed"]


def creates(emu: Any) -> int:
    return emu.control.request_count("PUT /api/v0/asks/{id}/")


def service_log(url: str, token: str, job_id: str) -> str:
    auth = {"Authorization": f"Bearer {token}"}
    return httpx.get(f"{url}/v1/jobs/{job_id}/log", headers=auth).text


def test_train_flux_lora_through_the_service(
    service: tuple[str, str],
    capsys: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    emulator: Any,
) -> None:
    monkeypatch.setenv("HF_TOKEN", HF)  # this user's, never the service's own environment
    bad = write_sample_dataset(tmp_path / "bad", count=2)
    (bad / "no_caption.png").write_bytes(png(8, 8))
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "broken.png").write_bytes(png(8, 8)[:20])
    (bad / "broken.txt").write_text("x")
    argv = ("train", "flux-lora", "--dataset", str(bad), "--name", "x", "--yes")
    code, out, err = cli(capsys, *argv)
    assert code == 2, err
    assert all(f"  - {name}" in err for name in ("no_caption.png", "empty.jpg", "broken.png"))
    here = local(capsys, monkeypatch, *argv)
    assert (code, out) == here[:2] and err.endswith(here[2]), err  # the same error, word for word
    assert creates(emulator) == 0

    data = write_sample_dataset(tmp_path / "ds", count=4)
    out_dir = tmp_path / "lora"
    code, out, err = cli(
        capsys,
        "train",
        "flux-lora",
        "--dataset",
        str(data),
        "--name",
        "mylora",
        "--trigger",
        "sks",
        "--steps",
        "200",
        "--save-every",
        "50",
        "--rank",
        "8",
        "--out",
        str(out_dir),
        "--yes",
    )
    assert code == 0, err
    assert out.startswith("Plan: flux-lora 'mylora'") and "  disk     " in out, out
    final = out_dir / "mylora.safetensors"
    assert f"LoRA: {final} (" in out
    assert verify_lora(final, rank=8).tensors
    assert list(out_dir.glob("mylora_0000001*.safetensors")), "intermediate checkpoints"
    assert "200/200" in out + err and "verified by sha256" in err
    assert "succeeded" in err.splitlines()[-1]
    assert HF not in out + err
    assert live_instances(emulator) == []


def test_run_jobs_logs_and_attach_through_the_service(
    service: tuple[str, str],
    capsys: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    emulator: Any,
) -> None:
    url, token = service
    # a failing job, detached: it runs, then waits at its gate, while the next one runs
    failing_cmd = f"seq 1 40 | sed 's/^/line /'; {GATE}; exit 3"
    code, out, err = cli(capsys, *RUN, "--detach", "--cmd", failing_cmd)
    assert code == 0, err
    failing = out.strip()
    assert f"follow: gpushop logs {failing} -f" in err

    # two folders to two places under one folder; a secret from this environment
    (tmp_path / "data" / "sub").mkdir(parents=True)
    (tmp_path / "data" / "a.txt").write_text("alpha\n")
    (tmp_path / "data" / "sub" / "b.bin").write_bytes(os.urandom(300_000))
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "c.txt").write_text("gamma\n")
    secret = "sk-" + "s3cr3tvalue" * 3
    monkeypatch.setenv("MY_API_TOKEN", secret)
    digest = hashlib.sha256(secret.encode()).hexdigest()
    results = tmp_path / "results"
    code, out, err = cli(
        capsys,
        *RUN,
        "--upload",
        f"{tmp_path / 'data'}:/workspace/in",
        "--upload",
        str(tmp_path / "cfg"),
        "--env",
        "MY_API_TOKEN",
        "--env",
        "MODE=fast",
        "--cmd",
        "mkdir -p out && wc -c < in/sub/b.bin > out/size.txt && cp in/a.txt cfg/c.txt out/ && "
        f'test "$(printf %s "$MY_API_TOKEN" | sha256sum | cut -c1-64)" = "{digest}" && '
        'echo "done, mode $MODE"',
        "--download",
        f"/workspace/out:{results}",
        "--json",
    )
    assert code == 0, err
    summary = json.loads(out)  # --json: stdout is the summary only, the log on stderr
    assert summary["state"] == "succeeded" and summary["exit_code"] == 0, summary
    assert (results / "size.txt").read_text().strip() == "300000"
    assert (results / "a.txt").read_text() == "alpha\n"
    assert (results / "c.txt").read_text() == "gamma\n"
    assert "done, mode fast" in err and "verified by sha256" in err
    assert secret not in out + err
    job_id = summary["job_id"]
    # the same summary a local attach shows of it (the store is the same here)
    here = local(capsys, monkeypatch, "attach", job_id, "--json")
    assert here[0] == 0 and set(json.loads(here[1])) == set(summary)

    # logs: the service's log; attach follows the failing job to its end (exit 1, as locally)
    code, out, _ = cli(capsys, "logs", job_id)
    assert code == 0 and out == service_log(url, token, job_id) == "done, mode fast\n"
    attach = subprocess.Popen(
        [sys.executable, "-m", "gpushop", "attach", failing],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    shown: list[str] = []
    reader = threading.Thread(target=lambda: shown.extend(iter(attach.stdout.readline, "")))
    reader.start()
    try:
        # attach follows the job as it runs: its log so far, then its end once the gate opens
        until(lambda: "line 40\n" in shown, "attach to show the job's log so far")
        for instance in live_instances(emulator):
            sandbox = Path(emulator.control.instance(instance["id"])["sandbox"])
            (sandbox / "workspace" / "go").touch()
        err = attach.communicate(timeout=60)[1]
    finally:
        if attach.poll() is None:
            attach.kill()
            attach.communicate()
        reader.join()
    assert attach.returncode == 1, err  # failed: exit 1, as locally
    assert f"job {failing} failed (exit 3)" in err
    expected = "".join(f"line {i}\n" for i in range(1, 41))
    assert "".join(shown) == expected
    code, out, _ = cli(capsys, "logs", failing, "-f")
    assert code == 0 and out == service_log(url, token, failing) == expected

    # jobs: the same --json keys and table as locally
    code, out, _ = cli(capsys, "jobs", "--all", "--json")
    theirs = {row["job_id"]: row for row in json.loads(out)}
    mine = {
        row["job_id"]: row
        for row in json.loads(local(capsys, monkeypatch, "jobs", "-a", "--json")[1])
    }
    assert set(theirs) == {job_id, failing} and set(mine) == set(theirs)
    assert all(set(theirs[i]) == set(mine[i]) for i in theirs)
    assert theirs[failing]["exit_code"] == 3 and theirs[job_id]["state"] == "succeeded"
    table, there = cli(capsys, "jobs", "--all")[1], local(capsys, monkeypatch, "jobs", "-a")[1]
    assert table.splitlines()[1] == there.splitlines()[1] and failing in table
    assert json.loads(cli(capsys, "jobs", "--json")[1]) == []  # none running

    # the live log, cut twice mid-stream: resumed from the last event each time, nothing lost
    # or repeated
    events, notes = asyncio.run(follow_cut(url, token, failing, cuts=2))
    assert len(notes) == 2 and all("reconnecting after event" in n for n in notes), notes
    assert "".join(e.data["text"] for e in events if e.kind == "log") == expected
    ids = [int(e.id) for e in events if e.id is not None]
    assert ids == sorted(set(ids))
    assert events[-1].kind == "end" and events[-1].data["exit_code"] == 3
    assert live_instances(emulator) == []


class _Cut(httpx.AsyncByteStream):
    def __init__(self, inner: Any, after: int) -> None:
        self.inner, self.after = inner, after

    async def __aiter__(self) -> AsyncIterator[bytes]:
        sent = 0
        async for chunk in self.inner:
            if sent + len(chunk) > self.after:
                yield chunk[: self.after - sent]
                raise httpx.ReadError("connection cut by the test")
            sent += len(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


class Cutting(httpx.AsyncBaseTransport):
    """The network, but the first ``cuts`` log streams are cut after ``after`` bytes."""

    def __init__(self, cuts: int, after: int) -> None:
        self.inner, self.cuts, self.after = httpx.AsyncHTTPTransport(), cuts, after

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path.endswith("/log/stream") and self.cuts:
            self.cuts -= 1
            return httpx.Response(
                response.status_code,
                headers=response.headers,
                stream=_Cut(response.stream, self.after),
                extensions=response.extensions,
            )
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def follow_cut(url: str, token: str, job_id: str, cuts: int) -> tuple[list[Any], list[str]]:
    notes: list[str] = []
    remote = Remote(url, SecretStr(token))
    async with ApiClient(remote, transport=Cutting(cuts, after=300)) as client:
        events = [e async for e in api.follow_log(client, job_id, on_reconnect=notes.append)]
    return events, notes


def test_ctrl_c_cancels_the_services_job_and_brings_back_what_it_wrote(
    service: tuple[str, str], tmp_path: Path, emulator: Any
) -> None:
    url, token = service
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
        env=dict(os.environ),
    )
    auth = {"Authorization": f"Bearer {token}"}
    try:
        job_id = until(
            lambda: next(iter(httpx.get(f"{url}/v1/jobs", headers=auth).json()), {}).get("job_id"),
            "the job to be submitted",
        )
        until(lambda: "written" in service_log(url, token, job_id), "the job to write its file")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "interrupted: cancelling job" in err and f"job {job_id} cancelled" in err
    assert (results / "first").read_text() == "partial\n"
    assert out == "written\n"
    view = httpx.get(f"{url}/v1/jobs/{job_id}", headers=auth).json()
    assert view["state"] == "cancelled" and view["rental"]["state"] == "released"
    assert live_instances(emulator) == []
