"""Two replicas on one PostgreSQL: the replica supervising a FLUX LoRA training is killed
(kill -9) mid-training; the other takes the job over when its lease lapses, follows the log on
from where the store's copy ends (nothing lost, nothing twice), downloads the LoRA, releases the
rental and tells `job.succeeded`. A replica that shuts down cleanly hands its job off at once."""

from __future__ import annotations

import json
import os
import re
import signal
from typing import Any

import httpx
import pytest

from gpushop.recipes.sample_data import write_sample_dataset
from gpushop.store.secret_box import keygen
from waiting import until

from . import sse
from .conftest import token
from .test_jobs_api import HF, live_instances, tarball

LEASE_S = 2.0
STEPS = 200


@pytest.fixture
def store_kind() -> str:
    return "postgresql"


def _submit(url: str, auth: dict[str, str], tmp_path: Any) -> str:
    data = write_sample_dataset(tmp_path / "ds", count=4)
    options = {
        "name": "takeover",
        "steps": STEPS,
        "save_every": 50,
        "rank": 4,
        "secrets": {"HF_TOKEN": HF},
        "sync_every": "off",
    }
    answer = httpx.post(
        f"{url}/v1/train/flux-lora",
        headers=auth,
        data={"options": json.dumps(options)},
        files={"dataset": ("ds.tar.gz", tarball(data), "application/gzip")},
        timeout=60,
    )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["job_id"])


def _notes(url: str, auth: dict[str, str], job_id: str) -> list[str]:
    with httpx.stream("GET", f"{url}/v1/jobs/{job_id}/log/stream", headers=auth) as response:
        return [e.data["text"] for e in sse.read(response) if e.kind == "note"]


def _steps(text: str) -> list[int]:
    return [int(n) for n in re.findall(rf"\| (\d+)/{STEPS} \[", text)]


@pytest.mark.slow  # two replicas, a kill -9 mid-training, a lease to lapse
def test_a_job_whose_replica_is_killed_is_finished_by_the_other(
    serve: Any, environment: dict[str, str], emulator: Any, capsys: Any, tmp_path: Any
) -> None:
    emulator.control.reset(speed=100.0)  # training takes several seconds
    env = {
        **environment,
        "GPUSHOP_SECRET_KEY": keygen(),
        "GPUSHOP_LEASE_SECONDS": str(LEASE_S),
    }
    url_a, proc_a = serve(env)
    url_b, _ = serve(env)
    auth = token(capsys, "alice")
    job_id = _submit(url_a, auth, tmp_path)
    log = f"{url_b}/v1/jobs/{job_id}/log"

    # mid-training, as the other replica sees it through the store
    until(lambda: _steps(httpx.get(log, headers=auth).text), "training under way")
    os.kill(proc_a.pid, signal.SIGKILL)
    proc_a.wait(10)
    reached = max(_steps(httpx.get(log, headers=auth).text))
    assert reached < STEPS, "the job ended before the kill: nothing to take over"

    done = until(
        lambda: (
            (j := httpx.get(f"{url_b}/v1/jobs/{job_id}", headers=auth).json())["state"]
            in ("succeeded", "failed", "cancelled")
            and j
        ),
        "the other replica to finish the job",
        timeout=120,
    )
    assert done["state"] == "succeeded", done
    assert done["rental"]["state"] == "released" and live_instances(emulator) == []
    text = httpx.get(log, headers=auth).text
    notes = _notes(url_b, auth, job_id)
    assert any("taken over by" in n for n in notes), notes
    steps = _steps(text)
    assert steps == sorted(steps) and steps[-1] == STEPS, "the log went back or stopped"
    assert text.count(f"| {STEPS}/{STEPS} [") == 1
    artifacts = httpx.get(f"{url_b}/v1/jobs/{job_id}/artifacts", headers=auth).json()
    assert any(a["path"] == "takeover/takeover.safetensors" for a in artifacts)
    events = httpx.get(
        f"{url_b}/v1/events", params={"subject": f"job:{job_id}"}, headers=auth
    ).json()
    types = [e["type"] for e in events["events"]]
    assert types.count("job.succeeded") == 1 and "job.failed" not in types, types


def test_a_replica_that_shuts_down_hands_its_job_off_at_once(
    serve: Any, environment: dict[str, str], emulator: Any, capsys: Any
) -> None:
    # real time on the instance (the job's sleep is not sped up), quick provisioning
    emulator.control.reset(speed=1.0, provision_delay_s=0.3, loading_delay_s=0.3)
    env = {**environment, "GPUSHOP_SECRET_KEY": keygen(), "GPUSHOP_LEASE_SECONDS": "60"}
    url_a, proc_a = serve(env)
    url_b, _ = serve(env)
    auth = token(capsys, "alice")
    spec = {"cmd": "echo one; sleep 3; echo two", "sync_every": "off"}
    answer = httpx.post(f"{url_a}/v1/jobs", headers=auth, data={"spec": json.dumps(spec)})
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["job_id"]
    log = f"{url_b}/v1/jobs/{job_id}/log"
    until(lambda: "one" in httpx.get(log, headers=auth).text, "the job to start")
    proc_a.terminate()  # SIGTERM: a rolling restart
    proc_a.wait(30)
    # the job is not cancelled, its lease (60 s) is given up: the other replica goes on at once
    view = httpx.get(f"{url_b}/v1/jobs/{job_id}", headers=auth).json()
    assert view["state"] == "running" and live_instances(emulator), view
    done = until(
        lambda: (
            (j := httpx.get(f"{url_b}/v1/jobs/{job_id}", headers=auth).json())["state"]
            == "succeeded"
            and j
        ),
        "the other replica to finish it (a loaded machine aside, well within one lease)",
        timeout=55,
    )
    assert httpx.get(log, headers=auth).text == "one\ntwo\n"
    assert done["rental"]["state"] == "released" and live_instances(emulator) == []
