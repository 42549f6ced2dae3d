"""The simulated `docker` on TensorDock VMs: pull (timed), run with volumes/env/workdir/GPUs,
the ostris/aitoolkit image training a LoRA with the simulated ai-toolkit, detached containers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import asyncssh
import httpx
import pytest
import yaml
from tensordock_helpers import (
    RTX4090,
    connect,
    create_on,
    new_key,
    node_with,
    run,
    ssh,
    td_client,
    wait_for,
)

from gpushop.emulator import EmulatorThread

JPEG = bytes.fromhex("ffd8ffe000104a46494600010100000100010000ffd9")
TRAIN = (
    "docker run --rm --gpus all -v /workspace:/workspace ostris/aitoolkit "
    "python run.py /workspace/job.yaml"
)


@pytest.fixture
def td(emulator: EmulatorThread) -> Iterator[httpx.Client]:
    with td_client(emulator.tensordock_url, emulator.tensordock_token) as client:
        yield client


@pytest.fixture
def vm(td: httpx.Client) -> tuple[str, int, asyncssh.SSHKey]:
    key = new_key()
    vm_id, port = create_on(td, key, node_with(td, RTX4090), RTX4090)
    wait_for(td, vm_id, "running", ip=True)
    return vm_id, port, key


def job(name: str, steps: int) -> dict[str, Any]:
    return {
        "job": "extension",
        "config": {
            "name": name,
            "process": [
                {
                    "type": "sd_trainer",
                    "training_folder": "/workspace/output",
                    "device": "cuda:0",
                    "network": {"type": "lora", "linear": 8, "linear_alpha": 8},
                    "save": {"dtype": "bf16", "save_every": 10, "max_step_saves_to_keep": 2},
                    "datasets": [
                        {
                            "folder_path": "/workspace/data",
                            "caption_ext": "txt",
                            "resolution": [512],
                        }
                    ],
                    "train": {
                        "batch_size": 1,
                        "steps": steps,
                        "lr": "1e-4",
                        "optimizer": "adamw8bit",
                        "noise_scheduler": "flowmatch",
                        "dtype": "bf16",
                        "disable_sampling": True,
                    },
                    "model": {
                        "name_or_path": "black-forest-labs/FLUX.1-schnell",
                        "is_flux": True,
                        "quantize": True,
                    },
                }
            ],
        },
    }


def upload_job(port: int, key: asyncssh.SSHKey, config: dict[str, Any]) -> None:
    async def go() -> None:
        async with await connect(port, key) as conn, conn.start_sftp_client() as sftp:
            await sftp.makedirs("/workspace/data", exist_ok=True)
            for i in range(2):
                async with sftp.open(f"/workspace/data/img{i}.jpg", "wb") as f:
                    await f.write(JPEG)
                async with sftp.open(f"/workspace/data/img{i}.txt", "w") as f:
                    await f.write(f"photo {i} of p3r5on")
            async with sftp.open("/workspace/job.yaml", "w") as f:
                await f.write(yaml.safe_dump(config))

    run(go())


def test_pull_takes_the_image_download_time(emulator: EmulatorThread, td: httpx.Client) -> None:
    emulator.control.reset(speed=200.0)
    key = new_key()
    node = node_with(td, RTX4090)
    vm_id, port = create_on(td, key, node, RTX4090)
    wait_for(td, vm_id, "running", ip=True)
    mbps = min(node["location"]["network_speed_gbps"] * 1000, 2000)
    expected = 8.0 * 8000 / mbps / 200.0  # pytorch/pytorch: 8 GB
    started = time.monotonic()
    pulled = ssh(port, key, "docker pull pytorch/pytorch")
    elapsed = time.monotonic() - started
    assert pulled.exit_status == 0
    assert elapsed >= expected * 0.9
    lines = pulled.stdout.splitlines()
    assert lines[0] == "latest: Pulling from pytorch/pytorch"
    assert sum(line.endswith(": Pull complete") for line in lines) == 9
    assert lines[-2:] == [
        "Status: Downloaded newer image for pytorch/pytorch:latest",
        "docker.io/pytorch/pytorch:latest",
    ]
    again = ssh(port, key, "docker pull pytorch/pytorch:latest; docker images")
    assert "Status: Image is up to date for pytorch/pytorch:latest" in again.stdout
    assert "pytorch/pytorch   latest" in again.stdout


def test_run_options(vm: tuple[str, int, asyncssh.SSHKey]) -> None:
    _, port, key = vm
    result = ssh(
        port,
        key,
        "export FROM_VM=vm; docker run --rm -e A=1 --env B=two -e FROM_VM -w /workspace/sub "
        "-p 8080:8080 --shm-size 8g --ipc=host -it ubuntu:22.04 "
        "sh -c 'echo $A $B $FROM_VM; pwd; test -e /app/ai-toolkit || echo no-toolkit; exit 3'",
    )
    assert result.exit_status == 3
    assert result.stdout == "1 two vm\n/workspace/sub\nno-toolkit\n"
    assert "Unable to find image 'ubuntu:22.04' locally" in result.stderr
    missing = ssh(port, key, "docker run --rm ubuntu nosuchprogram")
    assert missing.exit_status == 127
    assert 'exec: "nosuchprogram": executable file not found in $PATH' in missing.stderr
    bad = ssh(port, key, "docker run --bogus ubuntu true")
    assert bad.exit_status == 125 and "unknown flag: --bogus" in bad.stderr
    assert ssh(port, key, "docker --version").stdout.startswith("Docker version ")


def test_volumes_and_the_container_home(vm: tuple[str, int, asyncssh.SSHKey]) -> None:
    _, port, key = vm
    script = (
        "mkdir -p data && echo in > data/x && "
        "docker run --rm -v $HOME/data:/workspace/mounted -v cache:/root/.cache "
        "-v /workspace:/workspace ubuntu sh -c "
        "'cat /workspace/mounted/x; echo out > /workspace/mounted/y; touch ~/.cache/z; "
        "echo $HOME | grep -c containers' && cat data/y && "
        "docker run --rm -v cache:/root/.cache ubuntu sh -c 'ls ~/.cache'"
    )
    result = ssh(port, key, script)
    assert result.exit_status == 0, result.stderr
    assert result.stdout == "in\n1\nout\nz\n"


def test_the_aitoolkit_image_trains_a_lora(emulator: EmulatorThread, vm: Any) -> None:
    vm_id, port, key = vm
    upload_job(port, key, job("td_lora", 20))
    result = ssh(port, key, TRAIN)
    assert result.exit_status == 0, result.stderr
    assert "Saved checkpoint to" in result.stdout
    assert " - 1 completed job" in result.stdout
    listing = ssh(port, key, "ls /workspace/output/td_lora; docker ps -a -q | wc -l")
    assert "td_lora.safetensors" in listing.stdout.split()
    assert listing.stdout.split()[-1] == "0"  # --rm
    # the GPU comes with --gpus only, as with the NVIDIA runtime
    no_gpu = ssh(port, key, TRAIN.replace("--gpus all ", ""))
    assert no_gpu.exit_status == 1
    assert "Found no NVIDIA driver on your system" in no_gpu.stdout + no_gpu.stderr
    # trainer faults reach the trainer inside the container
    emulator.control.tensordock_trainer_fault(vm_id, "crash", 2)
    upload_job(port, key, job("td_crash", 20))
    crashed = ssh(port, key, TRAIN)
    assert crashed.exit_status == 1
    assert "CUDA error: unspecified launch failure" in crashed.stdout + crashed.stderr


def test_detached_containers_and_vm_stop(
    emulator: EmulatorThread, td: httpx.Client, vm: Any
) -> None:
    vm_id, port, key = vm
    started = ssh(port, key, "docker run -d --name sleeper ubuntu sleep 300")
    assert started.exit_status == 0 and len(started.stdout.strip()) == 64
    listing = ssh(port, key, "docker ps")
    assert "sleeper" in listing.stdout and "Up " in listing.stdout
    clash = ssh(port, key, "docker run -d --name sleeper ubuntu true")
    assert clash.exit_status == 125 and "is already in use" in clash.stderr
    assert ssh(port, key, "docker stop sleeper").stdout == "sleeper\n"
    assert "Exited (" in ssh(port, key, "docker ps -a").stdout
    assert ssh(port, key, "docker rm sleeper; docker ps -a -q").stdout == "sleeper\n"
    # a container outlives the docker command, not the VM
    ssh(port, key, "docker run -d --name late ubuntu sleep 300")
    groups = emulator.control.tensordock_vm(vm_id)
    assert groups["ssh_listening"]
    td.post(f"/instances/{vm_id}/stop")
    wait_for(td, vm_id, "stopped")
    td.post(f"/instances/{vm_id}/start")
    wait_for(td, vm_id, "running")
    assert "Exited (" in ssh(port, key, "docker ps -a").stdout


def test_cpu_only_vm_has_no_gpu_for_docker(td: httpx.Client) -> None:
    key = new_key()
    node = next(
        n
        for n in td.get("/hostnodes").json()["data"]["hostnodes"]
        if not n["available_resources"]["gpus"]
    )
    vm_id, port = create_on(td, key, node, None)
    wait_for(td, vm_id, "running", ip=True)
    result = ssh(port, key, "nvidia-smi; docker run --rm --gpus all ubuntu true")
    assert result.exit_status == 125
    assert "nvidia-smi: not found" in result.stderr
    assert 'could not select device driver "" with capabilities: [[gpu]]' in result.stderr
