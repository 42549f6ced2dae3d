"""Reboot, recycle, change bid and execute (reference sections 6 and 7).

- `PUT /instances/reboot/{id}/`: docker stop + start, GPU kept. The container's processes end
  (its PID 1 with them), it boots again (no pull, no provisioning: `loading` for the boot time,
  billed as a stop-then-start), files kept. hosts.py sees the new `run_requested_at` of a
  serving instance and stops its container; `reconcile` starts it once it runs again.
- `PUT /instances/recycle/{id}/`: destroy and recreate the container in place: the same, but
  `Instance.container` moves on, so hosts.py removes the old container's files (and its SSH
  host key) and the next start lays a fresh one out from the image; `onstart` runs again.
- `PUT /instances/bid_price/{id}/`: the new bid applies from now (billing.py keeps the earlier
  rates); a running instance bidding below the offer's `min_bid` is outbid at once, an outbid
  one whose new bid reaches it runs again.
- `PUT /instances/command/{id}/`: on stopped instances only, runs `ls`, `rm` or `du` in a
  short-lived sandbox on the instance's disk (its own PID 1, ended after the command) and answers
  with a `result_url` (results.py) where the output appears.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
from typing import TYPE_CHECKING, Any

import orjson

from gpushop.emulator import isolation
from gpushop.emulator.api import INVALID_INSTANCE_ID, Call, Handler, Reply
from gpushop.emulator.errors import ApiError, invalid_args
from gpushop.emulator.results import ResultStore
from gpushop.emulator.sandbox import Sandbox, SandboxError
from gpushop.emulator.state import MISSING_BILLING, OUTBID_MSG, Instance

if TYPE_CHECKING:
    from gpushop.emulator.app import Emulator
    from gpushop.emulator.state import EmulatorState

log = logging.getLogger("gpushop.emulator")

INVALID_ID = {"success": False, "error": "invalid_id", "msg": "Invalid instance id."}
NO_SUCH_BID_INSTANCE = {
    "success": False,
    "error": "no_such_instance",
    "msg": "Instance with that ID does not exist.",
}
MIN_BID, MAX_BID = 0.001, 32.0
EXECUTE_ALLOWED = ("ls", "rm", "du")
MAX_COMMAND = 512
EXECUTE_TIMEOUT_S = 30.0  # real seconds a command may take before it is killed
EXECUTE_RUNNING = {
    "success": False,
    "error": "invalid_args",
    "msg": "Execute command only avail on stopped instances. "
    "Use ssh to run commands on running instances.",
}
EXECUTE_STARTED = "Command is executing, wait a few seconds and then view the result_url"
SHELL_CHARS = frozenset(";|&<>`$\n\\(){}")


class InstanceOps:
    """What these endpoints keep between calls: results and the commands under way."""

    def __init__(self) -> None:
        self.results = ResultStore()
        self.tasks: set[asyncio.Task[None]] = set()
        self._locks: dict[int, asyncio.Lock] = {}  # one command at a time per instance disk

    def lock(self, instance_id: int) -> asyncio.Lock:
        return self._locks.setdefault(instance_id, asyncio.Lock())

    async def reset(self) -> None:
        """Cancel the commands under way (each ends its own sandbox) and forget every result."""
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self.tasks.clear()
        self._locks.clear()
        self.results.clear()


# -- reboot / recycle -------------------------------------------------------------------------
def _restart(emu: Emulator, call: Call, *, fresh: bool) -> Reply:
    instance_id = call.int_param("id", INVALID_INSTANCE_ID)
    state = emu.state
    inst = state.instances.get(instance_id)
    if inst is None:
        return 200, dict(INVALID_ID)
    if inst.intended != "running":
        raise invalid_args(f"Instance {instance_id} is stopped: start it instead.")
    now = state.now()
    state.settle(inst, now)  # GPU billed up to now, as a stop; the new run bills once it runs
    inst.exited_at = None
    inst.run_requested_at = now
    inst.first_boot = False  # the machine is kept: no provisioning
    if fresh:
        inst.container += 1
    state._plan_loading(inst)
    return 200, {"success": True}


def reboot_instance(emu: Emulator, call: Call) -> Reply:
    return _restart(emu, call, fresh=False)


def recycle_instance(emu: Emulator, call: Call) -> Reply:
    return _restart(emu, call, fresh=True)


# -- change bid -------------------------------------------------------------------------------
def change_bid(emu: Emulator, call: Call) -> Reply:
    instance_id = call.int_param("id", INVALID_INSTANCE_ID)
    body = call.json_object()
    state = emu.state
    inst = state.instances.get(instance_id)
    if inst is None:
        raise ApiError(404, dict(NO_SUCH_BID_INSTANCE))
    if not inst.is_bid:
        raise invalid_args(
            f"Instance {instance_id} is on-demand: only interruptible instances have a bid."
        )
    min_bid = float(state.market.offers[inst.offer_index]["min_bid"])
    price = body.get("price")
    if price is None:  # the CLI without --price: a winning bid
        price = min_bid
    if isinstance(price, bool) or not isinstance(price, int | float):
        raise invalid_args("price must be a number")
    price = float(price)
    if price < MIN_BID or price > MAX_BID:
        bound = f">= {MIN_BID:g}" if price < MIN_BID else f"<= {MAX_BID:g}"
        raise ApiError(
            400,
            {"success": False, "error": "invalid_price", "msg": f"Please set a bid price {bound}."},
        )
    now = state.now()
    state.sync(now, force=True)  # an outbid due by now happens first
    wants_run = inst.intended == "stopped" and inst.stop_msg == OUTBID_MSG and price >= min_bid
    if wants_run and state.credit(now) <= 0:
        raise ApiError(400, dict(MISSING_BILLING))
    _set_rate(state, inst, price, now)
    if inst.intended == "running" and price < min_bid:
        state._stop(inst, now, OUTBID_MSG)  # bid below the market: outbid at once
    elif wants_run and not inst.busy:
        inst.intended = "running"  # high enough again: it runs (first boot if it never did)
        inst.run_requested_at = now
        state._plan_loading(inst)
    return 200, {"success": True}


def _set_rate(state: EmulatorState, inst: Instance, price: float, now: float) -> None:
    old = inst.price
    if price == old:
        return
    inst.usage.earlier_rates.append((now, old))  # billed at the old bid until now
    inst.usage.gpu_rate = price
    inst.price = price
    if price > old:
        state._raise_max_rate(now, price - old)


# -- execute ----------------------------------------------------------------------------------
def _command_argv(body: Any) -> list[str]:
    command = body.get("command") if isinstance(body, dict) else None
    if not isinstance(command, str) or not command.strip():
        raise invalid_args("Missing command.")
    invalid = invalid_args("Invalid command.")
    if len(command) > MAX_COMMAND or SHELL_CHARS & set(command):
        raise invalid
    try:
        argv = shlex.split(command)
    except ValueError:
        raise invalid from None
    if not argv or argv[0] not in EXECUTE_ALLOWED:
        raise invalid
    return argv


def execute_command(emu: Emulator, call: Call) -> Reply:
    instance_id = call.int_param("id", INVALID_INSTANCE_ID)
    try:
        body = orjson.loads(call.body) if call.body.strip() else {}
    except orjson.JSONDecodeError:
        raise ApiError(
            483, {"success": False, "error": "invalid_args", "msg": "Invalid json_body"}
        ) from None
    state = emu.state
    inst = state.instances.get(instance_id)
    if inst is None:
        raise ApiError(404, {"error": "not_found", "msg": "Instance not found."})
    if inst.intended != "stopped":
        raise ApiError(400, dict(EXECUTE_RUNNING))
    argv = _command_argv(body)
    runtime = emu.runtime
    folder = runtime.sandbox_path(instance_id)
    host = runtime.hosts.get(instance_id)
    if not state.config.ssh or host is None or not folder.is_dir():
        raise invalid_args("Container not ready")  # it never ran: no disk yet
    ops = emu.ops
    name, url = ops.results.new(call.base_url)
    sandbox = Sandbox(
        folder,
        isolation.for_instances(state.config.sftp),
        max_pids=state.config.max_pids,
        hide=[str(runtime.root)],
    )
    env = sandbox.environment(state.instance_environment(inst))
    task = asyncio.ensure_future(_run(ops, instance_id, sandbox, argv, env, name))
    ops.tasks.add(task)
    task.add_done_callback(ops.tasks.discard)
    return 200, {
        "success": True,
        "writeable_path": f"/var/lib/docker/volumes/C.{instance_id}/_data",
        "result_url": url,
        "msg": EXECUTE_STARTED,
    }


async def _run(
    ops: InstanceOps,
    instance_id: int,
    sandbox: Sandbox,
    argv: list[str],
    env: dict[str, str],
    name: str,
) -> None:
    """The command in its own short-lived sandbox on the disk; output (stdout and stderr) to
    the result."""
    async with ops.lock(instance_id):
        text = ""
        try:
            await sandbox.start()
            proc = await sandbox.spawn(
                argv, env, stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.STDOUT
            )
            try:
                out, _ = await asyncio.wait_for(proc.communicate(), EXECUTE_TIMEOUT_S)
                text = out.decode(errors="replace")
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                text = f"{argv[0]}: timed out after {EXECUTE_TIMEOUT_S:g} s\n"
        except (SandboxError, OSError) as exc:
            log.warning("emulator: execute on instance %d failed: %s", instance_id, exc)
            text = f"Container not ready: {exc}\n"
        finally:
            await asyncio.shield(sandbox.end())
        ops.results.put(name, text)


HANDLERS: dict[str, Handler] = {
    "reboot_instance": reboot_instance,
    "recycle_instance": recycle_instance,
    "change_bid": change_bid,
    "execute_command": execute_command,
}
