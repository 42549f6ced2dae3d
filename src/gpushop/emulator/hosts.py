"""The emulated hosts: makes each instance's SSH endpoint and processes follow its status.

`reconcile()` runs on the server's event loop after every API call and from a small background
tick: an instance whose status is `running` gets its sandbox (sandbox.py: its own PID 1 and
namespaces), nvidia-smi and SSH server (and its `onstart`, at every start); any other status
(stopped, outbid, offline, out of credit) ends its PID 1, hence all its processes, and closes its
server;
a destroyed instance also loses its sandbox. A stop or destroy awaits the end of the instance's
processes (without blocking the loop), so when DELETE /instances/{id}/ answers, they are gone.
A PID 1 that ends by itself makes the instance `exited`. Trainer faults (control API) are files
in the control folder the simulated ai-toolkit reads; the tick watches the marker it leaves for
an `ssh_drop`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncssh

from gpushop.emulator import entrypoint, inside_files, isolation, nvidia_smi
from gpushop.emulator.entrypoint import Entrypoint
from gpushop.emulator.sandbox import Sandbox, SandboxError
from gpushop.emulator.sandbox_files import CONTROL, write_script
from gpushop.emulator.sandbox_runtime import (
    SandboxRuntime,
    control_error,
)
from gpushop.emulator.sshd import SshEndpoint, new_host_key

if TYPE_CHECKING:
    from gpushop.emulator.state import EmulatorState, Instance

log = logging.getLogger("gpushop.emulator")

ONSTART = "onstart.sh"  # in the control folder
ONSTART_LOG = "/var/log/onstart.log"  # inside


@dataclass
class Host:
    """The machine side of one instance."""

    sandbox: Sandbox
    host_key: asyncssh.SSHKey
    endpoint: SshEndpoint
    port: int
    facts_version: int = -1
    onstart_run: float | None = None  # the run (start, reboot) whose onstart was started
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    entry: Entrypoint = field(default_factory=Entrypoint)  # runtype args: its main process
    run: float | None = None  # the instance's run_requested_at it serves (a reboot changes it)
    container: int = 0  # the instance's container it holds (a recycle changes it)

    @property
    def ssh(self) -> SshEndpoint:
        return self.endpoint


class HostRuntime(SandboxRuntime[int, Host]):
    root_prefix = "vast-emulator-"

    def sandbox_path(self, instance_id: int) -> Path:
        return self.root / f"C.{instance_id}"

    # -- reconcile ---------------------------------------------------------------------------
    async def reconcile(self, state: EmulatorState) -> None:
        if not state.config.ssh:
            return
        await self.stop_unwanted(state)
        async with self._lock():
            now = state.now()
            for inst in list(state.instances.values()):
                host = self.hosts.get(inst.id)
                if (  # the common case on big accounts: already serving, nothing changed
                    host is not None
                    and host.endpoint.serving
                    and host.facts_version == inst.facts_version
                ):
                    continue
                if inst.intended != "running" or state.status(inst, now)[0] != "running":
                    continue
                if host is not None and self._ending(host):
                    continue  # a start right after a stop: once the stop is done
                if host is None:
                    host = self._make_host(state, inst)
                if not host.endpoint.serving:
                    await self._start(state, inst, host)
                if host.facts_version != inst.facts_version:
                    host.sandbox.write_gpus(self.facts(state, inst))
                    host.facts_version = inst.facts_version

    def _unwanted(self, state: EmulatorState) -> list[tuple[int, Host, str]]:
        """(id, host, why) of each host that must stop: destroyed, stopped or exited."""
        now = state.now()
        doomed = []
        for instance_id, host in list(self.hosts.items()):
            inst = state.instances.get(instance_id)
            if inst is None:
                if id(host) not in self._destroying:
                    doomed.append((instance_id, host, "destroyed"))
            elif self._ending(host):
                continue
            elif host.container != inst.container:  # recycle: this container goes
                doomed.append((instance_id, host, "recycled"))
            elif not (host.endpoint.serving or host.sandbox.running):
                continue
            elif not self._still_runs(inst, now):
                doomed.append((instance_id, host, "stopped"))
            elif (host.endpoint.serving or host.entry.run is not None) and (
                host.run != inst.run_requested_at  # reboot (an args container: SSH or not)
            ):
                doomed.append((instance_id, host, "rebooted"))
            elif host.sandbox.exited:
                doomed.append((instance_id, host, "exited"))
        return doomed

    @staticmethod
    def _still_runs(inst: Instance, now: float) -> bool:
        # A running instance stops running only by a stop (intended), by going offline or by
        # its container exiting; checking those first keeps this O(1) for the many that stay up.
        return (
            inst.intended == "running"
            and inst.exited_at is None
            and (inst.offline_at is None or now < inst.offline_at)
        )

    def _stopping(self, state: EmulatorState, key: int, host: Host, why: str) -> None:
        inst = state.instances.get(key)
        if why == "exited" and inst is not None:  # its PID 1 ended by itself
            state.container_exited(inst, state.now())

    @staticmethod
    def facts(state: EmulatorState, inst: Instance) -> nvidia_smi.GpuFacts:
        offer = state.market.full(inst.offer_index)
        return nvidia_smi.facts_from_offer(offer, inst.lie)

    def _make_host(self, state: EmulatorState, inst: Instance) -> Host:
        iso = isolation.for_instances(state.config.sftp)
        sandbox = Sandbox(
            self.sandbox_path(inst.id), iso, max_pids=state.config.max_pids, hide=[str(self.root)]
        )
        host_key = new_host_key()

        def authorized() -> list[str]:
            live = state.instances.get(inst.id)
            if live is None:
                return []
            # and the container's own ~/.ssh/authorized_keys (SkyPilot appends from onstart)
            inside = inside_files.authorized_keys(sandbox.path, sandbox.home)
            return [k["public_key"] for k in live.keys] + inside

        def environment() -> dict[str, str]:
            return sandbox.environment(state.instance_environment(inst))

        host = Host(
            sandbox=sandbox,
            host_key=host_key,
            endpoint=SshEndpoint(sandbox, host_key, authorized, environment),
            port=inst.ssh_port,
            container=inst.container,
        )
        self.hosts[inst.id] = host
        return host

    async def _start(self, state: EmulatorState, inst: Instance, host: Host) -> None:
        if entrypoint.is_args(inst.runtype) and not self._start_args(state, inst, host):
            return  # SSH only once the entrypoint ran sshd
        host.sandbox.prepare(self.facts(state, inst), inst.image)
        host.facts_version = inst.facts_version
        host.run = inst.run_requested_at
        sock = state.ports.take(host.port)
        if sock is None:
            await host.sandbox.end()
            return
        try:
            await host.endpoint.start(sock)
        except OSError as exc:
            sock.close()
            log.warning("emulator: SSH for instance %d did not start: %s", inst.id, exc)
            return
        # as Vast's entrypoint does: onstart at every start of the container (create, start
        # after a stop, reboot, recycle), so what it starts (gpushop's watchdog) runs again
        fresh_run = host.onstart_run != inst.run_requested_at
        if inst.onstart and fresh_run and not entrypoint.is_args(inst.runtype):
            host.onstart_run = inst.run_requested_at
            task = asyncio.ensure_future(self._onstart(host, inst.onstart, state, inst))
            host.tasks.add(task)
            task.add_done_callback(host.tasks.discard)

    def _start_args(self, state: EmulatorState, inst: Instance, host: Host) -> bool:
        """runtype args: the entrypoint once per run (entrypoint.py); True once it ran sshd."""
        if host.entry.started_for(inst.run_requested_at):
            return host.entry.sshd_started(host.sandbox)
        host.sandbox.prepare(self.facts(state, inst), inst.image)
        host.facts_version = inst.facts_version
        host.entry.prepare(host.sandbox)
        host.entry.run = host.run = inst.run_requested_at
        task = asyncio.ensure_future(entrypoint.main(host.entry, host.sandbox, state, inst))
        host.tasks.add(task)
        task.add_done_callback(host.tasks.discard)
        return False

    async def _onstart(self, host: Host, script: str, state: EmulatorState, inst: Instance) -> None:
        """Run `onstart` once, detached, inside; its output goes to /var/log/onstart.log there
        (opened inside: the emulator never writes where the instance can plant a symlink)."""
        try:  # PID 1 starts here, off the reconcile (else with the first SSH session)
            await host.sandbox.start()
        except SandboxError as exc:
            log.warning("emulator: instance %d has no sandbox: %s", inst.id, exc)
            return
        write_script(host.sandbox.control / ONSTART, script)
        env = host.sandbox.environment(state.instance_environment(inst))
        argv = ["/bin/sh", "-c", f"exec /bin/sh {CONTROL}/{ONSTART} >>{ONSTART_LOG} 2>&1"]
        await host.sandbox.run_quietly(argv, env, f"onstart of instance {inst.id}")

    def _checked_id(self, state: EmulatorState, raw: Any) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise control_error(400, "instance_id must be an integer")
        if raw not in state.instances:
            raise control_error(404, f"no instance {raw}")
        if not state.config.ssh:
            raise control_error(400, "the emulator runs without SSH (ssh=False): no sandboxes")
        return raw

    # -- views and shutdown --------------------------------------------------------------------
    def view(self, instance_id: int) -> dict[str, Any]:
        host = self.hosts.get(instance_id)
        return {
            "sandbox": str(self.sandbox_path(instance_id)),
            "ssh_listening": bool(host and host.endpoint.serving),
            "ssh_host_key": host.host_key.export_public_key().decode().strip() if host else None,
            "init_pid": host.sandbox.init_pid if host else None,
            "processes": host.sandbox.processes() if host else [],
            "onstart_started": bool(host and host.onstart_run is not None),
        }
