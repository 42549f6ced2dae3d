"""The machines behind TensorDock VMs: a sandbox, a real SSH endpoint and cloud-init per VM.

It reuses the Vast side's machinery (sandbox.py, sshd.py, nvidia_smi.py): a VM that has booted
and whose host is reachable gets its sandbox (`<tmp>/tensordock-emulator-XXXX/vm-<id>/`, its own
PID 1 and namespaces, HOME /home/user), its simulated nvidia-smi (the VM's GPUs; none on a
CPU-only VM), `python`, a simulated `docker` (docker_shim.py), `sudo` and `cloud-init`, and an SSH
server on 127.0.0.1:<the external port forwarded to 22>, for the user `user` and the key given at
create. cloud-init (write_files, runcmd) runs once, at first boot, inside (cloud_init.py). Any
other status (stopping, stopped, released, host offline) ends the VM's processes and closes its
server; delete also removes the sandbox. `reconcile()` runs after every API call and from a
50 ms tick, like hosts.py does for Vast instances.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

from gpushop.emulator import image_files, images, inside_files, isolation, nvidia_smi
from gpushop.emulator.sandbox import Sandbox, SandboxError
from gpushop.emulator.sandbox_files import CONTAINERS_SOCKET, CONTROL, STATE, write_script
from gpushop.emulator.sandbox_runtime import SandboxRuntime, control_error
from gpushop.emulator.sshd import SshEndpoint, new_host_key
from gpushop.emulator.tensordock import cloud_init, docker_shim
from gpushop.emulator.tensordock.catalog import GPUS_BY_NAME
from gpushop.emulator.tensordock.state import TdState, Vm

log = logging.getLogger("gpushop.emulator")

SSH_USERS = frozenset({"user"})  # TensorDock's Linux images log in as `user` (reference 2.6)
HOME = "/home/user"
MAX_PULL_MBPS = 2000.0  # registry pulls and model downloads rarely beat this, whatever the NIC
CLOUD_INIT_SPEC = "cloud-init.json"  # in the control folder
CLOUD_INIT_RESULT = "cloud-init-result.json"  # in the control folder's state/
# Images the simulated docker knows more about than their size (docker_shim.image_facts).
AITOOLKIT = image_files.AITOOLKIT_REPOSITORY
AITOOLKIT_CUDA = "13.0"  # the image is built on nvidia/cuda:13.0.3 (docs/emulator.md)

SUDO = """#!/bin/sh
# Simulated by the gpushop TensorDock emulator: `user` has passwordless sudo; commands run as
# they would anyway (root inside the VM's sandbox).
while [ $# -gt 0 ]; do
  case "$1" in
    -u|-g|-C|-h|-p|-U) shift 2 ;;
    --) shift; break ;;
    -*) shift ;;
    *) break ;;
  esac
done
[ $# -eq 0 ] && { echo "usage: sudo [-u user] command" >&2; exit 1; }
exec env "$@"
"""

CLOUD_INIT = f"""#!/bin/sh
# Simulated by the gpushop TensorDock emulator: `cloud-init status [--wait] [--long]`.
result="{STATE}/{CLOUD_INIT_RESULT}"
case "$1" in
  status)
    shift
    if [ "$1" = "--wait" ] || [ "$2" = "--wait" ] || [ "$1" = "-w" ]; then
      while [ ! -f "$result" ]; do /bin/sleep 0.05; printf . ; done; echo
    fi
    if [ ! -f "$result" ]; then echo "status: running"; exit 0; fi
    if grep -q '"error"' "$result"; then echo "status: error"; exit 1; fi
    echo "status: done"; exit 0 ;;
  --version) echo "/usr/bin/cloud-init 24.4.1-0ubuntu0~24.04.1" ;;
  *) echo "usage: cloud-init status [--wait] [--long] (simulated)" >&2; exit 2 ;;
esac
"""


@dataclass
class VmHost:
    sandbox: Sandbox
    host_key: asyncssh.SSHKey
    endpoint: SshEndpoint | None  # None: no forward for 22 (or Windows)
    port: int | None
    up: bool = False  # booted: sandbox running, SSH serving
    facts_version: int = -1
    cloud_init_started: bool = False
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def ssh(self) -> SshEndpoint | None:
        return self.endpoint


def pull_mbps(vm: Vm) -> float:
    return min(vm.node.network_gbps * 1000.0, MAX_PULL_MBPS)


def gpu_facts(vm: Vm) -> nvidia_smi.GpuFacts | None:
    """What the VM's nvidia-smi reports (None on a CPU-only VM), with a lying_host's lies."""
    if vm.gpu_model is None:
        return None
    model = GPUS_BY_NAME[vm.gpu_model]
    lie = vm.lie or {}
    return nvidia_smi.GpuFacts(
        name=nvidia_smi.driver_name(str(lie.get("gpu_name", model.driver_name))),
        count=int(lie.get("num_gpus", vm.gpu_count)),
        memory_mib=int(lie.get("gpu_ram", model.memory_mib)),
        driver_version=str(lie.get("driver_version", vm.node.driver_version)),
        cuda_version=nvidia_smi.cuda_text(lie.get("cuda", vm.node.cuda_version)),
        compute_cap=model.compute_cap,
        power_limit_w=model.power_w,
    )


class VmRuntime(SandboxRuntime[str, VmHost]):
    root_prefix = "tensordock-emulator-"
    id_field = "vm_id"
    kind = "VM"

    def sandbox_path(self, vm_id: str) -> Path:
        return self.root / f"vm-{vm_id}"

    # -- reconcile -----------------------------------------------------------------------------
    async def reconcile(self, state: TdState) -> None:
        if not state.config.ssh:
            return
        await self.stop_unwanted(state)
        async with self._lock():
            now = state.now()
            for vm in list(state.vms.values()):
                host = self.hosts.get(vm.id)
                if host is not None and host.up and host.facts_version == vm.facts_version:
                    continue
                if vm.windows or not state.runs(vm, now):
                    continue
                if host is not None and self._ending(host):
                    continue  # a start right after a stop: once the stop is done
                if host is None:
                    host = self._make_host(state, vm)
                if not host.up:
                    await self._boot(state, vm, host)
                if host.facts_version != vm.facts_version:
                    self._write_gpus(host, vm)
                    host.facts_version = vm.facts_version

    def _unwanted(self, state: TdState) -> list[tuple[str, VmHost, str]]:
        now = state.now()
        doomed = []
        for vm_id, host in list(self.hosts.items()):
            vm = state.vms.get(vm_id)
            if vm is None:
                if id(host) not in self._destroying:
                    doomed.append((vm_id, host, "destroyed"))
            elif self._ending(host):
                continue
            elif (host.up or host.sandbox.running) and not state.runs(vm, now):
                doomed.append((vm_id, host, "stopped"))
        return doomed

    def _stopping(self, state: TdState, key: str, host: VmHost, why: str) -> None:
        host.up = False

    def _make_host(self, state: TdState, vm: Vm) -> VmHost:
        iso = isolation.for_instances(state.config.sftp)
        sandbox = Sandbox(
            self.sandbox_path(vm.id),
            iso,
            home=HOME,
            dirs=[HOME],
            containers=True,
            max_pids=state.config.max_pids,
            hide=[str(self.root)],
        )
        host_key = new_host_key()

        def authorized() -> list[str]:
            live = state.vms.get(vm.id)
            if live is None:
                return []
            # and ~user/.ssh/authorized_keys, as the VM's own sshd reads it
            return list(live.ssh_keys) + inside_files.authorized_keys(sandbox.path, HOME)

        def environment() -> dict[str, str]:
            return sandbox.environment(self.vm_environment(state, vm))

        port = vm.ssh_port
        endpoint = (
            SshEndpoint(sandbox, host_key, authorized, environment, users=SSH_USERS)
            if port is not None
            else None
        )
        host = VmHost(sandbox=sandbox, host_key=host_key, endpoint=endpoint, port=port)
        self.hosts[vm.id] = host
        return host

    @staticmethod
    def vm_environment(state: TdState, vm: Vm) -> dict[str, str]:
        return {
            "USER": "user",
            "LOGNAME": "user",
            "EMULATOR_DOCKER_CONFIG": f"{CONTROL}/docker/config.json",
            "EMULATOR_DISK_GB": str(vm.storage_gb),
            "EMULATOR_SPEED": f"{state.config.speed:g}",
            "EMULATOR_INET_DOWN": f"{pull_mbps(vm):g}",
        }

    def _write_gpus(self, host: VmHost, vm: Vm) -> None:
        facts = gpu_facts(vm)
        smi = host.sandbox.bin / "nvidia-smi"
        if facts is None:  # a CPU-only VM has no NVIDIA driver
            smi.unlink(missing_ok=True)
        else:
            host.sandbox.write_gpus(facts)

    async def _boot(self, state: TdState, vm: Vm, host: VmHost) -> None:
        host.sandbox.prepare(None)
        self._write_gpus(host, vm)
        host.facts_version = vm.facts_version
        self._install_tools(state, vm, host)
        try:
            await host.sandbox.start()
        except SandboxError as exc:
            log.warning("emulator: VM %s has no sandbox: %s", vm.id, exc)
            return
        host.up = True
        if host.endpoint is not None and host.port is not None:
            sock = state.ports.take(host.port)
            if sock is not None:
                try:
                    await host.endpoint.start(sock)
                except OSError as exc:
                    sock.close()
                    log.warning("emulator: SSH for VM %s did not start: %s", vm.id, exc)
        if not host.cloud_init_started:
            host.cloud_init_started = True
            task = asyncio.ensure_future(self._cloud_init(state, vm, host))
            host.tasks.add(task)
            task.add_done_callback(host.tasks.discard)

    def _install_tools(self, state: TdState, vm: Vm, host: VmHost) -> None:
        """docker (with its config), sudo and cloud-init in the control folder's bin/; the
        ai-toolkit image's files staged (read-only) for the simulated docker's pulls."""
        control = host.sandbox.control
        docker_home = control / "docker"
        layers = docker_home / "layers" / "ostris" / "aitoolkit" / "app"
        image_files.install(AITOOLKIT, layers)
        config = {
            "speed": state.config.speed,
            "mbps": pull_mbps(vm),
            "sizes": images.IMAGE_GB,
            "unknown_gb": images.UNKNOWN_IMAGE_GB,
            "devel_factor": images.DEVEL_FACTOR,
            "setpriv": host.sandbox.isolation.setpriv,
            "containers": CONTAINERS_SOCKET,
            "images": {
                AITOOLKIT: {
                    "layer": f"{CONTROL}/docker/layers/ostris/aitoolkit/app",
                    "workdir": "/app/ai-toolkit",
                    "cuda": AITOOLKIT_CUDA,
                    "cmd": [
                        "/bin/sh",
                        "-c",
                        "echo 'Starting AI Toolkit UI on port 8675 (simulated: no UI)'; "
                        "exec sleep 2147483647",
                    ],
                }
            },
        }
        docker_home.mkdir(parents=True, exist_ok=True)
        _write_text(docker_home / "config.json", json.dumps(config))
        bin_dir = host.sandbox.bin
        python = f"#!{nvidia_smi._interpreter()}\n"
        write_script(bin_dir / "docker", python + Path(docker_shim.__file__).read_text())
        write_script(
            bin_dir / "cloud-init-first-boot", python + Path(cloud_init.__file__).read_text()
        )
        write_script(bin_dir / "sudo", SUDO)
        write_script(bin_dir / "cloud-init", CLOUD_INIT)
        write_script(bin_dir / "whoami", '#!/bin/sh\necho "${USER:-user}"\n')

    async def _cloud_init(self, state: TdState, vm: Vm, host: VmHost) -> None:
        """cloud-init's first boot, inside the VM (cloud_init.py), from the create's spec."""
        sandbox = host.sandbox
        _write_text(sandbox.control / CLOUD_INIT_SPEC, json.dumps(vm.cloud_init or {}))
        env = sandbox.environment(self.vm_environment(state, vm))
        await sandbox.run_quietly(["cloud-init-first-boot"], env, f"cloud-init of VM {vm.id}")

    def _checked_id(self, state: TdState, raw: Any) -> str:
        if not isinstance(raw, str):
            raise control_error(400, "vm_id must be a string")
        if raw not in state.vms:
            raise control_error(404, f"no VM {raw}")
        if not state.config.ssh:
            raise control_error(400, "the emulator runs without SSH (ssh=False): no sandboxes")
        return raw

    # -- views and shutdown --------------------------------------------------------------------
    def view(self, vm_id: str) -> dict[str, Any]:
        host = self.hosts.get(vm_id)
        key = host.host_key.export_public_key().decode().strip() if host else None
        result = self.control_path(vm_id) / "state" / CLOUD_INIT_RESULT
        try:  # written inside: read without following a symlink the VM may have put there
            fd = os.open(result, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd) as stream:
                cloud_init = json.loads(stream.read(65536))["status"]
        except (OSError, ValueError, KeyError, TypeError):
            cloud_init = "running" if host is not None and host.cloud_init_started else None
        return {
            "sandbox": str(self.sandbox_path(vm_id)),
            "ssh_listening": bool(host and host.endpoint and host.endpoint.serving),
            "ssh_host_key": key,
            "init_pid": host.sandbox.init_pid if host else None,
            "processes": host.sandbox.processes() if host else [],
            "cloud_init": cloud_init,
        }


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
