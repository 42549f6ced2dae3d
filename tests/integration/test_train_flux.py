"""`gpushop train flux-lora` end to end on the emulator's simulated ai-toolkit image: dataset
checks before renting, the plan, HF_TOKEN over SSH only, the LoRA downloaded and verified, the
rental released, and a lost rental resumed from the last synced checkpoint."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cli_run import cli
from gpushop.jobs.contract import ResumePlan
from gpushop.jobs.spec import Transfer
from gpushop.recipes.aitoolkit import saved_step
from gpushop.recipes.safetensors import SafetensorsError, verify_lora
from gpushop.recipes.sample_data import png, write_sample_dataset
from gpushop.service import training
from gpushop.store import Store

TOKEN = "hf_" + "t0ken" * 8


def _point_at(emu: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    monkeypatch.setenv("VASTAI_URL", emu.url)
    monkeypatch.setenv("VASTAI_API_KEY", emu.api_key)
    monkeypatch.setenv("GPUSHOP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GPUSHOP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GPUSHOP_DB_URL", f"sqlite:///{tmp_path / 'store.db'}")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("GPUSHOP_RATE_LIMIT", "false")  # the emulators here have no limits
    monkeypatch.chdir(tmp_path)
    return emu


@pytest.fixture
def env(emulator: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    return _point_at(emulator, monkeypatch, tmp_path)


def live_instances(emu: Any) -> list[dict[str, Any]]:
    return [i for i in emu.control.state()["instances"] if i.get("actual_status") != "destroyed"]


def creates(emu: Any) -> int:
    return emu.control.request_count("PUT /api/v0/asks/{id}/")


def test_a_bad_dataset_lists_every_problem_and_rents_nothing(
    env: Any, capsys: Any, tmp_path: Path
) -> None:
    data = write_sample_dataset(tmp_path / "ds", count=2)
    (data / "no_caption.png").write_bytes(png(8, 8))
    (data / "empty.jpg").write_bytes(b"")
    (data / "empty.txt").write_text("x")
    (data / "broken.png").write_bytes(png(8, 8)[:20])
    (data / "broken.txt").write_text("x")
    code, _, err = cli(capsys, "train", "flux-lora", "--dataset", str(data), "--name", "x", "--yes")
    assert code == 2
    assert "no_caption.png" in err and "empty.jpg" in err and "broken.png" in err
    assert "Traceback" not in err
    assert creates(env) == 0
    code, _, err = cli(
        capsys, "train", "flux-lora", "--dataset", str(tmp_path / "nothing"), "--name", "x"
    )
    assert code == 2 and creates(env) == 0


def test_the_gated_model_needs_hf_token_before_anything_is_rented(
    env: Any, capsys: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.delenv("HF_TOKEN")
    data = write_sample_dataset(tmp_path / "ds")
    code, _, err = cli(capsys, "train", "flux-lora", "--dataset", str(data), "--name", "x")
    assert code == 2 and "HF_TOKEN" in err
    assert creates(env) == 0


def test_train_flux_lora_from_dataset_to_lora_file(env: Any, capsys: Any, tmp_path: Path) -> None:
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
    # the plan came first, with the disk it chose and why
    disk = re.search(r"disk\s+(\d+) GB", out)
    assert disk and int(disk.group(1)) > 32, out
    assert "LoRA:" in out
    final = out_dir / "mylora.safetensors"
    info = verify_lora(final, rank=8)
    assert info.tensors
    assert list(out_dir.glob("mylora_0000001*.safetensors")), "intermediate checkpoints"
    assert (out_dir / "samples").is_dir() and any((out_dir / "samples").iterdir())
    assert "200/200" in err + out
    assert live_instances(env) == []
    # the gated model's token went over SSH only: never to the provider, never in the store
    for request in env.control.requests():
        assert TOKEN not in json.dumps(request)
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.suffix in {".db", ".log", ".yaml", ".json", ""}:
            assert TOKEN.encode() not in path.read_bytes(), path


SPEED, STEPS = 400.0, 2000  # 1.0 s a step on the emulator's RTX 3090 at 512 px: 5 s of steps


def _freeze_trainer(emu: Any, instance_id: int) -> bool:
    """SIGSTOP the simulated ai-toolkit of that instance (the control view names the host pids
    of its processes): a host that hangs, then goes offline."""
    frozen = False
    for pid in emu.control.instance(instance_id)["processes"]:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"run.py" in cmdline:
            os.kill(pid, signal.SIGSTOP)
            frozen = True
    return frozen


def _without_rsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine without rsync (ssh and scp only on PATH): transfers go over SFTP, whose
    parallel uploads finish files in any order, and a file's ctime on the instance is when its
    upload finished."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("ssh", "scp"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    monkeypatch.setenv("PATH", str(bin_dir))


def _valid_step(path: Path) -> int | None:
    try:
        return saved_step(path)
    except SafetensorsError:
        return None  # being written when the host hung


@pytest.mark.slow
@pytest.mark.parametrize("older_last", [False, True], ids=["as-planned", "older-checkpoint-last"])
def test_a_lost_rental_resumes_from_the_last_synced_checkpoint(
    make_emulator: Any, capsys: Any, tmp_path: Path, monkeypatch: Any, older_last: bool
) -> None:
    # SPEED x faster than real time, so the image pull, model download and load cost little
    # (twice: the resumed rental pulls and downloads again).
    emu = _point_at(
        make_emulator(offers=600, seed=1234, rate_limit=False, speed=SPEED),
        monkeypatch,
        tmp_path,
    )
    _without_rsync(tmp_path, monkeypatch)
    data = write_sample_dataset(tmp_path / "ds", count=3)
    out_dir = tmp_path / "lora"
    killed: list[int] = []
    newest: list[int] = []  # the step of the newest whole checkpoint on the lost host
    stop = threading.Event()

    def lose_the_host() -> None:
        # Once the host wrote two checkpoints, it hangs (the trainer is stopped: nothing changes
        # there any more, however slow this machine is), and once a sync brought its newest
        # whole checkpoint back, the host goes offline: the job must resume from that one.
        frozen: int | None = None
        remote = Path()
        while not stop.wait(0.05):
            running = [i for i in live_instances(emu) if i.get("actual_status") == "running"]
            if frozen is None and running:
                sandbox = emu.control.instance(running[0]["id"])["sandbox"]
                remote = Path(sandbox) / "workspace/gpushop/resumable/output/resumable"
                if len(list(remote.glob("resumable_*.safetensors"))) >= 2 and _freeze_trainer(
                    emu, running[0]["id"]
                ):
                    frozen = running[0]["id"]
                    steps = [_valid_step(p) for p in remote.glob("resumable_*.safetensors")]
                    newest.append(max(s for s in steps if s is not None))
            if frozen is not None:
                name = f"resumable_{newest[0]:09d}.safetensors"
                here, there = out_dir / name, remote / name
                if here.exists() and here.read_bytes() == there.read_bytes():
                    killed.append(frozen)
                    emu.control.host_offline(instance_id=frozen)
                    return

    if older_last:
        # The resume as it used to go: the older checkpoint also goes back, and lands last
        # (one file after the other, so that order is certain): the trainer takes the file
        # written last, and gpushop must say loudly that it is not the one planned.
        real_hooks = training.flux_hooks_for

        def hooks_sending_an_older_checkpoint_last(*args: Any) -> Any:
            hooks = real_hooks(*args)
            plan = hooks.resume

            def resume(job: Any, spec: Any, log: Path) -> ResumePlan:
                chosen = plan(job, spec, log)
                assert chosen is not None
                older = min(out_dir.glob("resumable_*.safetensors"))
                return replace(
                    chosen, files=[*chosen.files, Transfer(str(older), chosen.files[-1].remote)]
                )

            hooks.resume = resume
            return hooks

        monkeypatch.setattr(training, "flux_hooks_for", hooks_sending_an_older_checkpoint_last)

    thread = threading.Thread(target=lose_the_host, daemon=True)
    thread.start()
    try:
        code, out, err = cli(
            capsys,
            "train",
            "flux-lora",
            "--dataset",
            str(data),
            "--name",
            "resumable",
            "--steps",
            str(STEPS),
            "--save-every",
            "50",
            "--sync-every",
            "1s",
            "--resolution",
            "512",
            "--out",
            str(out_dir),
            "--yes",
        )
    finally:
        stop.set()
        thread.join()
    assert killed, "the test never saw a synced checkpoint"
    assert code == 0, err
    assert "(sftp)" in err and "(rsync)" not in err
    planned = newest[0]
    found = re.findall(r"Found step (\d+) in metadata, starting from there", out + err)
    if not older_last:
        # the synced folder does not go back whole (older checkpoints, samples): the trainer
        # would take whichever file landed last
        assert f"uploaded {out_dir} ->" not in err
        assert found == [str(planned)], found
    reached = re.search(r"reached step (\d+); newest synced checkpoint: step (\d+)", err)
    assert reached and int(reached.group(2)) == planned, err
    job = only_job()
    if not older_last:
        # only the newest checkpoint and the optimizer state went back, one after the other
        assert (
            f"the resume uploads optimizer.pt, resumable_{planned:09d}.safetensors only "
            f"(resuming from step {planned})"
        ) in err
        lost = int(reached.group(1)) - planned
        assert f"the job resumed from step {planned} as planned: {lost} steps lost" in err
        assert "WARNING" not in err
        assert job.details["resumed"] == [
            {
                "planned": planned,
                "reached": int(reached.group(1)),
                "found": planned,
                "lost": lost,
                "as_planned": True,
            }
        ]
    else:
        older = int(found[-1])
        assert older < planned, found
        warning = re.search(
            rf"WARNING: the job resumed from step {older}, NOT from step {planned} as planned: "
            rf"(\d+) steps lost",
            err,
        )
        assert warning and int(warning.group(1)) == int(reached.group(1)) - older, err
        assert job.details["resumed"][-1]["as_planned"] is False
    verify_lora(out_dir / "resumable.safetensors", rank=16)
    assert live_instances(emu) == []


def only_job() -> Any:
    with Store.open(os.environ["GPUSHOP_DB_URL"]) as store:
        jobs = store.list_jobs()
    assert len(jobs) == 1
    return jobs[0]


def test_train_from_the_ai_toolkit_template(env: Any, capsys: Any, tmp_path: Path) -> None:
    code, out, _ = cli(capsys, "templates", "--query", "ai toolkit", "--json")
    assert code == 0
    found = [t for t in json.loads(out) if str(t["image"]).startswith("ostris/aitoolkit")]
    assert found, out
    template = found[0]["hash_id"]
    data = write_sample_dataset(tmp_path / "ds", count=2)
    code, out, err = cli(
        capsys,
        "train",
        "flux-lora",
        "--dataset",
        str(data),
        "--name",
        "from_template",
        "--steps",
        "100",
        "--save-every",
        "50",
        "--template",
        template,
        "--out",
        str(tmp_path / "lora"),
        "--yes",
    )
    assert code == 0, err
    assert f"template {template}" in out
    creates = [r for r in env.control.requests() if r["endpoint"] == "PUT /api/v0/asks/{id}/"]
    assert creates and creates[0]["json"]["template_hash_id"] == template
    verify_lora(tmp_path / "lora" / "from_template.safetensors", rank=16)


def test_the_template_catalog_names_hashes_the_emulator_serves(env: Any, capsys: Any) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "templates.md").read_text()
    documented = set(re.findall(r"emulator: `([0-9a-f]{32})`", doc))
    assert documented, "docs/templates.md names no emulator template hash"
    _, out, _ = cli(capsys, "templates", "--json", "--limit", "200")
    served = {t["hash_id"] for t in json.loads(out)}
    assert documented <= served, documented - served
