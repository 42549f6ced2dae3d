"""What the Vast.ai hosts (hosts.py) and the TensorDock VMs (tensordock/runtime.py) share: a
temp root of sandboxes, a lock, the background tick, trainer faults and SSH drops, shutdown.

Subclasses say how a status maps to running processes (`reconcile`) and how an id from the
control API is checked (`_checked_id`); the rest is here once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from gpushop.emulator.errors import ApiError
from gpushop.emulator.sandbox import Sandbox
from gpushop.emulator.sshd import SshEndpoint

log = logging.getLogger("gpushop.emulator")

TICK_S = 0.05  # how late at most a status change reaches the SSH side when nobody calls the API
TRAINER_FAILS = ("oom", "crash", "ssh_drop")
# Files shared with the simulated ai-toolkit (aitoolkit/faults.py): the fault in the control
# folder (read-only inside), the marker it leaves in the control folder's state/.
TRAINER_FAULT_FILE = "trainer_fault.json"
TRAINER_FIRED_FILE = "trainer_fault.fired"
SSH_DROP_MARKER = "ssh_drop"


class MachineHost(Protocol):
    @property
    def sandbox(self) -> Sandbox: ...

    @property
    def tasks(self) -> set[asyncio.Task[Any]]: ...

    @property
    def ssh(self) -> SshEndpoint | None: ...

    @property
    def port(self) -> int | None: ...


K = TypeVar("K", int, str)
H = TypeVar("H", bound=MachineHost)


class SandboxRuntime(Generic[K, H]):
    root_prefix = "emulator-"
    id_field = "instance_id"  # the control API's name for the id
    kind = "instance"  # for messages

    def __init__(self) -> None:
        self.hosts: dict[K, H] = {}
        self._root: Path | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._lock_obj: asyncio.Lock | None = None
        self.drop_watch: set[K] = set()  # ids with a pending ssh_drop trainer fault
        self._stops: dict[int, asyncio.Task[None]] = {}  # by id(host): its stop under way
        self._destroying: set[int] = set()  # id(host) of those whose stop is a destroy

    @property
    def root(self) -> Path:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix=self.root_prefix))
        return self._root

    def sandbox_path(self, key: K) -> Path:
        raise NotImplementedError

    def control_path(self, key: K) -> Path:
        path = self.sandbox_path(key)
        return path.with_name(path.name + ".emulator")

    def _lock(self) -> asyncio.Lock:
        if self._lock_obj is None:
            self._lock_obj = asyncio.Lock()
        return self._lock_obj

    # -- the tick ------------------------------------------------------------------------------
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
                log.exception("emulator: %s tick failed", self.kind)

    async def reconcile(self, state: Any) -> None:
        raise NotImplementedError

    # -- stopping ------------------------------------------------------------------------------
    # A machine that must stop closes its SSH at once, then its PID 1 is ended by a task: the
    # kernel lets a PID 1 go only once every process inside is reaped, which on a loaded machine
    # can take a while, and meanwhile the loop serves everyone else. The call that started a
    # stop awaits it, so the answer to a stop or destroy leaves once its processes are gone.
    def _unwanted(self, state: Any) -> list[tuple[K, H, str]]:
        """(id, host, why) of each machine that must stop: "destroyed", "stopped", "exited"."""
        raise NotImplementedError

    def _stopping(self, state: Any, key: K, host: H, why: str) -> None:
        """What the state learns as a machine stops (subclasses: an exited container)."""

    async def stop_unwanted(self, state: Any) -> None:
        """Stop what must not run any more; returns once what this call stopped is gone."""
        started = [
            self._begin_stop(state, key, host, why) for key, host, why in self._unwanted(state)
        ]
        if started:
            await asyncio.wait(started)  # not gather: a reset may cancel them, not us

    def _ending(self, host: H) -> bool:
        return self._stops.get(id(host)) is not None

    def _begin_stop(self, state: Any, key: K, host: H, why: str) -> asyncio.Task[None]:
        self._stopping(state, key, host, why)
        self._close_doors(host, state, keep_port=why != "destroyed")
        previous = self._stops.get(id(host))

        async def finish() -> None:
            if previous is not None:  # a stop under way, and now a destroy
                await asyncio.wait([previous])
            await host.sandbox.end()
            # destroyed: gone; recycled: the next start makes a fresh container (instance_ops)
            if why in ("destroyed", "recycled") and self.hosts.get(key) is host:
                host.sandbox.remove()
                del self.hosts[key]

        task = asyncio.ensure_future(finish())
        self._stops[id(host)] = task
        if why == "destroyed":
            self._destroying.add(id(host))

        def done(_: asyncio.Task[None]) -> None:
            if self._stops.get(id(host)) is task:
                del self._stops[id(host)]
                self._destroying.discard(id(host))

        task.add_done_callback(done)
        return task

    @staticmethod
    def _close_doors(host: H, state: Any, *, keep_port: bool) -> None:
        """No SSH any more (its port held again for a restart), no onstart."""
        endpoint = host.ssh
        was_serving = endpoint is not None and endpoint.serving
        if endpoint is not None:
            endpoint.close()
        for task in host.tasks:
            task.cancel()
        host.tasks.clear()
        if keep_port and was_serving and host.port is not None:
            state.ports.hold_again(host.port)

    # -- trainer faults (the simulated ai-toolkit reads and writes <sandbox>/.emulator/) -------
    def _checked_id(self, state: Any, raw: Any) -> K:
        raise NotImplementedError

    def trainer_fault(self, state: Any, data: Any) -> dict[str, Any]:
        """Arm `{"<id>", "fail": oom|crash|ssh_drop, "at_step"}` for the machine's trainer: it
        fails (or drops SSH) when it reaches that step, once."""
        shape = f'give {{"{self.id_field}", "fail", "at_step"}}'
        if not isinstance(data, dict) or set(data) - {self.id_field, "fail", "at_step"}:
            raise control_error(400, shape)
        key = self._checked_id(state, data.get(self.id_field))
        fail, at_step = data.get("fail"), data.get("at_step")
        if fail not in TRAINER_FAILS:
            raise control_error(400, f"fail must be one of {', '.join(TRAINER_FAILS)}")
        if isinstance(at_step, bool) or not isinstance(at_step, int) or at_step < 0:
            raise control_error(400, "at_step must be an integer >= 0")
        control = self.control_path(key)
        (control / "state").mkdir(parents=True, exist_ok=True)
        fault = {"fail": fail, "at_step": at_step}
        tmp = control / (TRAINER_FAULT_FILE + ".tmp")
        tmp.write_text(json.dumps({**fault, "id": secrets.token_hex(8)}))
        tmp.replace(control / TRAINER_FAULT_FILE)  # the trainer never reads half a file
        if fail == "ssh_drop":
            self.drop_watch.add(key)
        return {self.id_field: key, **fault}

    def drop_ssh(self, state: Any, data: Any) -> int:
        """Abort every SSH connection of the machine now; how many there were."""
        if not isinstance(data, dict):
            raise control_error(400, f'give {{"{self.id_field}"}}')
        host = self.hosts.get(self._checked_id(state, data.get(self.id_field)))
        return host.ssh.drop_connections() if host is not None and host.ssh else 0

    def clear_trainer_faults(self) -> None:
        for host in self.hosts.values():
            with contextlib.suppress(OSError):
                (host.sandbox.control / TRAINER_FAULT_FILE).unlink()
            with contextlib.suppress(OSError):
                (host.sandbox.state / TRAINER_FIRED_FILE).unlink()  # unlink: no symlink followed
        self.drop_watch.clear()

    def _watch_drops(self) -> None:
        """The trainer touched the marker: a network drop for every connection of that
        machine (training goes on; new connections are accepted)."""
        for key in list(self.drop_watch):
            host = self.hosts.get(key)
            if host is None or host.ssh is None:
                continue
            marker = host.sandbox.state / SSH_DROP_MARKER
            if os.path.lexists(marker):
                marker.unlink(missing_ok=True)
                self.drop_watch.discard(key)
                dropped = host.ssh.drop_connections()
                log.info("emulator: ssh_drop on %s %s (%d connections)", self.kind, key, dropped)

    # -- shutdown ------------------------------------------------------------------------------
    def close_all(self) -> None:
        """Kill every process, close every server and remove every sandbox (sync: safe from
        any thread once the loop is done)."""
        for host in self.hosts.values():
            host.sandbox.kill_all()
            if host.ssh is not None:
                host.ssh.close()
            for task in host.tasks:
                task.cancel()
            host.sandbox.remove()
        self.hosts.clear()
        self.drop_watch.clear()
        self._stops.clear()
        self._destroying.clear()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def quiet(self) -> asyncio.Lock:
        """Held, no reconcile runs (the tick's neither): for a reset, which ends every machine
        of the old state and swaps the state, while no machine of the old state may boot."""
        return self._lock()

    async def end_all(self) -> None:
        """`close_all` on the loop (see `end_every_machine`), no reconcile running meanwhile."""
        async with self.quiet():
            await self.end_every_machine()

    async def end_every_machine(self) -> None:
        """Every PID 1 is ended at once and awaited without blocking the loop, then the rest is
        closed. Stops under way are cancelled first: their host's id may soon name a new
        machine, whose folders they must not remove. Call it with `quiet()` held."""
        pending = list(self._stops.values())
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        await asyncio.gather(*(host.sandbox.end() for host in list(self.hosts.values())))
        self.close_all()

    async def aclose(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._ticker
            self._ticker = None
        await self.end_all()


def control_error(status: int, msg: str) -> ApiError:
    return ApiError(status, {"success": False, "msg": msg})
