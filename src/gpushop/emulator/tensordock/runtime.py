"""The machines behind TensorDock VMs: a sandbox, a real SSH endpoint and cloud-init per VM.

It reuses the Vast side's machinery (sandbox.py, sshd.py, mountns.py, nvidia_smi.py): a VM that
has booted and whose host is reachable gets its sandbox (`<tmp>/tensordock-emulator-XXXX/vm-<id>/`,
/workspace and /app shared with SFTP through its mount namespace), its simulated nvidia-smi (the
VM's GPUs; none on a CPU-only VM), `python`, a simulated `docker` (docker_shim.py), `sudo` and
`cloud-init`, and an SSH server on 127.0.0.1:<the external port forwarded to 22>, for the user
`user` and the key given at create. cloud-init (write_files, runcmd) runs once, at first boot.
Any other status (stopping, stopped, released, host offline) kills the VM's processes and closes
its server; delete also removes the sandbox. `reconcile()` runs after every API call and from a
50 ms tick, like hosts.py does for Vast instances.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import asyncssh

from gpushop.emulator import image_files, images, mountns, nvidia_smi
from gpushop.emulator.mountns import MountNamespace, Tools
from gpushop.emulator.sandbox import CONTROL_DIR, Sandbox
from gpushop.emulator.sandbox_runtime import SandboxRuntime, control_error
from gpushop.emulator.sshd import SshEndpoint, new_host_key
from gpushop.emulator.tensordock import docker_shim
from gpushop.emulator.tensordock.catalog import GPUS_BY_NAME
from gpushop.emulator.tensordock.state import TdState, Vm

log = logging.getLogger("gpushop.emulator")

SSH_USERS = frozenset({"user"})  # TensorDock's Linux images log in as `user` (reference 2.6)
MAX_PULL_MBPS = 2000.0  # registry pulls and model downloads rarely beat this, whatever the NIC
CLOUD_INIT_LOG = "var/log/cloud-init-output.log"
BOOT_FINISHED = "var/lib/cloud/instance/boot-finished"
CLOUD_INIT_RESULT = "cloud-init-result.json"  # in <sandbox>/.emulator/
# Images the simulated docker knows more about than their size (docker_shim.image_facts).
AITOOLKIT = image_files.AITOOLKIT_REPOSITORY
AITOOLKIT_CUDA = "13.0"  # the image is built on nvidia/cuda:13.0.3 (docs/emulator.md)

SUDO = """#!/bin/sh
# Simulated by the gpushop TensorDock emulator: `user` has passwordless sudo; commands run as the
# emulator's user (there is no real root here).
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

CLOUD_INIT = """#!/bin/sh
# Simulated by the gpushop TensorDock emulator: `cloud-init status [--wait] [--long]`.
result="$EMULATOR_SANDBOX/.emulator/cloud-init-result.json"
case "$1" in
  status)
    shift
    if [ "$1" = "--wait" ] || [ "$2" = "--wait" ] || [ "$1" = "-w" ]; then
      while [ ! -f "$result" ]; do sleep 0.05; printf . ; done; echo
    fi
    if [ ! -f "$result" ]; then echo "status: running"; exit 0; fi
    if grep -q '"error"' "$result"; then echo "status: error"; exit 1; fi
    echo "status: done"; exit 0 ;;
  --version) echo "/usr/bin/cloud-init 24.4.1-0ubuntu0~24.04.1" ;;
  *) echo "usage: cloud-init status [--wait] [--long] (simulated)" >&2; exit 2 ;;
esac
"""


class VmSandbox(Sandbox):
    """The Vast sandbox, named after the VM (`vm-<id>`) instead of a container number."""

    def __init__(self, path: Path, serial: int, tools: Tools | None) -> None:
        super().__init__(path.parent, serial, None)
        self.path = path
        self.namespace = MountNamespace(tools, path) if tools is not None else None


@dataclass
class VmHost:
    sandbox: VmSandbox
    host_key: asyncssh.SSHKey
    endpoint: SshEndpoint | None  # None: no forward for 22 (or Windows)
    port: int | None
    up: bool = False  # booted: sandbox laid out, SSH serving
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


def vm_path(sandbox: Path, path: str) -> Path | None:
    """Where a VM path lives in the sandbox: /workspace and /app as themselves, the home
    (/home/user) as the sandbox, anything else under the sandbox (None: `..` in the path)."""
    pure = PurePosixPath(path if path.startswith("/") else "/" + path)
    if ".." in pure.parts:
        return None
    for prefix, sub in (("/workspace", "workspace"), ("/app", "app"), ("/home/user", "")):
        if pure == PurePosixPath(prefix) or PurePosixPath(prefix) in pure.parents:
            rest = pure.relative_to(prefix)
            return sandbox / sub / rest if sub else sandbox / rest
    return sandbox / pure.relative_to("/")


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
        self.stop_unwanted(state)
        async with self._lock():
            now = state.now()
            for vm in list(state.vms.values()):
                host = self.hosts.get(vm.id)
                if host is not None and host.up and host.facts_version == vm.facts_version:
                    continue
                if vm.windows or not state.runs(vm, now):
                    continue
                if host is None:
                    host = self._make_host(state, vm)
                if not host.up:
                    await self._boot(state, vm, host)
                if host.facts_version != vm.facts_version:
                    self._write_gpus(host, vm)
                    host.facts_version = vm.facts_version

    def stop_unwanted(self, state: TdState) -> None:
        now = state.now()
        for vm_id, host in list(self.hosts.items()):
            vm = state.vms.get(vm_id)
            if vm is None:
                self._teardown(host, state, remove=True)
                del self.hosts[vm_id]
            elif (host.up or host.sandbox.pgids) and not state.runs(vm, now):
                self._teardown(host, state, remove=False)

    def _teardown(self, host: VmHost, state: TdState, *, remove: bool) -> None:
        host.sandbox.kill_all()
        host.sandbox.release()
        was_serving = host.endpoint is not None and host.endpoint.serving
        if host.endpoint is not None:
            host.endpoint.close()
        host.up = False
        for task in host.tasks:
            task.cancel()
        host.tasks.clear()
        if remove:
            host.sandbox.remove()
        elif was_serving and host.port is not None:
            state.ports.hold_again(host.port)

    def _make_host(self, state: TdState, vm: Vm) -> VmHost:
        sandbox = VmSandbox(self.sandbox_path(vm.id), vm.serial, mountns.tools())
        host_key = new_host_key()

        def authorized() -> list[str]:
            live = state.vms.get(vm.id)
            return list(live.ssh_keys) if live is not None else []

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
            "EMULATOR_DISK_GB": str(vm.storage_gb),
            "EMULATOR_SPEED": f"{state.config.speed:g}",
            "EMULATOR_INET_DOWN": f"{pull_mbps(vm):g}",
        }

    def _write_gpus(self, host: VmHost, vm: Vm) -> None:
        facts = gpu_facts(vm)
        smi = host.sandbox.path / "bin" / "nvidia-smi"
        if facts is None:  # a CPU-only VM has no NVIDIA driver
            smi.unlink(missing_ok=True)
        else:
            host.sandbox.write_gpus(facts)

    async def _boot(self, state: TdState, vm: Vm, host: VmHost) -> None:
        facts = gpu_facts(vm)
        placeholder = nvidia_smi.GpuFacts("none", 0, 0, "", "0.0", "0.0", 0)
        host.sandbox.create(facts or placeholder, "")
        self._write_gpus(host, vm)
        host.facts_version = vm.facts_version
        self._install_tools(state, vm, host)
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
        """docker (with its config), sudo and cloud-init in bin/; the ai-toolkit image's files
        staged for the simulated docker."""
        path = host.sandbox.path
        docker_home = path / CONTROL_DIR / "docker"
        app = docker_home / "layers" / "ostris" / "aitoolkit" / "app"
        image_files.install(AITOOLKIT, app)
        tools = mountns.tools()
        config = {
            "speed": state.config.speed,
            "mbps": pull_mbps(vm),
            "sizes": images.IMAGE_GB,
            "unknown_gb": images.UNKNOWN_IMAGE_GB,
            "devel_factor": images.DEVEL_FACTOR,
            "namespaces": tools is not None,
            "unshare": tools.unshare if tools is not None else None,
            "images": {
                AITOOLKIT: {
                    "app": str(app),
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
        shim = Path(docker_shim.__file__).read_text()
        _write_script(path / "bin" / "docker", f"#!{nvidia_smi._interpreter()}\n" + shim)
        _write_script(path / "bin" / "sudo", SUDO)
        _write_script(path / "bin" / "cloud-init", CLOUD_INIT)
        _write_script(path / "bin" / "whoami", '#!/bin/sh\necho "${USER:-user}"\n')

    async def _cloud_init(self, state: TdState, vm: Vm, host: VmHost) -> None:
        """write_files, then runcmd as one script (as cloud-init's scripts_user does), output
        to /var/log/cloud-init-output.log; the result marks the boot finished."""
        sandbox = host.sandbox
        spec = vm.cloud_init or {}
        errors = _cloud_init_files(sandbox.path, spec)
        commands = spec.get("runcmd", [])
        if commands:
            lines = [c if isinstance(c, str) else shlex.join(c) for c in commands]
            script = sandbox.path / CONTROL_DIR / "runcmd"
            script.parent.mkdir(parents=True, exist_ok=True)
            script.write_text("#!/bin/sh\n" + "\n".join(lines) + "\n")
            env = sandbox.environment(self.vm_environment(state, vm))
            out = os.open(sandbox.path / CLOUD_INIT_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                proc = await sandbox.spawn(
                    ["/bin/sh", str(script)],
                    env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                )
            finally:
                os.close(out)  # the child holds its own copy
            code = await proc.wait()
            sandbox.forget(proc.pid)
            if code != 0:
                errors.append(f"runcmd exited with status {code}")
        _cloud_init_done(sandbox.path, errors)

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
        result = self.sandbox_path(vm_id) / CONTROL_DIR / CLOUD_INIT_RESULT
        try:
            cloud_init = json.loads(result.read_text())["status"]
        except (OSError, ValueError, KeyError):
            cloud_init = "running" if host is not None and host.cloud_init_started else None
        return {
            "sandbox": str(self.sandbox_path(vm_id)),
            "ssh_listening": bool(host and host.endpoint and host.endpoint.serving),
            "ssh_host_key": key,
            "process_groups": sorted(host.sandbox.pgids) if host else [],
            "cloud_init": cloud_init,
        }


def _stamp() -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())


def _cloud_init_files(root: Path, spec: dict[str, Any]) -> list[str]:
    """The config stage: write_files (paths as `vm_path` maps them); packages are not
    installed. Returns the errors met."""
    log_path = root / CLOUD_INIT_LOG
    log_path.parent.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    lines = [f"Cloud-init v. 24.4.1 running 'modules:config' at {_stamp()}."]
    for entry in spec.get("write_files", []):
        target = vm_path(root, str(entry.get("path", "")))
        if target is None:
            errors.append(f"write_files: refused path {entry.get('path')}")
            continue
        content = str(entry.get("content", ""))
        data = content.encode()
        if entry.get("encoding") in ("b64", "base64"):
            data = base64.b64decode(content)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        with contextlib.suppress(ValueError, OSError):
            target.chmod(int(str(entry.get("permissions", "0644")), 8))
    for flag in ("package_update", "package_upgrade"):
        if spec.get(flag):
            lines.append(f"emulator: {flag} skipped (nothing is installed here)")
    if spec.get("packages"):
        names = " ".join(str(p) for p in spec["packages"])
        lines.append(f"emulator: packages not installed (the host's tools are on PATH): {names}")
    with open(log_path, "a") as out:
        out.write("\n".join(lines) + "\n")
    return errors


def _cloud_init_done(root: Path, errors: list[str]) -> None:
    with open(root / CLOUD_INIT_LOG, "a") as out:
        out.write(
            f"Cloud-init v. 24.4.1 finished at {_stamp()}. Datasource DataSourceNoCloud.  "
            "Up 12.00 seconds\n"
        )
    finished = root / BOOT_FINISHED
    finished.parent.mkdir(parents=True, exist_ok=True)
    finished.write_text(f"{time.time()}\n")
    result = {"status": "error" if errors else "done", "errors": errors}
    _write_text(root / CONTROL_DIR / CLOUD_INIT_RESULT, json.dumps(result))


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _write_script(path: Path, text: str) -> None:
    if path.exists() and path.read_text() == text:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o755)
    tmp.replace(path)
