"""The `ostris/aitoolkit` image: rent it, upload a dataset over SFTP, train over SSH with
`cd /app/ai-toolkit && python run.py CONFIG`, and check what a user of ai-toolkit would see."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
import struct
import time
from typing import Any

import asyncssh
import httpx
import pytest
import yaml
from emulator_ssh import connect, create, new_key, register, run, ssh_run, wait_status

from gpushop.emulator import EmulatorThread
from waiting import until_async

# a 16x16 JPEG and PNG header: the dataset's images only need the right names and to be files
JPEG = bytes.fromhex("ffd8ffe000104a46494600010100000100010000ffd9")
FAST_4090 = {"gpu_name": {"eq": "RTX 4090"}, "num_gpus": {"eq": 1}, "inet_down": {"gte": 500}}
SIXTEEN_GB = {"gpu_ram": {"gte": 15000, "lte": 17000}, "num_gpus": {"eq": 1}}
TRAIN = "cd /app/ai-toolkit && python run.py /workspace/job.yaml"
PROGRESS = re.compile(
    r"^(?P<name>\w+): +(?P<pct>\d+)%\|[# 0-9]{10}\| (?P<step>\d+)/(?P<total>\d+) "
    r"\[\d\d:\d\d<\d\d:\d\d, +[\d.]+(?:it/s|s/it), lr: 1\.0e-04 loss: \d\.\d{3}e[-+]\d\d\]$"
)
ITEM = {"F16": 2, "BF16": 2, "F32": 4}


@pytest.fixture
def instant(emulator: EmulatorThread) -> EmulatorThread:
    emulator.control.reset(provision_delay_s=0.0, loading_delay_s=0.0)
    return emulator


@pytest.fixture
def key(client: httpx.Client) -> asyncssh.SSHKey:
    k = new_key()
    register(client, k)
    return k


def rent(client: httpx.Client, query: dict[str, Any]) -> tuple[int, int]:
    q = {"rentable": {"eq": True}, "order": [["dph_total", "asc"]], "limit": 1, **query}
    offer = client.post("/api/v0/bundles/", json=q).json()["offers"][0]
    instance_id = create(client, offer["id"], image="ostris/aitoolkit:latest", disk=64)
    return instance_id, int(wait_status(client, instance_id, "running")["ssh_port"])


def job(name: str, steps: int, **sections: dict[str, Any]) -> dict[str, Any]:
    process: dict[str, Any] = {
        "type": "sd_trainer",
        "training_folder": "/workspace/output",
        "device": "cuda:0",
        "network": {"type": "lora", "linear": 8, "linear_alpha": 8},
        "save": {"dtype": "bf16", "save_every": 25, "max_step_saves_to_keep": 2},
        "datasets": [{"folder_path": "/workspace/data", "caption_ext": "txt", "resolution": [512]}],
        "train": {
            "batch_size": 1,
            "steps": steps,
            "lr": "1e-4",
            "optimizer": "adamw8bit",
            "noise_scheduler": "flowmatch",
            "dtype": "bf16",
        },
        "model": {
            "name_or_path": "black-forest-labs/FLUX.1-schnell",
            "is_flux": True,
            "quantize": True,
        },
        "sample": {"sampler": "flowmatch", "sample_every": 50, "prompts": ["a p3r5on", "a cat"]},
    }
    for section, values in sections.items():
        process[section] = {**process.get(section, {}), **values}
    return {"job": "extension", "config": {"name": name, "process": [process]}}


def upload(port: int, key: asyncssh.SSHKey, config: dict[str, Any], images: int = 3) -> None:
    """A tiny dataset (image + same-named caption) and the job config, over SFTP."""

    async def go() -> None:
        async with await connect(port, key) as conn, conn.start_sftp_client() as sftp:
            await sftp.makedirs("/workspace/data", exist_ok=True)
            for i in range(images):
                async with sftp.open(f"/workspace/data/img{i}.jpg", "wb") as f:
                    await f.write(JPEG)
                async with sftp.open(f"/workspace/data/img{i}.txt", "w") as f:
                    await f.write(f"photo {i} of p3r5on")
            async with sftp.open("/workspace/job.yaml", "w") as f:
                await f.write(yaml.safe_dump(config))

    run(go())


def fetch(port: int, key: asyncssh.SSHKey, remote: str) -> dict[str, bytes]:
    """Every file under `remote` (one level, plus samples/), by relative name."""

    async def go() -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        async with await connect(port, key) as conn, conn.start_sftp_client() as sftp:
            for folder, prefix in ((remote, ""), (f"{remote}/samples", "samples/")):
                if not await sftp.isdir(folder):
                    continue
                for name in await sftp.listdir(folder):
                    path = f"{folder}/{name}"
                    if name not in (".", "..") and await sftp.isfile(path):
                        async with sftp.open(path, "rb") as f:
                            out[prefix + name] = await f.read()
        return out

    return run(go())


def parse_safetensors(data: bytes) -> dict[str, Any]:
    """Checks the format without the emulator's code: header length, JSON, offsets, sizes."""
    (length,) = struct.unpack("<Q", data[:8])
    assert length % 8 == 0
    header: dict[str, Any] = json.loads(data[8 : 8 + length])
    body = data[8 + length :]
    spans = []
    for name, tensor in header.items():
        if name == "__metadata__":
            continue
        start, stop = tensor["data_offsets"]
        assert stop - start == math.prod(tensor["shape"]) * ITEM[tensor["dtype"]]
        spans.append((start, stop))
    spans.sort()
    assert spans[0][0] == 0 and spans[-1][1] == len(body)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    assert all(isinstance(v, str) for v in header["__metadata__"].values())
    return header


async def dropped(conn: asyncssh.SSHClientConnection, cut: asyncssh.SSHCompletedProcess) -> None:
    """The command ended without an exit status (the connection went away under it), and the
    connection is dead."""
    assert cut.exit_status is None and cut.exit_signal is None
    with pytest.raises((asyncssh.Error, OSError)):
        await conn.run("true")


def steps_of(output: str) -> list[int]:
    return [int(m["step"]) for line in output.splitlines() if (m := PROGRESS.match(line))]


def test_training_writes_valid_checkpoints_pruned_and_samples(
    instant: EmulatorThread, client: httpx.Client, key: asyncssh.SSHKey
) -> None:
    _, port = rent(client, FAST_4090)
    upload(port, key, job("lora_a", 120))
    started = time.monotonic()
    result = ssh_run(port, key, TRAIN, check=False)
    assert result.exit_status == 0, result.stdout + result.stderr
    assert time.monotonic() - started < 10
    out = result.stdout
    assert out.startswith("Running 1 job\n")
    assert "Downloading black-forest-labs/FLUX.1-schnell" in out  # first run: the model is fetched
    assert "lora_a:   0%|          | 0/120 [00:00<?, ?it/s]\n" in out
    assert steps_of(out) == list(range(1, 121))
    assert "Saved checkpoint to /workspace/output/lora_a/lora_a_000000100.safetensors" in out
    assert out.rstrip().endswith(
        "Result:\n - 1 completed job\n========================================"
    )

    files = fetch(port, key, "/workspace/output/lora_a")
    checkpoints = sorted(n for n in files if n.endswith(".safetensors"))
    # saves at 25, 50, 75, 100, pruned to the 2 newest, and the final LoRA
    assert checkpoints == [
        "lora_a.safetensors",
        "lora_a_000000075.safetensors",
        "lora_a_000000100.safetensors",
    ]
    for name in checkpoints:
        header = parse_safetensors(files[name])
        meta = header["__metadata__"]
        assert meta["name"] == "lora_a"
        step = json.loads(meta["training_info"])["step"]
        assert step == (120 if name == "lora_a.safetensors" else int(name[-21:-12]))
        shapes = [t["shape"] for k, t in header.items() if k != "__metadata__"]
        assert [8, 3072] in shapes and [3072, 8] in shapes  # rank from network.linear
        assert {t["dtype"] for k, t in header.items() if k != "__metadata__"} == {"BF16"}
    assert yaml.safe_load(files["config.yaml"])["config"]["name"] == "lora_a"
    assert files["optimizer.pt"].startswith(b"PK")  # torch.save's zip layout
    samples = sorted(n for n in files if n.startswith("samples/"))
    assert len(samples) == 2 * 4  # baseline, 50, 100 and the end, 2 prompts each
    assert all(re.fullmatch(r"samples/\d+__\d{9}_[01]\.jpg", n) for n in samples)
    assert {n[-15:-6] for n in samples} == {"000000000", "000000050", "000000100", "000000120"}
    assert all(files[n].startswith(b"\xff\xd8") and files[n].endswith(b"\xff\xd9") for n in samples)

    # float16 and float32 saves, and a second run loads the model from the HF cache
    upload(
        port, key, job("lora_b", 10, save={"dtype": "float16"}, train={"disable_sampling": True})
    )
    again = ssh_run(port, key, TRAIN, check=False)
    assert again.exit_status == 0 and "Downloading" not in again.stdout
    header = parse_safetensors(fetch(port, key, "/workspace/output/lora_b")["lora_b.safetensors"])
    assert {t["dtype"] for k, t in header.items() if k != "__metadata__"} == {"F16"}


def test_a_crash_then_a_resume_from_the_last_checkpoint(
    instant: EmulatorThread, client: httpx.Client, key: asyncssh.SSHKey
) -> None:
    instance_id, port = rent(client, FAST_4090)
    upload(port, key, job("lora_r", 100, train={"disable_sampling": True}))
    armed = instant.control.trainer_fault(instance_id, "crash", at_step=60)
    assert armed == {"instance_id": instance_id, "fail": "crash", "at_step": 60}
    crashed = ssh_run(port, key, TRAIN, check=False)
    assert crashed.exit_status == 1
    assert max(steps_of(crashed.stdout)) == 59
    assert "Error running job: CUDA error: unspecified launch failure" in crashed.stdout
    assert crashed.stderr.startswith("Traceback (most recent call last):")
    assert "torch.AcceleratorError: CUDA error: unspecified launch failure" in crashed.stderr

    resumed = ssh_run(port, key, TRAIN, check=False)  # the fault fired once: this one runs
    assert resumed.exit_status == 0, resumed.stdout + resumed.stderr
    latest = "/workspace/output/lora_r/lora_r_000000050.safetensors"
    assert f"Loading from {latest}" in resumed.stdout
    assert "Found step 50 in metadata, starting from there" in resumed.stdout
    assert "lora_r:  50%|#####     | 50/100 [00:00<?, ?it/s]\n" in resumed.stdout
    assert steps_of(resumed.stdout) == list(range(51, 101))  # continues at 51, not 1
    final = fetch(port, key, "/workspace/output/lora_r")["lora_r.safetensors"]
    info = json.loads(parse_safetensors(final)["__metadata__"]["training_info"])
    assert info == {"step": 100, "epoch": 0}


def test_gated_model_needs_a_token_that_is_never_printed(
    instant: EmulatorThread, client: httpx.Client, key: asyncssh.SSHKey
) -> None:
    _, port = rent(client, FAST_4090)
    dev = {"name_or_path": "black-forest-labs/FLUX.1-dev"}
    upload(port, key, job("lora_g", 5, model=dev, train={"disable_sampling": True}))
    refused = ssh_run(port, key, TRAIN, check=False)
    assert refused.exit_status == 1
    assert "Error running job: 401 Client Error." in refused.stdout
    assert (
        "Cannot access gated repo for url https://huggingface.co/black-forest-labs/FLUX.1-dev/"
        in refused.stdout
    )
    assert "huggingface_hub.errors.GatedRepoError: 401 Client Error." in refused.stderr
    assert steps_of(refused.stdout) == []

    token = "hf_" + "x" * 34
    ssh_run(port, key, f"echo HF_TOKEN={token} > /app/ai-toolkit/.env")  # as the README says
    allowed = ssh_run(port, key, TRAIN, check=False)
    assert allowed.exit_status == 0, allowed.stdout + allowed.stderr
    assert token not in allowed.stdout + allowed.stderr
    # a token from the environment works too; a malformed one is refused
    ssh_run(port, key, "rm /app/ai-toolkit/.env /workspace/output/lora_g/*.safetensors")
    bad = ssh_run(port, key, TRAIN.replace("python", "HF_TOKEN=nonsense python"), check=False)
    assert bad.exit_status == 1 and "Invalid credentials in Authorization header" in bad.stdout


def test_out_of_memory_on_a_16_gb_gpu(
    instant: EmulatorThread, client: httpx.Client, key: asyncssh.SSHKey
) -> None:
    _, port = rent(client, SIXTEEN_GB)
    upload(port, key, job("lora_o", 50))
    result = ssh_run(port, key, TRAIN, check=False)
    assert result.exit_status == 1
    assert "Error running job: CUDA out of memory. Tried to allocate" in result.stdout
    match = re.search(
        r"torch\.OutOfMemoryError: CUDA out of memory\. Tried to allocate [\d.]+ GiB\. "
        r"GPU 0 has a total capacity of (?P<total>[\d.]+) GiB",
        result.stderr,
    )
    assert match is not None and 15.0 < float(match["total"]) < 16.6
    assert steps_of(result.stdout) == []


def test_oom_fault_and_config_errors(
    instant: EmulatorThread, client: httpx.Client, key: asyncssh.SSHKey
) -> None:
    instance_id, port = rent(client, FAST_4090)
    upload(port, key, job("lora_m", 40, train={"disable_sampling": True}))
    instant.control.trainer_fault(instance_id, "oom", at_step=10)
    result = ssh_run(port, key, TRAIN, check=False)
    assert result.exit_status == 1 and max(steps_of(result.stdout)) == 9
    assert "# OOM during training step, skipping batch 3/3 #" in result.stdout
    assert "torch.OutOfMemoryError: CUDA out of memory." in result.stderr
    assert "RuntimeError: OOM during training step 3 times in a row, aborting training" in (
        result.stderr
    )

    broken = job("lora_m", 40)
    del broken["config"]["process"][0]["train"]["lr"]
    upload(port, key, broken)
    missing = ssh_run(port, key, TRAIN, check=False)
    assert missing.exit_status == 1
    assert "Error running job: config.process[0].train.lr is required" in missing.stdout
    ssh_run(port, key, "rm /workspace/data/img1.txt")
    upload(port, key, job("lora_m", 40), images=0)
    no_caption = ssh_run(port, key, TRAIN, check=False)
    assert no_caption.exit_status == 1 and "have no .txt caption" in no_caption.stdout
    not_extension = ssh_run(
        port,
        key,
        "cd /app/ai-toolkit && echo 'job: train' > /workspace/x.yaml && "
        "python run.py /workspace/x.yaml",
        check=False,
    )
    assert not_extension.exit_status == 1
    assert "config file must have a config section" in not_extension.stdout


def test_ssh_drop_fault_drops_connections_while_training_goes_on(
    instant: EmulatorThread, client: httpx.Client, key: asyncssh.SSHKey
) -> None:
    instance_id, port = rent(client, FAST_4090)
    upload(port, key, job("lora_d", 400, train={"disable_sampling": True}))
    instant.control.trainer_fault(instance_id, "ssh_drop", at_step=30)

    async def go() -> str:
        async with await connect(port, key) as watcher:
            # the trainer runs detached (as users do with nohup/tmux), its log in /workspace
            await watcher.run(f"nohup sh -c '{TRAIN}' > /workspace/train.log 2>&1 < /dev/null &")
            cut = await asyncio.wait_for(watcher.run("sleep infinity"), 10)
            await dropped(watcher, cut)
        async with await connect(port, key) as again:  # new connections are accepted
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                log = (await again.run("cat /workspace/train.log")).stdout
                assert isinstance(log, str)
                if "Result:" in log:
                    return log
                await asyncio.sleep(0.1)
        raise AssertionError("training did not finish")

    log = run(go())
    assert steps_of(log)[-1] == 400 and " - 1 completed job" in log
    assert "lora_d.safetensors" in fetch(port, key, "/workspace/output/lora_d")


def test_drop_ssh_now(instant: EmulatorThread, client: httpx.Client, key: asyncssh.SSHKey) -> None:
    instance_id, port = rent(client, FAST_4090)

    async def go() -> int:
        async with await connect(port, key) as conn:
            pending = asyncio.ensure_future(conn.run("exec sleep 12345"))

            async def sleeping() -> bool:  # the session's command runs: then drop it
                found = await conn.run("pgrep -f 'sleep 12345'", check=False)
                return found.exit_status == 0

            await until_async(sleeping, "the session's command to run")
            count = await asyncio.to_thread(instant.control.drop_ssh, instance_id)
            await dropped(conn, await asyncio.wait_for(pending, 5))
            return count

    assert run(go()) == 1
    assert ssh_run(port, key, "echo back").stdout == "back\n"
    assert instant.control.drop_ssh(instance_id) == 0
