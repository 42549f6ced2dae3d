"""Jobs over HTTP on a real `gpushop serve` and the emulator: a FLUX LoRA trained from an
uploaded dataset and followed by a client that disconnects and resumes its SSE stream, the LoRA
downloaded and verified by its sha256, the rental released and the token nowhere in the clear;
a bad dataset refused with every bad file listed and nothing rented; a command run on uploaded
inputs, its artifacts; a cancel; the upload limit."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from api import sse
from api.conftest import token
from gpushop.recipes.safetensors import verify_lora
from gpushop.recipes.sample_data import png, write_sample_dataset
from gpushop.store.secret_box import keygen

HF = "hf_" + "jobt0ken" * 5


@pytest.fixture
def jobs_env(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {"GPUSHOP_SECRET_KEY": keygen(), "GPUSHOP_MAX_UPLOAD_BYTES": str(2_000_000)}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return {**environment, **values}


def tarball(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return buffer.getvalue()


def live_instances(emu: Any) -> list[dict[str, Any]]:
    return [i for i in emu.control.state()["instances"] if i.get("actual_status") != "destroyed"]


def creates(emu: Any) -> int:
    return emu.control.request_count("PUT /api/v0/asks/{id}/")


def wait_for(check: Callable[[], Any], timeout: float = 120.0) -> Any:
    """A safety net for a loaded machine, not an expected duration."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError("timed out")


def files_holding(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_a_lora_trained_through_the_api_streamed_resumed_and_downloaded(
    jobs_env: dict[str, str], serve: Any, capsys: Any, tmp_path: Path, emulator: Any
) -> None:
    url, proc = serve(jobs_env)
    auth = token(capsys, "alice")
    data = write_sample_dataset(tmp_path / "ds", count=4)
    options = {
        "name": "mylora",
        "trigger": "sks",
        "steps": 200,
        "save_every": 50,
        "rank": 8,
        "secrets": {"HF_TOKEN": HF},
    }
    answer = httpx.post(
        f"{url}/v1/train/flux-lora",
        headers=auth,
        data={"options": json.dumps(options)},
        files={"dataset": ("ds.tar.gz", tarball(data), "application/gzip")},
        timeout=60,
    )
    if answer.status_code != 202:
        proc.terminate()
        raise AssertionError(answer.text + proc.communicate(timeout=30)[1][-3000:])
    job = answer.json()
    assert answer.headers["location"] == f"/v1/jobs/{job['job_id']}"
    assert job["plan"]["gpu_name"] and job["plan"]["estimated_cost_usd"] > 0
    assert any("LoRA" in line for line in job["plan"]["lines"])

    # a client follows the stream, drops it after a few events, and comes back
    stream = f"{url}/v1/jobs/{job['job_id']}/log/stream"
    seen: list[sse.Event] = []
    with httpx.stream("GET", stream, headers=auth, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for event in sse.read(response):
            seen.append(event)
            if len([e for e in seen if e.kind == "log"]) >= 3:
                break
    last = seen[-1].id
    assert last is not None
    with httpx.stream(
        "GET", stream, headers={**auth, "Last-Event-ID": last}, timeout=120
    ) as response:
        for event in sse.read(response):
            seen.append(event)
            if event.kind == "end":
                break
    assert seen[-1].kind == "end" and seen[-1].data["state"] == "succeeded", seen[-1]
    ids = [int(e.id) for e in seen if e.id is not None]
    assert ids == sorted(set(ids)), "an event came twice or out of order"
    streamed = "".join(e.data["text"] for e in seen if e.kind == "log")
    text = httpx.get(f"{url}/v1/jobs/{job['job_id']}/log", headers=auth).text
    assert streamed == text and "200/200" in text
    notes = " ".join(e.data["text"] for e in seen if e.kind == "note")
    assert "rented" in notes and "uploaded" in notes
    assert str(tmp_path) not in notes, "the service's own folders are not its users' business"
    assert "jobs/" in notes  # said relative to them

    # the text from an offset, as `logs` reads it
    part = httpx.get(f"{url}/v1/jobs/{job['job_id']}/log?offset=10&limit=20", headers=auth)
    assert part.content == text.encode()[10:30] and part.headers["x-next-offset"] == "30"

    # the LoRA, listed with its sha256 and downloaded whole
    found = httpx.get(f"{url}/v1/jobs/{job['job_id']}/artifacts", headers=auth).json()
    final = next(a for a in found if a["path"] == "mylora/mylora.safetensors")
    got = httpx.get(f"{url}/v1/jobs/{job['job_id']}/artifacts/{final['path']}", headers=auth)
    assert got.status_code == 200
    assert hashlib.sha256(got.content).hexdigest() == final["sha256"]
    assert got.headers["x-checksum-sha256"] == final["sha256"]
    (tmp_path / "mylora.safetensors").write_bytes(got.content)
    assert verify_lora(tmp_path / "mylora.safetensors", rank=8).tensors
    outside = httpx.get(f"{url}/v1/jobs/{job['job_id']}/artifacts/..%2F..%2Fstore.db", headers=auth)
    assert outside.status_code == 404

    view = httpx.get(f"{url}/v1/jobs/{job['job_id']}", headers=auth).json()
    assert view["state"] == "succeeded" and view["cost_usd"] > 0
    assert view["rental"]["state"] == "released" and "run" in view["timings"]
    assert live_instances(emulator) == []
    # another user sees none of it
    bob = token(capsys, "bob")
    assert httpx.get(f"{url}/v1/jobs/{job['job_id']}", headers=bob).status_code == 404
    assert httpx.get(f"{url}/v1/jobs", headers=bob).json() == []
    # the token: sent to the instance, kept only encrypted, never in a log or the store
    proc.terminate()
    _, err = proc.communicate(timeout=30)
    assert HF not in err and HF not in text
    assert files_holding(tmp_path / "data", HF.encode()) == []
    assert HF.encode() not in (tmp_path / "store.db").read_bytes()


def test_a_bad_dataset_is_a_422_listing_every_bad_file_and_nothing_is_rented(
    jobs_env: dict[str, str], serve: Any, capsys: Any, tmp_path: Path, emulator: Any
) -> None:
    url, _ = serve(jobs_env)
    auth = token(capsys, "alice")
    data = write_sample_dataset(tmp_path / "ds", count=2)
    (data / "no_caption.png").write_bytes(png(8, 8))
    (data / "empty.jpg").write_bytes(b"")
    (data / "broken.png").write_bytes(png(8, 8)[:20])
    (data / "broken.txt").write_text("x")
    answer = httpx.post(
        f"{url}/v1/train/flux-lora",
        headers=auth,
        data={"options": json.dumps({"name": "x", "secrets": {"HF_TOKEN": HF}})},
        files={"dataset": ("ds.tar.gz", tarball(data), "application/gzip")},
    )
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert body["code"] == "bad_dataset"
    listed = " ".join(body["problems"])
    assert all(name in listed for name in ("no_caption.png", "empty.jpg", "broken.png"))
    assert str(tmp_path) not in answer.text  # no server path
    # a gated model without its token; options that are not JSON; no archive at all
    no_token = httpx.post(
        f"{url}/v1/train/flux-lora",
        headers=auth,
        data={"options": json.dumps({"name": "x"})},
        files={"dataset": ("ds.tar.gz", tarball(write_sample_dataset(tmp_path / "ok")), "x")},
    )
    assert no_token.status_code == 400 and "HF_TOKEN" in no_token.json()["message"]
    bad_json = httpx.post(
        f"{url}/v1/train/flux-lora",
        headers=auth,
        data={"options": "{"},
        files={"dataset": ("ds.tar.gz", b"x", "x")},
    )
    assert bad_json.status_code == 422 and bad_json.json()["field"].startswith("options")
    not_archive = httpx.post(
        f"{url}/v1/train/flux-lora",
        headers=auth,
        data={"options": json.dumps({"name": "x", "secrets": {"HF_TOKEN": HF}})},
        files={"dataset": ("ds.tar.gz", b"plain text", "x")},
    )
    assert not_archive.status_code == 422 and not_archive.json()["code"] == "bad_archive"
    assert creates(emulator) == 0
    assert httpx.get(f"{url}/v1/jobs?ended=true", headers=auth).json() == []


def test_a_command_runs_on_uploaded_inputs_and_its_outputs_come_back(
    jobs_env: dict[str, str], serve: Any, capsys: Any, tmp_path: Path, emulator: Any
) -> None:
    url, _ = serve(jobs_env)
    auth = token(capsys, "alice")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("data/hello.txt", "hello from the inputs\n")
    spec = {
        "cmd": "mkdir -p out && tr a-z A-Z < data/hello.txt > out/shout.txt && echo made it",
        "downloads": ["out"],
        "sync_every": "off",
    }
    answer = httpx.post(
        f"{url}/v1/jobs",
        headers=auth,
        data={"spec": json.dumps(spec)},
        files={"inputs": ("in.zip", buffer.getvalue(), "application/zip")},
        timeout=60,
    )
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["job_id"]
    done = wait_for(
        lambda: (
            (j := httpx.get(f"{url}/v1/jobs/{job_id}", headers=auth).json())["state"]
            in ("succeeded", "failed")
            and j
        )
    )
    assert done["state"] == "succeeded", done
    assert done["exit_code"] == 0
    assert httpx.get(f"{url}/v1/jobs/{job_id}/log", headers=auth).text == "made it\n"
    [artifact] = httpx.get(f"{url}/v1/jobs/{job_id}/artifacts", headers=auth).json()
    assert artifact["path"] == "out/shout.txt" and artifact["size"] == 22
    body = httpx.get(f"{url}/v1/jobs/{job_id}/artifacts/out/shout.txt", headers=auth)
    assert body.text == "HELLO FROM THE INPUTS\n"
    rows = httpx.get(f"{url}/v1/jobs?ended=true", headers=auth).json()
    assert [r["job_id"] for r in rows] == [job_id] and rows[0]["state"] == "succeeded"
    assert live_instances(emulator) == []


def test_cancel_stops_the_job_and_releases_its_rental_and_uploads_have_a_limit(
    jobs_env: dict[str, str], serve: Any, capsys: Any, emulator: Any
) -> None:
    url, _ = serve(jobs_env)
    auth = token(capsys, "alice")
    spec = {"cmd": "echo started; sleep 600", "sync_every": "off"}
    answer = httpx.post(f"{url}/v1/jobs", headers=auth, data={"spec": json.dumps(spec)})
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["job_id"]
    wait_for(lambda: "started" in httpx.get(f"{url}/v1/jobs/{job_id}/log", headers=auth).text)
    assert httpx.post(f"{url}/v1/jobs/{job_id}/cancel", headers=auth).status_code == 202
    done = wait_for(
        lambda: (
            (j := httpx.get(f"{url}/v1/jobs/{job_id}", headers=auth).json())["state"] == "cancelled"
            and j
        ),
        timeout=60,
    )
    assert done["rental"]["state"] == "released"
    assert live_instances(emulator) == []
    # another user's cancel: not found, and nothing changes
    assert (
        httpx.post(f"{url}/v1/jobs/{job_id}/cancel", headers=token(capsys, "eve")).status_code
        == 404
    )

    too_big = httpx.post(
        f"{url}/v1/jobs",
        headers=auth,
        data={"spec": json.dumps(spec)},
        files={"inputs": ("in.tar", b"\0" * 2_100_000, "application/x-tar")},
    )
    assert too_big.status_code == 413 and too_big.json()["code"] == "too_large"
    bad = httpx.post(
        f"{url}/v1/jobs", headers=auth, data={"spec": json.dumps({**spec, "secrets": {"1X": "y"}})}
    )
    assert bad.status_code == 400 and "secrets.1X" in bad.json()["message"]
    assert creates(emulator) == 1
