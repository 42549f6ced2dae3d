"""The TensorDock organization's state: VMs, secrets, what the hostnodes have free, money.

Status is computed from timestamps (reference 2.6 and 5):

- create answers `running`; the detail says `running` with an empty `ipAddress` for
  `DEPLOY_S / speed`, then shows the IP (127.0.0.1) and the VM boots (SSH answers, cloud-init runs);
- start: `starting` for `START_S / speed`, then `running`;
- stop: `stopping` for `STOP_S / speed`, then `stopped` (or `stoppeddisassociated` when the stop
  released the resources).

What a VM holds on its hostnode (reference 5): from create to delete its storage and its external
ports; its GPUs, vCPUs and RAM too, except once `stoppeddisassociated`. Money (reference 2.9): the
full `rateHourly` from create to delete, running or stopped, except while `stoppeddisassociated`
(storage only), per second. A VM's rate is a piecewise-constant function of time (`rates`).
Everything runs on the server's event loop, so no locking is needed.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncssh

from gpushop.emulator.config import EmulatorConfig
from gpushop.emulator.faults import FaultError
from gpushop.emulator.tensordock.catalog import GPUS_BY_NAME, IMAGES, WINDOWS_IMAGES
from gpushop.emulator.tensordock.faults import TdHostFault
from gpushop.emulator.tensordock.market import (
    Hostnode,
    Market,
    hourly_rate,
    storage_rate,
)
from gpushop.emulator.tensordock.ports import FixedPortPool

DEPLOY_S = 40.0  # create -> the VM has booted (IP shown, SSH answers)
START_S = 20.0  # starting -> running
STOP_S = 6.0  # stopping -> stopped / stoppeddisassociated
MIN_BALANCE = 1.0  # USD needed to deploy (reference 2.5)
MIN_STORAGE_GB = 100
MAX_NAME = 255
HOLDING = frozenset({"running", "starting", "stopping", "stopped"})
SSH_HOST = "127.0.0.1"

NO_CAPACITY = "No available nodes found matching the requested resources"
LOW_BALANCE = "Insufficient balance: you need at least $1.00 in your account balance to deploy"


class TdError(Exception):
    """A refusal: HTTP `http` (default: `status`) with body {"status": status, "error": msg}."""

    def __init__(self, status: int, message: str, *, http: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.http = status if http is None else http

    @property
    def body(self) -> dict[str, Any]:
        return {"status": self.status, "error": self.message}


def bad_request(message: str) -> TdError:
    return TdError(400, message)


def no_capacity(detail: str | None = None) -> TdError:
    """Capacity failures come back as HTTP 200 with an error body (reference 2.10)."""
    return TdError(400, f"{NO_CAPACITY}: {detail}" if detail else NO_CAPACITY, http=200)


def not_found(what: str = "Instance") -> TdError:
    return TdError(404, f"{what} not found")


@dataclass
class Vm:
    id: str
    serial: int  # small number for sandbox names and logs
    name: str
    image: str
    node: Hostnode
    gpu_model: str | None
    gpu_count: int
    vcpus: int
    ram_gb: int
    storage_gb: int
    forwards: list[tuple[int, int]]  # (internal, external)
    dedicated_ip: bool
    ssh_keys: list[str]
    password: str | None
    cloud_init: dict[str, Any] | None
    created_at: float
    rate_hourly: float  # the quote (rateHourly), full resources
    desired: str  # "running" | "stopped" | "stoppeddisassociated"
    since: float  # when the current transition began
    transition_s: float  # how long it takes (wall seconds, speed applied)
    first_boot: bool = True
    has_booted: bool = False
    rates: list[tuple[float, float]] = field(default_factory=list)  # (from, USD/h) breakpoints
    deleted_at: float | None = None
    # faults
    stuck: bool = False
    offline_at: float | None = None
    reclaim_at: float | None = None
    destroy_ignores: int = 0
    lie: dict[str, Any] | None = None
    facts_version: int = 0

    @property
    def windows(self) -> bool:
        return self.image in WINDOWS_IMAGES

    @property
    def ssh_port(self) -> int | None:
        """The external port forwarded to 22 (None: no SSH from outside)."""
        return next((ext for internal, ext in self.forwards if internal == 22), None)

    @property
    def storage_rate(self) -> float:
        return storage_rate(self.node, self.storage_gb)

    def cost(self, at: float) -> float:
        """USD billed up to `at` (per second, from the rate breakpoints)."""
        total = 0.0
        for k, (start, rate) in enumerate(self.rates):
            end = self.rates[k + 1][0] if k + 1 < len(self.rates) else at
            end = min(end, at)
            if end > start:
                total += (end - start) / 3600.0 * rate
        return total

    def set_rate(self, at: float, rate: float) -> None:
        """From `at` on, bill `rate` (planned changes after `at` are dropped)."""
        self.rates = [(t, r) for t, r in self.rates if t < at]
        self.rates.append((at, rate))

    def rate_at(self, at: float) -> float:
        current = 0.0
        for start, rate in self.rates:
            if start <= at:
                current = rate
        return current


@dataclass
class Secret:
    id: str
    name: str
    type: str
    value: str


@dataclass
class _Request:
    """A validated `POST /instances` body."""

    name: str
    image: str
    vcpus: int
    ram_gb: int
    storage_gb: int
    gpu_model: str | None
    gpu_count: int
    location_id: str | None
    hostnode_id: str | None
    dedicated_ip: bool
    forwards: list[tuple[int, int]]
    ssh_key: str | None
    ssh_key_id: str | None
    password: str | None
    cloud_init: dict[str, Any] | None


class TdState:
    def __init__(self, config: EmulatorConfig, market: Market, clock: Callable[[], float]) -> None:
        self.config = config
        self.market = market
        self.clock = clock
        self.vms: dict[str, Vm] = {}
        self.ended: list[Vm] = []  # deleted VMs: their cost stays spent
        self.secrets: dict[str, Secret] = {}
        self.rng = random.Random(f"tensordock-state:{config.seed}")
        self.next_serial = 1
        self.ports = FixedPortPool(bind=config.ssh)
        self.taken: dict[tuple[str, str], int] = {}  # (hostnode, v0Name) -> GPUs others took
        self.host_faults: list[TdHostFault] = []  # waiting for creates

    def now(self) -> float:
        return self.clock()

    def close(self) -> None:
        self.ports.close()

    def is_token(self, token: str | None) -> bool:
        return token is not None and token == self.config.tensordock_token

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def vm_or_404(self, vm_id: str) -> Vm:
        vm = self.vms.get(vm_id)
        if vm is None:
            raise not_found()
        return vm

    # -- life cycle ----------------------------------------------------------------------------
    def status(self, vm: Vm, now: float) -> tuple[str, bool]:
        """(status as the API shows it, booted: the VM is up now)."""
        elapsed = now - vm.since
        if vm.desired == "running":
            never = vm.stuck or (vm.offline_at is not None and vm.offline_at <= vm.since)
            if never or elapsed < vm.transition_s:
                return ("running" if vm.first_boot else "starting"), False
            vm.has_booted = True
            return "running", True
        if elapsed < vm.transition_s:
            return "stopping", False
        return vm.desired, False

    def runs(self, vm: Vm, now: float) -> bool:
        """The VM is up and its host reachable: its processes may run, SSH may answer."""
        if vm.desired != "running" or (vm.offline_at is not None and now >= vm.offline_at):
            return False
        return self.status(vm, now)[1]

    def holds_compute(self, vm: Vm, now: float) -> bool:
        """GPUs, vCPUs and RAM are reserved for the VM (not once it is released)."""
        return self.status(vm, now)[0] in HOLDING

    def sync(self, now: float) -> None:
        """Apply what is due: reclaimed GPUs; note boots (for the IP)."""
        for vm in self.vms.values():
            if vm.reclaim_at is not None and now >= vm.reclaim_at:
                at = vm.reclaim_at
                vm.reclaim_at = None
                if self.status(vm, at)[0] in HOLDING:
                    self._reclaim(vm, at)
            elif vm.desired == "running":
                self.status(vm, now)

    def _reclaim(self, vm: Vm, at: float) -> None:
        vm.desired = "stoppeddisassociated"
        vm.since, vm.transition_s = at, 0.0
        vm.set_rate(at, vm.storage_rate)
        if vm.gpu_model is not None:  # another renter has the GPUs now
            key = (vm.node.id, vm.gpu_model)
            self.taken[key] = self.taken.get(key, 0) + vm.gpu_count

    # -- what hostnodes have free --------------------------------------------------------------
    def _used(self, node: Hostnode, now: float) -> tuple[dict[str, int], int, int, int]:
        gpus: dict[str, int] = {}
        vcpus = ram = storage = 0
        for vm in self.vms.values():
            if vm.node.id != node.id:
                continue
            storage += vm.storage_gb
            if self.holds_compute(vm, now):
                vcpus += vm.vcpus
                ram += vm.ram_gb
                if vm.gpu_model is not None:
                    gpus[vm.gpu_model] = gpus.get(vm.gpu_model, 0) + vm.gpu_count
        return gpus, vcpus, ram, storage

    def free(self, node: Hostnode, now: float) -> dict[str, Any]:
        """{"gpus": {v0Name: free}, "vcpus", "ram_gb", "storage_gb"}."""
        gpus, vcpus, ram, storage = self._used(node, now)
        return {
            "gpus": {
                g.v0_name: max(
                    0,
                    g.count - gpus.get(g.v0_name, 0) - self.taken.get((node.id, g.v0_name), 0),
                )
                for g in node.gpus
            },
            "vcpus": max(0, node.vcpus - vcpus),
            "ram_gb": max(0, node.ram_gb - ram),
            "storage_gb": max(0, node.storage_gb - storage),
        }

    def free_ports(self, node: Hostnode) -> list[int]:
        return [p for p in node.ports if not self.ports.in_use(p)]

    def _shortfall(
        self,
        node: Hostnode,
        now: float,
        model: str | None,
        count: int,
        vcpus: int,
        ram: int,
        storage: int,
        *,
        compute_held: bool = False,
        storage_held: bool = False,
    ) -> str | None:
        """Why the node cannot take this configuration now (None: it can)."""
        free = self.free(node, now)
        if model is not None:
            if node.gpu(model) is None:
                return f"hostnode {node.id} has no {model}"
            have = free["gpus"][model]
            if not compute_held and have < count:
                return f"hostnode {node.id} has {have} x {model} available, {count} requested"
            assert node.vcpus_per_gpu is not None and node.ram_per_gpu is not None
            if vcpus > node.vcpus_per_gpu * count:
                return f"at most {node.vcpus_per_gpu} vCPUs per GPU on hostnode {node.id}"
            if ram > node.ram_per_gpu * count:
                return f"at most {node.ram_per_gpu} GB of RAM per GPU on hostnode {node.id}"
        if not compute_held and (vcpus > free["vcpus"] or ram > free["ram_gb"]):
            return (
                f"hostnode {node.id} has {free['vcpus']} vCPUs and {free['ram_gb']} GB of RAM "
                "available"
            )
        if not storage_held and storage > free["storage_gb"]:
            return f"hostnode {node.id} has {free['storage_gb']} GB of storage available"
        return None

    # -- create --------------------------------------------------------------------------------
    def create(self, body: Any) -> Vm:
        """POST /instances: the new VM, or TdError (400 validation; HTTP 200 balance and
        capacity errors, as the real API answers them)."""
        req = _parse_create(body)
        if req.ssh_key_id is not None:  # a stored SSHKEY secret
            secret = self.secrets.get(req.ssh_key_id)
            if secret is None:
                raise bad_request(f"SSH key {req.ssh_key_id} not found")
            req.ssh_key = secret.value
        node: Hostnode | None = None
        if req.hostnode_id is not None:
            node = self.market.hostnode(req.hostnode_id)
            if node is None:
                raise bad_request(f"Hostnode {req.hostnode_id} not found")
            for _, ext in req.forwards:
                if ext not in node.ports or self.ports.in_use(ext):
                    raise bad_request(f"External port {ext} is not available on this hostnode")
            candidates = [node]
        else:
            assert req.location_id is not None
            location = self.market.location(req.location_id)
            if location is None:
                raise bad_request(f"Location {req.location_id} not found")
            candidates = [
                n
                for n in self.market.hostnodes
                if n.location.id == location.id
                and req.gpu_model is not None
                and n.gpu(req.gpu_model) is not None
            ]
        now = self.now()
        if self.balance(now) < MIN_BALANCE:
            raise TdError(400, LOW_BALANCE, http=200)
        faults = self._take_create_faults(candidates)
        for fault in faults:
            if fault.kind == "gpu_taken":
                for cand in candidates:
                    self._take_gpus(cand, req.gpu_model, now)
        try:
            return self._place(req, node, candidates, faults, now)
        except TdError:
            for fault in faults:  # the others wait for a create that makes a VM
                if fault.kind != "gpu_taken":
                    fault.count += 1
                    if fault not in self.host_faults:
                        self.host_faults.append(fault)
            raise

    def _place(
        self,
        req: _Request,
        node: Hostnode | None,
        candidates: list[Hostnode],
        faults: list[TdHostFault],
        now: float,
    ) -> Vm:
        chosen, reason = None, None
        for cand in candidates:
            reason = self._shortfall(
                cand,
                now,
                req.gpu_model,
                req.gpu_count,
                req.vcpus,
                req.ram_gb,
                req.storage_gb,
            )
            if reason is None and req.dedicated_ip and not cand.public_ip:
                reason = f"hostnode {cand.id} has no dedicated IP available"
            if reason is None:
                chosen = cand
                break
        if chosen is None:
            raise no_capacity(reason if node is not None else None)
        forwards = self._assign_ports(chosen, req, placed_by_node=node is not None)
        vm_id = self._uuid()
        rate = hourly_rate(
            chosen, req.gpu_model, req.gpu_count, req.vcpus, req.ram_gb, req.storage_gb
        )
        vm = Vm(
            id=vm_id,
            serial=self.next_serial,
            name=req.name,
            image=req.image,
            node=chosen,
            gpu_model=req.gpu_model,
            gpu_count=req.gpu_count,
            vcpus=req.vcpus,
            ram_gb=req.ram_gb,
            storage_gb=req.storage_gb,
            forwards=forwards,
            dedicated_ip=req.dedicated_ip,
            ssh_keys=[req.ssh_key] if req.ssh_key else [],
            password=req.password,
            cloud_init=req.cloud_init,
            created_at=now,
            rate_hourly=rate,
            desired="running",
            since=now,
            transition_s=DEPLOY_S / self.config.speed,
        )
        vm.rates.append((now, rate))
        self.next_serial += 1
        self.vms[vm.id] = vm
        for fault in faults:
            if fault.kind != "gpu_taken":
                self._apply(fault, vm, now)
        return vm

    def _assign_ports(
        self, node: Hostnode, req: _Request, *, placed_by_node: bool
    ) -> list[tuple[int, int]]:
        """External ports: the requested ones on a hostnode deploy; on a location deploy the
        requested ones when free there, else others from the node's free ports. A dedicated IP
        without a forward for 22 still gets one here (every VM shares 127.0.0.1)."""
        free = self.free_ports(node)
        forwards: list[tuple[int, int]] = []
        wanted = list(req.forwards)
        windows = req.image in WINDOWS_IMAGES
        if req.dedicated_ip and not windows and not any(i == 22 for i, _ in wanted):
            wanted.insert(0, (22, 0))
        used: set[int] = set()
        for internal, ext in wanted:
            if ext and ext in free and ext not in used:
                forwards.append((internal, ext))
                used.add(ext)
                continue
            if placed_by_node and ext:
                raise bad_request(f"External port {ext} is not available on this hostnode")
            spare = next((p for p in free if p not in used), None)
            if spare is None:
                raise no_capacity(f"hostnode {node.id} has no free ports")
            forwards.append((internal, spare))
            used.add(spare)
        ssh = next((ext for internal, ext in forwards if internal == 22), None)
        if not self.ports.claim([ext for _, ext in forwards], ssh):
            if placed_by_node:
                raise bad_request("External port is not available on this hostnode")
            raise no_capacity(f"hostnode {node.id} has no free ports")
        return forwards

    # -- start, stop, delete, modify -----------------------------------------------------------
    def start(self, vm_id: str) -> Vm:
        vm = self.vm_or_404(vm_id)
        now = self.now()
        status, _ = self.status(vm, now)
        if status not in ("stopped", "stoppeddisassociated"):
            raise bad_request("Instance must be stopped to be started")
        if self.balance(now) < MIN_BALANCE:
            raise TdError(400, LOW_BALANCE, http=200)
        if status == "stoppeddisassociated":
            reason = self._shortfall(
                vm.node,
                now,
                vm.gpu_model,
                vm.gpu_count,
                vm.vcpus,
                vm.ram_gb,
                vm.storage_gb,
                storage_held=True,
            )
            if reason is not None:
                raise bad_request(f"GPU slot expired: {reason}")
        vm.desired = "running"
        vm.since, vm.transition_s = now, START_S / self.config.speed
        vm.first_boot = False
        vm.set_rate(now, vm.rate_hourly)
        return vm

    def stop(self, vm_id: str, disassociate: bool) -> Vm:
        vm = self.vm_or_404(vm_id)
        now = self.now()
        status, _ = self.status(vm, now)
        if status in ("stoppeddisassociated", "stopping") or (
            status == "stopped" and not disassociate
        ):
            raise bad_request(f"Instance is {status}, therefore it cannot be stopped")
        vm.desired = "stoppeddisassociated" if disassociate else "stopped"
        vm.since, vm.transition_s = now, STOP_S / self.config.speed
        if disassociate:  # the GPU is released when the stop completes: storage only after
            vm.set_rate(now + vm.transition_s, vm.storage_rate)
        return vm

    def delete(self, vm_id: str) -> None:
        vm = self.vm_or_404(vm_id)
        if vm.destroy_ignores > 0:  # destroy_ignored fault: answers success, changes nothing
            vm.destroy_ignores -= 1
            return
        now = self.now()
        vm.set_rate(now, 0.0)
        vm.deleted_at = now
        del self.vms[vm.id]
        self.ended.append(vm)
        self.ports.unclaim([ext for _, ext in vm.forwards])

    def modify(self, vm_id: str, body: Any) -> Vm:
        """PUT /instances/{id}/modify: `{cpuCores, ramGb, diskGb, gpus: {gpuV0Name, count}}`
        on a stopped VM (reference 2.7)."""
        vm = self.vm_or_404(vm_id)
        now = self.now()
        status, _ = self.status(vm, now)
        if status not in ("stopped", "stoppeddisassociated"):
            raise bad_request("Instance must be stopped to be modified")
        if not isinstance(body, dict):
            raise bad_request("Request body must be a JSON object")
        unknown = sorted(set(body) - {"cpuCores", "ramGb", "diskGb", "gpus"})
        if unknown:
            raise bad_request(f"Unknown field: {unknown[0]}")
        if not body:
            raise bad_request("Nothing to modify: give cpuCores, ramGb, diskGb or gpus")
        vcpus = _int(body, "cpuCores", vm.vcpus)
        ram = _int(body, "ramGb", vm.ram_gb)
        disk = _int(body, "diskGb", vm.storage_gb)
        model, count = vm.gpu_model, vm.gpu_count
        if "gpus" in body:
            gpus = body["gpus"]
            if not isinstance(gpus, dict) or not isinstance(gpus.get("gpuV0Name"), str):
                raise bad_request("gpus must be an object with gpuV0Name and count")
            model = gpus["gpuV0Name"]
            count = _int(gpus, "count", 1)
            if model not in GPUS_BY_NAME:
                raise bad_request(f"Unknown GPU model: {model}")
            if count < 1:
                raise bad_request("GPU count must be at least 1")
        if vcpus < 2 or vcpus % 2:
            raise bad_request("cpuCores must be an even number of at least 2")
        if ram < 2 or ram % 2:
            raise bad_request("ramGb must be an even number of at least 2")
        if disk < vm.storage_gb:
            raise bad_request("Storage can never be reduced")
        if disk != vm.storage_gb and (disk < MIN_STORAGE_GB or disk % 50):
            raise bad_request("diskGb must be a multiple of 50 and at least 100")
        held = status == "stopped"  # a released VM takes its compute only when it starts
        reason = self._modify_shortfall(vm, now, held, model, count, vcpus, ram, disk)
        if reason is not None:
            raise bad_request(f"Not enough resources on the hostnode: {reason}")
        vm.vcpus, vm.ram_gb, vm.storage_gb = vcpus, ram, disk
        vm.gpu_model, vm.gpu_count = model, count if model is not None else 0
        vm.rate_hourly = hourly_rate(vm.node, model, vm.gpu_count, vcpus, ram, disk)
        vm.set_rate(now, vm.rate_hourly if held else vm.storage_rate)
        vm.facts_version += 1
        return vm

    def _modify_shortfall(
        self,
        vm: Vm,
        now: float,
        held: bool,
        model: str | None,
        count: int,
        vcpus: int,
        ram: int,
        disk: int,
    ) -> str | None:
        node = vm.node
        free = self.free(node, now)
        if model is not None:
            if node.gpu(model) is None:
                return f"hostnode {node.id} has no {model}"
            assert node.vcpus_per_gpu is not None and node.ram_per_gpu is not None
            if vcpus > node.vcpus_per_gpu * count or ram > node.ram_per_gpu * count:
                return f"at most {node.vcpus_per_gpu} vCPUs and {node.ram_per_gpu} GB per GPU"
        if held:  # only what comes on top of what the VM holds
            extra = count - (vm.gpu_count if model == vm.gpu_model else 0)
            if model is not None and extra > free["gpus"][model]:
                return f"hostnode {node.id} has {free['gpus'][model]} x {model} available"
            if vcpus - vm.vcpus > free["vcpus"] or ram - vm.ram_gb > free["ram_gb"]:
                return (
                    f"hostnode {node.id} has {free['vcpus']} vCPUs and {free['ram_gb']} GB of "
                    "RAM available"
                )
        if disk - vm.storage_gb > free["storage_gb"]:
            return f"hostnode {node.id} has {free['storage_gb']} GB of storage available"
        return None

    # -- secrets -------------------------------------------------------------------------------
    def add_secret(self, body: Any) -> Secret:
        attrs = body.get("data", {}).get("attributes") if isinstance(body, dict) else None
        if not isinstance(attrs, dict):
            raise bad_request("Body must be {data: {type: secret, attributes: {...}}}")
        name, kind, value = attrs.get("name"), attrs.get("type"), attrs.get("value")
        if not isinstance(name, str) or not name.strip():
            raise bad_request("Secret name is required")
        if kind != "SSHKEY":
            raise bad_request("Secret type must be SSHKEY")
        if not isinstance(value, str) or not _valid_key(value):
            raise bad_request("Invalid SSH public key")
        secret = Secret(self._uuid(), name, kind, value.strip())
        self.secrets[secret.id] = secret
        return secret

    def secret_or_404(self, secret_id: str) -> Secret:
        secret = self.secrets.get(secret_id)
        if secret is None:
            raise not_found("Secret")
        return secret

    # -- money ---------------------------------------------------------------------------------
    def spend(self, at: float) -> float:
        return sum(vm.cost(at) for vm in self.vms.values()) + sum(vm.cost(at) for vm in self.ended)

    def balance(self, at: float) -> float:
        return float(self.config.tensordock_balance) - self.spend(at)

    # -- faults --------------------------------------------------------------------------------
    def add_fault(self, fault: TdHostFault) -> None:
        if fault.vm_id is not None:
            vm = self.vms.get(fault.vm_id)
            if vm is None:
                raise FaultError(f"no VM {fault.vm_id}")
            now = self.now()
            if fault.kind == "gpu_taken":
                self._take_gpus(vm.node, vm.gpu_model, now)
            else:
                self._apply(fault, vm, now)
            self.sync(now)
            return
        if fault.hostnode_id is not None and self.market.hostnode(fault.hostnode_id) is None:
            raise FaultError(f"no hostnode {fault.hostnode_id}")
        self.host_faults.append(fault)

    def _take_create_faults(self, candidates: list[Hostnode]) -> list[TdHostFault]:
        taken: list[TdHostFault] = []
        for fault in list(self.host_faults):
            if any(t.kind == fault.kind for t in taken):
                continue
            if any(fault.matches(c.id) for c in candidates):
                taken.append(fault)
                fault.count -= 1
                if fault.count <= 0:
                    self.host_faults.remove(fault)
        return taken

    def _take_gpus(self, node: Hostnode, model: str | None, now: float) -> None:
        free = self.free(node, now)["gpus"]
        for name, count in free.items():
            if model is None or name == model:
                self.taken[(node.id, name)] = self.taken.get((node.id, name), 0) + count

    def _apply(self, fault: TdHostFault, vm: Vm, now: float) -> None:
        delay = fault.after_s / self.config.speed
        if fault.kind == "stuck_provisioning":
            vm.stuck = True
        elif fault.kind == "host_offline":
            vm.offline_at = now + delay
        elif fault.kind == "gpu_reclaimed":
            vm.reclaim_at = now + delay
        elif fault.kind == "destroy_ignored":
            vm.destroy_ignores += fault.times
        elif fault.kind == "lying_host":
            vm.lie = {**(vm.lie or {}), **fault.lie}
            vm.facts_version += 1

    # -- views ---------------------------------------------------------------------------------
    def vm_view(self, vm: Vm) -> dict[str, Any]:
        """The control API's view of a VM (no secrets)."""
        now = self.now()
        status, booted = self.status(vm, now)
        return {
            "id": vm.id,
            "name": vm.name,
            "image": vm.image,
            "status": status,
            "booted": booted,
            "reachable": self.runs(vm, now),
            "hostnode_id": vm.node.id,
            "location_id": vm.node.location.id,
            "country_code": vm.node.location.country_code,
            "gpu_model": vm.gpu_model,
            "gpu_count": vm.gpu_count,
            "vcpus": vm.vcpus,
            "ram_gb": vm.ram_gb,
            "storage_gb": vm.storage_gb,
            "port_forwards": [{"internal_port": i, "external_port": e} for i, e in vm.forwards],
            "ssh_host": SSH_HOST,
            "ssh_port": vm.ssh_port,
            "ssh_user": "user",
            "ssh_keys": list(vm.ssh_keys),
            "dedicated_ip": vm.dedicated_ip,
            "created_at": vm.created_at,
            "faults": {
                "stuck_provisioning": vm.stuck,
                "offline_at": vm.offline_at,
                "reclaim_at": vm.reclaim_at,
                "destroy_ignores": vm.destroy_ignores,
                "lying_host": vm.lie,
            },
            "billing": {
                "rate_hourly": vm.rate_hourly,
                "storage_rate": vm.storage_rate,
                "current_rate": vm.rate_at(now),
                "cost": vm.cost(now),
            },
        }

    def summary(self) -> dict[str, Any]:
        now = self.now()
        ended = [
            {"id": vm.id, "name": vm.name, "deleted_at": vm.deleted_at, "cost": vm.cost(now)}
            for vm in self.ended
        ]
        return {
            "balance": round(self.balance(now), 6),
            "spend": round(self.spend(now), 6),
            "hourly_cost": round(sum(vm.rate_at(now) for vm in self.vms.values()), 6),
            "hostnodes": len(self.market.hostnodes),
            "locations": len(self.market.locations),
            "gpu_names": self.market.gpu_names,
            "vms": [self.vm_view(vm) for vm in self.vms.values()],
            "deleted": ended,
            "secrets": [
                {"id": sec.id, "name": sec.name, "type": sec.type} for sec in self.secrets.values()
            ],
            "faults": [f.to_json() for f in self.host_faults],
            "taken": [
                {"hostnode_id": node, "v0Name": model, "count": n}
                for (node, model), n in self.taken.items()
            ],
        }


# -- request parsing ---------------------------------------------------------------------------
def _int(data: dict[str, Any], name: str, default: int | None = None) -> int:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad_request(f"{name} must be an integer")
    return value


def _valid_key(text: str) -> bool:
    try:
        asyncssh.import_public_key(text.strip())
    except (asyncssh.KeyImportError, ValueError):
        return False
    return True


def _parse_create(body: Any) -> _Request:
    data = body.get("data") if isinstance(body, dict) else None
    attrs = data.get("attributes") if isinstance(data, dict) else None
    if not isinstance(data, dict) or not isinstance(attrs, dict):
        raise bad_request("Body must be {data: {type: virtualmachine, attributes: {...}}}")
    for kind in (data.get("type"), attrs.get("type")):
        if kind is not None and kind != "virtualmachine":
            raise bad_request("type must be virtualmachine")
    name = attrs.get("name")
    if not isinstance(name, str) or not name.strip():
        raise bad_request("name is required")
    if len(name) > MAX_NAME:
        raise bad_request(f"name must be at most {MAX_NAME} characters")
    image = attrs.get("image")
    if not isinstance(image, str) or not image:
        raise bad_request("image is required")
    if image not in IMAGES:
        raise bad_request(f"Invalid image: {image}")
    resources = attrs.get("resources")
    if not isinstance(resources, dict):
        raise bad_request("resources is required")
    for required in ("vcpu_count", "ram_gb", "storage_gb"):
        if required not in resources:
            raise bad_request(f"resources.{required} is required")
    vcpus = _int(resources, "vcpu_count")
    ram = _int(resources, "ram_gb")
    storage = _int(resources, "storage_gb")
    if vcpus < 2 or vcpus % 2:
        raise bad_request("vcpu_count must be an even number of at least 2")
    if ram < 2:
        raise bad_request("ram_gb must be at least 2")
    if storage < MIN_STORAGE_GB:
        raise bad_request("Storage must be at least 100 GB")
    gpus = resources.get("gpus") or {}
    if not isinstance(gpus, dict):
        raise bad_request("resources.gpus must be an object keyed by GPU model")
    if len(gpus) > 1:
        raise bad_request("Only one GPU model per instance is supported")
    gpu_model: str | None = None
    gpu_count = 0
    for key, spec in gpus.items():
        if key not in GPUS_BY_NAME:
            raise bad_request(f"Unknown GPU model: {key}")
        if not isinstance(spec, dict):
            raise bad_request(f"resources.gpus.{key} must be an object with count")
        gpu_model, gpu_count = key, _int(spec, "count")
        if gpu_count < 1:
            raise bad_request("GPU count must be at least 1")
    location_id, hostnode_id = attrs.get("location_id"), attrs.get("hostnode_id")
    if (location_id is None) == (hostnode_id is None):
        raise bad_request("Specify exactly one of location_id or hostnode_id")
    for field_name, value in (("location_id", location_id), ("hostnode_id", hostnode_id)):
        if value is not None and (not isinstance(value, str) or not value):
            raise bad_request(f"{field_name} must be a string")
    if location_id is not None and gpu_model is None:
        raise bad_request("Location-based deployments require at least one GPU")
    dedicated = attrs.get("useDedicatedIp", False)
    if not isinstance(dedicated, bool):
        raise bad_request("useDedicatedIp must be a boolean")
    forwards = _parse_forwards(attrs.get("port_forwards"))
    windows = image in WINDOWS_IMAGES
    ssh_key, key_id = attrs.get("ssh_key"), attrs.get("ssh_key_id")
    password = attrs.get("password")
    if windows:
        if not isinstance(password, str) or not _strong(password):
            raise bad_request(
                "password must be at least 10 characters with an uppercase letter, a digit and "
                "a symbol"
            )
    elif (ssh_key is None) == (key_id is None):
        raise bad_request("Specify exactly one of ssh_key or ssh_key_id")
    if ssh_key is not None and (not isinstance(ssh_key, str) or not _valid_key(ssh_key)):
        raise bad_request("Invalid SSH public key")
    if key_id is not None and not isinstance(key_id, str):
        raise bad_request("ssh_key_id must be a string")
    cloud_init = attrs.get("cloud_init")
    if cloud_init is not None:
        _check_cloud_init(cloud_init)
    return _Request(
        name=name,
        image=image,
        vcpus=vcpus,
        ram_gb=ram,
        storage_gb=storage,
        gpu_model=gpu_model,
        gpu_count=gpu_count,
        location_id=location_id,
        hostnode_id=hostnode_id,
        dedicated_ip=dedicated,
        forwards=forwards,
        ssh_key=ssh_key.strip() if isinstance(ssh_key, str) else None,
        ssh_key_id=key_id,
        password=password if isinstance(password, str) else None,
        cloud_init=cloud_init,
    )


def _parse_forwards(value: Any) -> list[tuple[int, int]]:
    """`[{"internal_port": 22, "external_port": 20012}, ...]` (a `protocol` of tcp is accepted
    and ignored)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_request("port_forwards must be a list")
    forwards: list[tuple[int, int]] = []
    for item in value:
        if not isinstance(item, dict):
            raise bad_request("each port forward must be an object")
        internal, external = _int(item, "internal_port"), _int(item, "external_port")
        protocol = item.get("protocol", "tcp")
        if protocol not in ("tcp", "TCP"):
            raise bad_request("only tcp port forwards are supported")
        for port in (internal, external):
            if not 1 <= port <= 65535:
                raise bad_request(f"Invalid port: {port}")
        if any(internal == i for i, _ in forwards):
            raise bad_request(f"Duplicate internal port {internal}")
        if any(external == e for _, e in forwards):
            raise bad_request(f"Duplicate external port {external}")
        forwards.append((internal, external))
    return forwards


def _strong(password: str) -> bool:
    return (
        len(password) >= 10
        and any(c.isupper() for c in password)
        and any(c.isdigit() for c in password)
        and any(not c.isalnum() for c in password)
    )


CLOUD_INIT_LISTS = ("runcmd", "packages", "write_files")
CLOUD_INIT_FLAGS = ("package_update", "package_upgrade")


def _check_cloud_init(value: Any) -> None:
    """The structured cloud_init object (reference 2.5); other cloud-init modules are kept and
    ignored."""
    if not isinstance(value, dict):
        raise bad_request("cloud_init must be an object")
    for name in CLOUD_INIT_LISTS:
        if name in value and not isinstance(value[name], list):
            raise bad_request(f"cloud_init.{name} must be a list")
    for name in CLOUD_INIT_FLAGS:
        if name in value and not isinstance(value[name], bool):
            raise bad_request(f"cloud_init.{name} must be a boolean")
    for cmd in value.get("runcmd", []):
        if not isinstance(cmd, str | list) or (
            isinstance(cmd, list) and not all(isinstance(a, str) for a in cmd)
        ):
            raise bad_request("cloud_init.runcmd entries must be strings (or lists of strings)")
    for entry in value.get("write_files", []):
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("path"), str)
            or not isinstance(entry.get("content", ""), str)
        ):
            raise bad_request("cloud_init.write_files entries need a path and a string content")
