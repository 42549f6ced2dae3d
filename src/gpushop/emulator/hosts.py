"""The emulated hosts: makes each instance's SSH endpoint and processes follow its status.

`reconcile()` runs on the server's event loop after every API call and from a small background
tick: an instance whose status is `running` gets its sandbox, nvidia-smi and SSH server (and its
`onstart`, once); any other status (stopped, outbid, offline, out of credit) kills its processes
and closes its server; a destroyed instance also loses its sandbox. Killing is synchronous, so
when DELETE /instances/{id}/ answers, the instance's processes are already gone. Trainer faults
(control API) are files in `<sandbox>/.emulator/` the simulated ai-toolkit reads; the tick
watches the marker it leaves for an `ssh_drop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncssh

from gpushop.emulator import mountns, nvidia_smi
from gpushop.emulator.errors import ApiError
from gpushop.emulator.sandbox import CONTROL_DIR, Sandbox
from gpushop.emulator.sshd import SshEndpoint, new_host_key

if TYPE_CHECKING:
    from gpushop.emulator.state import EmulatorState, Instance

log = logging.getLogger("gpushop.emulator")

TICK_S = 0.05  # how late at most a status change reaches the SSH side when nobody calls the API
TRAINER_FAILS = ("oom", "crash", "ssh_drop")
# Files in <sandbox>/.emulator/ shared with the simulated ai-toolkit (aitoolkit/faults.py).
TRAINER_FAULT_FILE = "trainer_fault.json"
SSH_DROP_MARKER = "ssh_drop"


@dataclass
class Host:
    """The machine side of one instance."""

    sandbox: Sandbox
    host_key: asyncssh.SSHKey
    endpoint: SshEndpoint
    port: int
    facts_version: int = -1
    onstart_started: bool = False
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)


class HostRuntime:
    def __init__(self) -> None:
        self.hosts: dict[int, Host] = {}
        self._root: Path | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._lock_obj: asyncio.Lock | None = None
        self.drop_watch: set[int] = set()  # instances with a pending ssh_drop trainer fault

    @property
    def root(self) -> Path:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="vast-emulator-"))
        return self._root

    def sandbox_path(self, instance_id: int) -> Path:
        return self.root / f"C.{instance_id}"

    def _lock(self) -> asyncio.Lock:
        if self._lock_obj is None:
            self._lock_obj = asyncio.Lock()
        return self._lock_obj

    def ensure_ticker(self, state_getter: Any) -> None:
        """Start the background tick on the running loop (once)."""
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.ensure_future(self._tick(state_getter))

    async def _tick(self, state_getter: Any) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                state = state_getter()
                state.sync(state.now())
                await self.reconcile(state)
                self._watch_drops()
            except Exception:  # never let the tick die silently: log and carry on
                log.exception("emulator: host tick failed")

    # -- reconcile ---------------------------------------------------------------------------
    async def reconcile(self, state: EmulatorState) -> None:
        if not state.config.ssh:
            return
        self.stop_unwanted(state)
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
                if host is None:
                    host = self._make_host(state, inst)
                if not host.endpoint.serving:
                    await self._start(state, inst, host)
                if host.facts_version != inst.facts_version:
                    host.sandbox.write_gpus(self.facts(state, inst))
                    host.facts_version = inst.facts_version

    def stop_unwanted(self, state: EmulatorState) -> None:
        """Synchronous part: kill and close what must not run any more."""
        now = state.now()
        for instance_id, host in list(self.hosts.items()):
            inst = state.instances.get(instance_id)
            if inst is None:
                self._teardown(host, state, remove=True)
                del self.hosts[instance_id]
            elif (host.endpoint.serving or host.sandbox.pgids) and not self._still_runs(inst, now):
                self._teardown(host, state, remove=False)

    @staticmethod
    def _still_runs(inst: Instance, now: float) -> bool:
        # A running instance stops running only by a stop (intended) or by going offline;
        # checking those first keeps this O(1) for the many that stay up.
        return inst.intended == "running" and (inst.offline_at is None or now < inst.offline_at)

    def _teardown(self, host: Host, state: EmulatorState, *, remove: bool) -> None:
        host.sandbox.kill_all()
        host.sandbox.release()
        was_serving = host.endpoint.serving
        host.endpoint.close()
        for task in host.tasks:
            task.cancel()
        host.tasks.clear()
        if remove:
            host.sandbox.remove()
        elif was_serving:
            state.ports.hold_again(host.port)

    @staticmethod
    def facts(state: EmulatorState, inst: Instance) -> nvidia_smi.GpuFacts:
        offer = state.market.full(inst.offer_index)
        return nvidia_smi.facts_from_offer(offer, inst.lie)

    def _make_host(self, state: EmulatorState, inst: Instance) -> Host:
        sandbox = Sandbox(self.root, inst.id, mountns.tools())
        host_key = new_host_key()

        def authorized() -> list[str]:
            live = state.instances.get(inst.id)
            return [k["public_key"] for k in live.keys] if live is not None else []

        def environment() -> dict[str, str]:
            return sandbox.environment(state.instance_environment(inst))

        host = Host(
            sandbox=sandbox,
            host_key=host_key,
            endpoint=SshEndpoint(sandbox, host_key, authorized, environment),
            port=inst.ssh_port,
        )
        self.hosts[inst.id] = host
        return host

    async def _start(self, state: EmulatorState, inst: Instance, host: Host) -> None:
        host.sandbox.create(self.facts(state, inst), inst.image)
        host.facts_version = inst.facts_version
        sock = state.ports.take(host.port)
        if sock is None:
            return
        try:
            await host.endpoint.start(sock)
        except OSError as exc:
            sock.close()
            log.warning("emulator: SSH for instance %d did not start: %s", inst.id, exc)
            return
        if inst.onstart and not host.onstart_started:
            host.onstart_started = True
            task = asyncio.ensure_future(self._onstart(host, inst.onstart, state, inst))
            host.tasks.add(task)
            task.add_done_callback(host.tasks.discard)

    async def _onstart(self, host: Host, script: str, state: EmulatorState, inst: Instance) -> None:
        """Run `onstart` once, detached, output to <sandbox>/onstart.log."""
        log_path = host.sandbox.path / "onstart.log"
        env = host.sandbox.environment(state.instance_environment(inst))
        out = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            proc = await host.sandbox.spawn(
                ["/bin/sh", "-c", script],
                env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        finally:
            os.close(out)  # the child holds its own copy
        await proc.wait()
        host.sandbox.forget(proc.pid)

    # -- trainer faults (the simulated ai-toolkit reads and writes <sandbox>/.emulator/) -------
    def trainer_fault(self, state: EmulatorState, data: Any) -> dict[str, Any]:
        """Arm `{"instance_id", "fail": oom|crash|ssh_drop, "at_step"}` for the instance's
        trainer: it fails (or drops SSH) when it reaches that step, once."""
        if not isinstance(data, dict) or set(data) - {"instance_id", "fail", "at_step"}:
            raise _control_error(400, 'give {"instance_id", "fail", "at_step"}')
        instance_id = self._instance_id(state, data.get("instance_id"))
        fail, at_step = data.get("fail"), data.get("at_step")
        if fail not in TRAINER_FAILS:
            raise _control_error(400, f"fail must be one of {', '.join(TRAINER_FAILS)}")
        if isinstance(at_step, bool) or not isinstance(at_step, int) or at_step < 0:
            raise _control_error(400, "at_step must be an integer >= 0")
        control = self.sandbox_path(instance_id) / CONTROL_DIR
        control.mkdir(parents=True, exist_ok=True)
        fault = {"fail": fail, "at_step": at_step}
        tmp = control / (TRAINER_FAULT_FILE + ".tmp")
        tmp.write_text(json.dumps(fault))
        tmp.replace(control / TRAINER_FAULT_FILE)  # the trainer never reads half a file
        if fail == "ssh_drop":
            self.drop_watch.add(instance_id)
        return {"instance_id": instance_id, **fault}

    def drop_ssh(self, state: EmulatorState, data: Any) -> int:
        """Abort every SSH connection of the instance now; how many there were."""
        if not isinstance(data, dict):
            raise _control_error(400, 'give {"instance_id"}')
        host = self.hosts.get(self._instance_id(state, data.get("instance_id")))
        return host.endpoint.drop_connections() if host is not None else 0

    def clear_trainer_faults(self) -> None:
        for host in self.hosts.values():
            with contextlib.suppress(OSError):
                (host.sandbox.control / TRAINER_FAULT_FILE).unlink()
        self.drop_watch.clear()

    def _watch_drops(self) -> None:
        """The trainer touched the marker: a network drop for every connection of that
        instance (training goes on; new connections are accepted)."""
        for instance_id in list(self.drop_watch):
            host = self.hosts.get(instance_id)
            if host is None:
                continue
            marker = host.sandbox.control / SSH_DROP_MARKER
            if marker.exists():
                marker.unlink(missing_ok=True)
                self.drop_watch.discard(instance_id)
                dropped = host.endpoint.drop_connections()
                log.info("emulator: ssh_drop on instance %d (%d connections)", instance_id, dropped)

    @staticmethod
    def _instance_id(state: EmulatorState, raw: Any) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise _control_error(400, "instance_id must be an integer")
        if raw not in state.instances:
            raise _control_error(404, f"no instance {raw}")
        if not state.config.ssh:
            raise _control_error(400, "the emulator runs without SSH (ssh=False): no sandboxes")
        return raw

    # -- views and shutdown --------------------------------------------------------------------
    def view(self, instance_id: int) -> dict[str, Any]:
        host = self.hosts.get(instance_id)
        return {
            "sandbox": str(self.sandbox_path(instance_id)),
            "ssh_listening": bool(host and host.endpoint.serving),
            "ssh_host_key": host.host_key.export_public_key().decode().strip() if host else None,
            "process_groups": sorted(host.sandbox.pgids) if host else [],
            "onstart_started": bool(host and host.onstart_started),
        }

    def close_all(self, state: EmulatorState | None = None) -> None:
        """Kill every process, close every server and remove every sandbox (sync: safe from
        any thread once the loop is done)."""
        for host in self.hosts.values():
            host.sandbox.kill_all()
            host.endpoint.close()
            for task in host.tasks:
                task.cancel()
            host.sandbox.remove()
        self.hosts.clear()
        self.drop_watch.clear()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    async def aclose(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._ticker
            self._ticker = None
        self.close_all()


def _control_error(status: int, msg: str) -> ApiError:
    return ApiError(status, {"success": False, "msg": msg})
