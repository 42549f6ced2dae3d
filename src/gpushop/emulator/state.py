"""Account state of the emulated server: instances, SSH keys, the user, offer availability.

Instance status is computed from timestamps when asked: created -> `actual_status` null for
`provision_delay_s / speed` -> "loading" while the image is pulled (its size over the host's
`inet_down`, see images.py) and the container boots -> "running". Host faults (hostfaults.py) bend
that timeline; `sync()` applies what is due at a given time (outbid, credit running out). Money
is accounted from the same timestamps (billing.py). Everything runs on the server's event loop,
so no locking is needed; the SSH side follows in hosts.py.
"""

from __future__ import annotations

import hashlib
import json
import random
import shlex
import time
from dataclasses import dataclass, field
from typing import Any

from gpushop.emulator import billing, images
from gpushop.emulator.config import EmulatorConfig
from gpushop.emulator.dsl import QueryError, Searcher, compile_query
from gpushop.emulator.errors import ApiError, invalid_args
from gpushop.emulator.faults import FaultError
from gpushop.emulator.hostfaults import OCI_ERROR, HostFault
from gpushop.emulator.market import Market, price_fields
from gpushop.emulator.ports import PORTS_PER_INSTANCE, SSH_HOST, PortPool
from gpushop.emulator.templates import TemplateBook

USER_ID = 412873
MAX_LABEL = 1024
MAX_ONSTART = 4048
DEFAULT_IMAGE = "vastai/base-image:@vastai-automatic-tag"  # OAPI's default when none is given
LOAD_LAYERS = 9
SYNC_EVERY_S = 0.05
STUCK_LAYERS = 6  # a stuck pull stops at "6 of 9 layers complete"
OUTBID_MSG = "Instance stopped: outbid by a higher priority rental"
NO_CREDIT_MSG = "Instance stopped: account credit exhausted"
BUSY_MSG = "Instance created stopped: required resources are currently unavailable"
EXITED_MSG = "Error: container exited: its main process (PID 1) ended"

# Instance fields copied from the offer it was made from (the rest are instance-only).
OFFER_FIELDS_IN_INSTANCE = (
    "bundle_id",
    "bw_nvlink",
    "compute_cap",
    "cpu_arch",
    "cpu_cores",
    "cpu_cores_effective",
    "cpu_name",
    "cpu_ram",
    "credit_discount_max",
    "cuda_max_good",
    "direct_port_count",
    "disk_bw",
    "disk_name",
    "dlperf",
    "driver_version",
    "end_date",
    "geolocation",
    "gpu_arch",
    "gpu_display_active",
    "gpu_frac",
    "gpu_lanes",
    "gpu_mem_bw",
    "gpu_name",
    "gpu_ram",
    "has_avx",
    "host_id",
    "hosting_type",
    "inet_down",
    "inet_down_cost",
    "inet_up",
    "inet_up_cost",
    "internet_down_cost_per_tb",
    "internet_up_cost_per_tb",
    "logo",
    "machine_id",
    "min_bid",
    "mobo_name",
    "num_gpus",
    "os_version",
    "pci_gen",
    "pcie_bw",
    "reliability2",
    "score",
    "static_ip",
    "storage_cost",
    "total_flops",
    "verification",
    "webpage",
)


def no_such_instance(instance_id: int | str) -> ApiError:
    return ApiError(
        404,
        {
            "success": False,
            "error": "no_such_instance",
            "msg": f"Instance {instance_id} not found.",
        },
    )


MISSING_BILLING = {
    "success": False,
    "error": "missing_billing",
    "msg": "You lack credit, see the billing page.",
}


@dataclass
class Instance:
    id: int
    offer_index: int
    offer_id: int
    machine_id: int
    created_at: float
    image: str
    runtype: str
    args: list[str]
    extra_env: list[list[str]]
    onstart: str | None
    label: str | None
    disk: float
    is_bid: bool
    price: float  # the instance's dph_base: bid price or the offer's on-demand price
    template_id: int | None
    template_hash_id: str | None
    template_name: str | None
    intended: str  # "running" | "stopped"
    run_requested_at: float  # when it was last asked to run (create or start)
    first_boot: bool  # only the first boot goes through the provisioning (null) phase
    stop_msg: str
    ssh_port: int  # reserved at create; ports["22/tcp"] and the proxy address both point here
    jupyter_token: str
    local_ip: str
    machine_dir_ssh_port: int
    usage: billing.Usage
    pull_s: float = 0.0  # simulated seconds of image pull in the current run (0: cached)
    boot_s: float = 0.0  # simulated seconds of container start after the pull
    pulled: bool = False  # the image is on the host: a restart only boots
    keys: list[dict[str, Any]] = field(default_factory=list)  # attached SSH keys
    gpu_spans: list[billing.Span] = field(default_factory=list)  # closed running periods
    # host faults (hostfaults.py)
    stuck: bool = False
    oci_msg: str | None = None
    offline_at: float | None = None
    outbid_at: float | None = None
    busy: bool = False  # created stopped by a create_stopped fault: start is refused
    destroy_ignores: int = 0
    lie: dict[str, Any] | None = None
    exited_at: float | None = None  # its container's PID 1 ended by itself (still billed)
    exit_msg: str | None = None  # status_msg while exited_at (None: EXITED_MSG)
    facts_version: int = 0  # bumped when what nvidia-smi reports changes
    # Vast injects a key limited to this instance as CONTAINER_API_KEY (docs: hello-world);
    # it may manage this instance only, so an on-instance watchdog can stop itself
    api_key: str = ""
    container: int = 0  # bumped by a recycle: a fresh container from the image (instance_ops.py)


def parse_env(value: Any) -> list[list[str]]:
    """`env` as a dict or a docker-style string (`-e K=V -p 8080:8080`) -> extra_env pairs."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [[str(k), v if isinstance(v, str) else json.dumps(v)] for k, v in value.items()]
    if not isinstance(value, str):
        raise invalid_args("env must be an object or a docker options string")
    try:
        tokens = shlex.split(value)
    except ValueError as exc:
        raise invalid_args(f"invalid env string: {exc}") from exc
    pairs: list[list[str]] = []
    i = 0
    while i < len(tokens):
        flag = tokens[i]
        if flag in ("-e", "-p", "-h", "-v", "-n") and i + 1 < len(tokens):
            arg = tokens[i + 1]
            if flag == "-e":
                key, sep, val = arg.partition("=")
                if not sep or not key:
                    raise invalid_args(f"invalid env entry: {arg}")
                pairs.append([key, val])
            elif flag in ("-p", "-v", "-n"):
                pairs.append([f"{flag} {arg}", "1"])
            else:
                pairs.append([flag, arg])
            i += 2
        else:
            raise invalid_args(f"invalid env string near {flag!r}")
    return pairs


def format_remaining(seconds: float) -> str:
    """'3 Mon 2 D 11 Hr' like the API's time_remaining."""
    seconds = max(0.0, seconds)
    months, rest = divmod(int(seconds), 30 * 86400)
    days, rest = divmod(rest, 86400)
    hours = rest // 3600
    parts = []
    if months:
        parts.append(f"{months} Mon")
    if days or months:
        parts.append(f"{days} D")
    parts.append(f"{hours} Hr")
    return " ".join(parts)


class EmulatorState:
    """Everything a reset puts back: market availability, instances, keys, counters."""

    def __init__(self, config: EmulatorConfig, market: Market | None = None) -> None:
        self.config = config
        if market is None or market.seed != config.seed or len(market) != config.offers:
            market = Market.generate(config.offers, config.seed)
        self.market = market
        self.searcher = Searcher(market)
        self.available = bytearray(b"\x01" * len(market))  # 0 while an instance holds the offer
        self.instances: dict[int, Instance] = {}
        self.ssh_keys: list[dict[str, Any]] = []
        self.rng = random.Random(config.seed + 7919)
        self.next_instance_id = 32_000_001
        self.next_key_id = 52_001
        self.next_attachment_id = 7_730_001
        self.ports = PortPool(bind=config.ssh)
        self.host_faults: list[HostFault] = []  # pending create-targeted host faults
        self.ended: list[billing.Usage] = []  # destroyed instances, for charges and spend
        self.ended_spans: dict[int, list[billing.Span]] = {}
        self.ended_cost = 0.0
        self.now_offset = 0.0  # simulated time ahead of the wall clock (control API "clock")
        self.cache: set[tuple[int, str]] = set()  # (machine_id, repository) pulled this session
        self.taken: set[int] = set()  # offer indexes another renter took (offer_taken)
        self.templates = TemplateBook(USER_ID)
        self.last_sync = time.time()
        self.exhausted = config.credit <= 0  # credit reached 0 (as of the last full sync)
        self._last_full = -1.0  # time.monotonic() of the last full sync
        # Credit cannot reach 0 before `_safe_until` (the credit at `_ref_at` spent at the
        # highest possible rate `_max_rate`, every instance running): sync skips the O(n)
        # spend computation until then.
        self._ref_at, self._ref_credit, self._max_rate = self.last_sync, config.credit, 0.0

    # -- helpers ---------------------------------------------------------------------------
    def now(self) -> float:
        return time.time() + self.now_offset

    def close(self) -> None:
        self.ports.close()

    def is_key(self, key: str | None) -> bool:
        return key is not None and key == self.config.api_key

    def is_instance_key(self, key: str | None, instance_id: str | None) -> bool:
        """The instance-scoped key of that very instance (CONTAINER_API_KEY)."""
        if key is None or instance_id is None or not instance_id.isdigit():
            return False
        inst = self.instances.get(int(instance_id))
        return inst is not None and bool(inst.api_key) and key == inst.api_key

    def rented_machines(self) -> frozenset[int]:
        return frozenset(inst.machine_id for inst in self.instances.values())

    def _hex(self, n: int) -> str:
        return "".join(self.rng.choice("0123456789abcdef") for _ in range(n))

    def instance_or_404(self, instance_id: int) -> Instance:
        inst = self.instances.get(instance_id)
        if inst is None:
            raise no_such_instance(instance_id)
        return inst

    # -- user --------------------------------------------------------------------------------
    def user(self) -> dict[str, Any]:
        spend = self.spend(self.now())
        credit = float(self.config.credit) - spend
        first_key = self.ssh_keys[0]["public_key"] if self.ssh_keys else None
        return {
            "api_key": self.config.api_key,
            "autobill_amount": 0.0,
            "autobill_threshold": 0.0,
            "balance": 0.0,
            "balance_threshold": 0.0,
            "balance_threshold_enabled": False,
            "billaddress_city": "",
            "billaddress_country": "",
            "billaddress_line1": "",
            "billaddress_line2": "",
            "billaddress_taxinfo": "",
            "billaddress_zip": "",
            "billed_expected": 0.0,
            "billed_verified": 0.0,
            "billing_creditonly": 0,
            "can_pay": credit > 0,
            "created_at": 1731412800,
            "credit": round(credit, 4),
            "email": "emulator@example.com",
            "email_verified": True,
            "fullname": "Emulator User",
            "got_signup_credit": 1,
            "has_billing": True,
            "has_payout": False,
            "has_rented": bool(self.instances),
            "host_agreement_accepted": False,
            "host_only": False,
            "id": USER_ID,
            "key_id": 902341,
            "last4": "4242",
            "password_resettable": True,
            "paid_expected": 0.0,
            "paid_verified": 0.0,
            "payout_enabled": False,
            "paypal_email": None,
            "phone_number": None,
            "ssh_key": first_key,
            "total_spend": round(spend, 4),
            "username": "emulator",
            "wise_email": None,
        }

    # -- SSH keys ----------------------------------------------------------------------------
    @staticmethod
    def _check_key(value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise ApiError(
                400, {"success": False, "error": "no_ssh_key", "msg": "No ssh key provided"}
            )
        text = value.strip()
        parts = text.split()
        if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-", "sk-")):
            raise invalid_args("Invalid SSH public key.")
        return text

    def add_key(self, value: Any) -> dict[str, Any]:
        text = self._check_key(value)
        key = {
            "id": self.next_key_id,
            "user_id": USER_ID,
            "public_key": text,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "deleted_at": None,
        }
        self.next_key_id += 1
        self.ssh_keys.append(key)
        for inst in self.instances.values():  # OAPI: added to all current instances
            self._attach(inst, text)
        return key

    def find_key(self, key_id: int) -> dict[str, Any]:
        for key in self.ssh_keys:
            if key["id"] == key_id:
                return key
        raise ApiError(
            404,
            {"success": False, "error": "no_such_ssh_key", "msg": f"SSH key {key_id} not found."},
        )

    def update_key(self, key_id: int, value: Any) -> dict[str, Any]:
        key = self.find_key(key_id)
        key["public_key"] = self._check_key(value)
        return key

    def delete_key(self, key_id: int) -> None:
        self.ssh_keys.remove(self.find_key(key_id))

    def _attach(self, inst: Instance, text: str) -> dict[str, Any] | None:
        if any(k["public_key"] == text for k in inst.keys):
            return None
        account = next((k["id"] for k in self.ssh_keys if k["public_key"] == text), None)
        attachment = {
            "id": self.next_attachment_id,
            "instance_id": inst.id,
            "ssh_key_id": account,
            "public_key": text,
        }
        self.next_attachment_id += 1
        inst.keys.append(attachment)
        return attachment

    def attach_key(self, instance_id: int, value: Any) -> dict[str, Any]:
        inst = self.instance_or_404(instance_id)
        text = self._check_key(value)
        attachment = self._attach(inst, text)
        if attachment is None:
            return {"success": False, "msg": "SSH key already associated with this instance."}
        return {"success": True, "msg": "SSH key added to instance.", "key": json.dumps(attachment)}

    def detach_key(self, instance_id: int, key_id: int) -> dict[str, Any]:
        inst = self.instances.get(instance_id)
        if inst is None:
            return {
                "success": False,
                "error": "no_such_instance",
                "msg": f"Instance {instance_id} not found.",
            }
        for attachment in inst.keys:
            if key_id in (attachment["id"], attachment["ssh_key_id"]):
                inst.keys.remove(attachment)
                return {"success": True, "msg": "SSH key removed from instance."}
        return {
            "success": False,
            "error": "no_such_ssh_key",
            "msg": f"SSH key {key_id} is not attached to instance {instance_id}.",
        }

    # -- instances ---------------------------------------------------------------------------
    def create(self, offer_id: int, body: dict[str, Any]) -> dict[str, Any]:
        """PUT /asks/{id}/ -> the success body; raises ApiError for every refusal."""
        index = self.market.index_by_id.get(offer_id)
        not_found = ApiError(
            404,
            {
                "success": False,
                "error": "no_such_ask",
                "msg": f"No ask by id {offer_id} is available.",
                "ask_id": offer_id,
            },
        )
        if index is None or not self.available[index]:
            raise not_found
        offer = self.market.full(index)
        if not offer["rentable"]:
            raise not_found
        template = self._template_of(body, offer_id)
        req = _CreateRequest.parse(body, offer_id, template)
        if req.disk > offer["disk_space"]:
            raise invalid_args(
                f"Requested disk {req.disk:g} GB exceeds the {offer['disk_space']:g} GB available "
                f"on offer {offer_id}.",
                ask_id=offer_id,
            )
        now = self.now()
        if self.exhausted:  # (from the last sync: creates stay O(1) on big accounts)
            raise ApiError(400, dict(MISSING_BILLING))
        is_bid = req.price is not None
        faults = self._take_create_faults(offer_id, offer["machine_id"], is_bid)
        if any(f.kind == "offer_taken" for f in faults):
            self.available[index] = 0  # another renter got it between search and create
            self.taken.add(index)
            for fault in faults:  # the others wait for the next create
                if fault.kind != "offer_taken":
                    fault.count += 1
                    if fault not in self.host_faults:
                        self.host_faults.append(fault)
            raise not_found
        if req.extra_filters:
            self._check_filters(index, offer_id, req.extra_filters)
        outbid = req.price is not None and req.price < offer["min_bid"]
        if outbid and req.cancel_unavail:
            raise ApiError(
                410,
                {
                    "success": False,
                    "error": "no_such_ask",
                    "msg": f"Instance type {offer_id} is no longer available.",
                    "ask_id": offer_id,
                },
            )
        busy = any(f.kind == "create_stopped" for f in faults)
        price = req.price if req.price is not None else offer["_od_base"]
        inst = Instance(
            id=self.next_instance_id,
            offer_index=index,
            offer_id=offer_id,
            machine_id=offer["machine_id"],
            created_at=now,
            image=req.image,
            runtype=req.runtype,
            args=req.args,
            extra_env=req.extra_env,
            onstart=req.onstart,
            label=req.label,
            disk=req.disk,
            is_bid=is_bid,
            price=price,
            template_id=req.template_id,
            template_hash_id=req.template_hash_id,
            template_name=template["name"] if template is not None else None,
            intended="stopped" if outbid or busy or req.target_state == "stopped" else "running",
            run_requested_at=now,
            first_boot=True,
            stop_msg=OUTBID_MSG if outbid else BUSY_MSG if busy else "exited: stopped by user",
            ssh_port=self.ports.reserve(),
            jupyter_token=self._hex(64),
            local_ip="10." + ".".join(str(self.rng.randrange(1, 255)) for _ in range(3)),
            machine_dir_ssh_port=50_000 + self.rng.randrange(6_000),
            usage=billing.Usage(
                instance_id=self.next_instance_id,
                label=req.label,
                template_id=req.template_id,
                gpu_rate=price,
                storage_cost=float(offer["storage_cost"]),
                disk_gb=req.disk,
                created_at=now,
            ),
            busy=busy,
        )
        self._plan_loading(inst)
        self.next_instance_id += 1
        self.available[index] = 0
        for key in self.ssh_keys:  # new instances get the account's keys
            self._attach(inst, key["public_key"])
        self.instances[inst.id] = inst
        self._raise_max_rate(now, inst.usage.gpu_rate + inst.usage.disk_rate)
        for fault in faults:
            if fault.kind != "create_stopped":
                self._apply(fault, inst, now)
        inst.api_key = self._hex(64)
        if req.template_id is not None:
            self.templates.record_use(req.template_id, now)
        return {
            # created but stopped (bid below min_bid, or busy): HTTP 200 with success false
            "success": not (outbid or busy),
            "new_contract": inst.id,
            "instance_api_key": inst.api_key,
        }

    def _template_of(self, body: dict[str, Any], offer_id: int) -> dict[str, Any] | None:
        """The template a create names (`template_hash_id` wins over `template_id`)."""
        hash_id, template_id = body.get("template_hash_id"), body.get("template_id")
        if hash_id is None and template_id is None:
            return None
        if hash_id is not None and not isinstance(hash_id, str):
            raise invalid_args("template_hash_id must be a string", ask_id=offer_id)
        if template_id is not None and (
            isinstance(template_id, bool) or not isinstance(template_id, int)
        ):
            raise invalid_args("template_id must be an integer", ask_id=offer_id)
        row = self.templates.resolve(hash_id, template_id)
        if row is None:
            what = f"hash_id {hash_id}" if hash_id else f"id {template_id}"
            raise invalid_args(f"No template found with {what}.", ask_id=offer_id)
        return row

    def _check_filters(self, index: int, offer_id: int, filters: dict[str, Any]) -> None:
        """A template's extra_filters hold for the offer, or the create is refused (one field
        at a time, so the message names the one that fails)."""
        rented = self.rented_machines()
        for name, spec in filters.items():
            try:
                query = compile_query({name: spec, "id": {"eq": offer_id}, "allocated_storage": 0})
            except QueryError as exc:
                raise invalid_args(f"extra_filters: {exc.msg}", ask_id=offer_id) from None
            hits = self.searcher.search(
                query, now=self.now(), available=self.available, rented=rented
            )
            if not hits:
                raise invalid_args(
                    f"Offer {offer_id} does not meet the template's extra_filters: "
                    f"{_condition_text(name, spec)}.",
                    ask_id=offer_id,
                )

    # -- templates ---------------------------------------------------------------------------
    def create_template(self, body: dict[str, Any]) -> dict[str, Any]:
        parse_env(body.get("env"))  # a docker options string the creates can use
        template = self.templates.create(body, self.now())
        row = template.row
        return {
            "success": True,
            "msg": f"Template Created Successfully! New Template ID: {row['id']}",
            "template": {"name": row["name"], "id": row["id"], "hash_id": row["hash_id"]},
        }

    def update_template(self, body: dict[str, Any]) -> dict[str, Any]:
        if "env" in body:
            parse_env(body["env"])
        return {"success": True, "template": dict(self.templates.update(body).row)}

    def delete_template(self, body: dict[str, Any]) -> dict[str, Any]:
        template_id = self.templates.delete(body)
        return {"success": True, "msg": f"Template {template_id} Deleted Successfully"}

    def _plan_loading(self, inst: Instance) -> None:
        """Pull and boot times of the run that starts now (simulated seconds)."""
        if self.config.loading_delay_s is not None:  # a fixed loading time, shown as a pull
            inst.pull_s, inst.boot_s = float(self.config.loading_delay_s), 0.0
            return
        repo = images.repository(inst.image)
        cached = (
            inst.pulled
            or (inst.machine_id, repo) in self.cache
            or images.precached(inst.machine_id, inst.image, self.config.seed)
        )
        inet_down = float(self.market.full(inst.offer_index)["inet_down"])
        inst.pull_s = 0.0 if cached else images.pull_seconds(inst.image, inet_down)
        inst.boot_s = float(self.config.boot_delay_s)

    def change(self, instance_id: int, body: dict[str, Any]) -> dict[str, Any]:
        """PUT /instances/{id}/ with state and/or label."""
        inst = self.instance_or_404(instance_id)
        if "label" in body:
            label = body["label"]
            if label is not None and not isinstance(label, str):
                raise invalid_args("label must be a string")
            if label is not None and len(label) > MAX_LABEL:
                raise ApiError(400, {"error": "invalid_args", "msg": "label_too_long"})
            inst.label = label
            inst.usage.label = label
        if "state" in body:
            state = body["state"]
            if state not in ("running", "stopped"):
                raise ApiError(400, {"success": False, "msg": "Invalid target state"})
            now = self.now()
            if state == "stopped" and inst.intended != "stopped":
                self._stop(inst, now, "exited: stopped by user")
            elif state == "running" and (inst.intended != "running" or inst.exited_at is not None):
                if self.credit(now) <= 0:
                    raise ApiError(400, dict(MISSING_BILLING))
                low_bid = (
                    inst.is_bid and inst.price < self.market.offers[inst.offer_index]["min_bid"]
                )
                if low_bid or inst.busy:
                    return {
                        "success": False,
                        "error": "resources_unavailable",
                        "msg": "Required resources are currently unavailable, state change queued.",
                    }
                if inst.exited_at is not None:  # a restart: the exited run was billed
                    self.settle(inst, now)
                    inst.exited_at = None
                inst.intended = "running"
                inst.run_requested_at = now
                inst.first_boot = False
                self._plan_loading(inst)
        elif "label" not in body:
            raise invalid_args("Nothing to change: give state or label.")
        return {"success": True}

    def _stop(self, inst: Instance, at: float, msg: str) -> None:
        self.settle(inst, at)
        inst.intended = "stopped"
        inst.stop_msg = msg
        inst.exited_at = None

    def container_exited(self, inst: Instance, at: float, msg: str | None = None) -> None:
        """Its PID 1 ended by itself: `exited` until a start or stop; the machine stays
        reserved, so the GPU is still billed (as on Vast, where only a stop ends that)."""
        if inst.exited_at is None:
            inst.exited_at = at
            inst.exit_msg = msg  # runtype args: its entrypoint's exit code (entrypoint.py)

    def destroy(self, instance_id: int) -> None:
        inst = self.instance_or_404(instance_id)
        if inst.destroy_ignores > 0:  # destroy_ignored fault: answers success, changes nothing
            inst.destroy_ignores -= 1
            return
        now = self.now()
        self.settle(inst, now)
        inst.usage.ended_at = now
        del self.instances[instance_id]
        self.ended.append(inst.usage)
        self.ended_spans[inst.id] = list(inst.gpu_spans)
        self.ended_cost += billing.cost(inst.usage, inst.gpu_spans, 0.0, now, now)
        self.ports.release(inst.ssh_port)
        if inst.offer_index not in self.taken:
            self.available[inst.offer_index] = 1

    # -- life cycle --------------------------------------------------------------------------
    def phases(self, inst: Instance) -> tuple[float, float, float]:
        """(provisioning, pull, boot) wall-clock seconds of the current run (speed applied)."""
        speed = self.config.speed
        provision = self.config.provision_delay_s / speed if inst.first_boot else 0.0
        return provision, inst.pull_s / speed, inst.boot_s / speed

    def running_from(self, inst: Instance) -> float | None:
        """When the current run reaches `running` (None: it never will)."""
        if inst.intended != "running" or inst.stuck or inst.oci_msg is not None:
            return None
        provision, pull, boot = self.phases(inst)
        return inst.run_requested_at + provision + pull + boot

    def open_span(self, inst: Instance, at: float) -> billing.Span | None:
        """The running period in progress at `at` (GPU billed), if any."""
        start = self.running_from(inst)
        if start is None:
            return None
        end = at if inst.offline_at is None else min(at, inst.offline_at)
        return (start, end) if end > start else None

    def spans(self, inst: Instance, at: float) -> list[billing.Span]:
        current = self.open_span(inst, at)
        return [*inst.gpu_spans, current] if current else list(inst.gpu_spans)

    def settle(self, inst: Instance, at: float) -> None:
        """Close the running period at `at` (before the instance stops or goes)."""
        current = self.open_span(inst, at)
        if current is not None:
            inst.gpu_spans.append(current)
        if inst.intended == "running":
            start = self.running_from(inst)
            if start is not None and start <= at:
                inst.pulled = True

    def status(self, inst: Instance, now: float) -> tuple[str | None, str | None, float | None]:
        """(actual_status, status_msg, running since) at `now`."""
        if inst.offline_at is not None and now >= inst.offline_at:
            _, msg, _ = self._status(inst, inst.offline_at)
            return "offline", msg, None
        return self._status(inst, now)

    def _status(self, inst: Instance, now: float) -> tuple[str | None, str | None, float | None]:
        if inst.intended == "stopped":
            return "exited", inst.stop_msg, None
        if inst.exited_at is not None and now >= inst.exited_at:
            return "exited", inst.exit_msg or EXITED_MSG, None
        provision, pull, boot = self.phases(inst)
        elapsed = now - inst.run_requested_at
        if elapsed < provision:
            return None, None, None
        loading = elapsed - provision
        if inst.stuck or loading < pull + boot:
            return "loading", self._loading_msg(inst, loading, pull), None
        if inst.oci_msg is not None:
            return "created", inst.oci_msg, None
        image = inst.image.replace(":", "_")
        return (
            "running",
            f"success, running {image}/ssh",
            inst.run_requested_at + provision + pull + boot,
        )

    def _loading_msg(self, inst: Instance, loading: float, pull: float) -> str:
        if pull <= 0:
            return f"Status: Image is up to date for {inst.image}, starting container"
        done = min(LOAD_LAYERS, int(LOAD_LAYERS * loading / pull))
        if inst.stuck:
            done = min(done, STUCK_LAYERS)
        elif done >= LOAD_LAYERS and self.config.loading_delay_s is None:
            return f"Status: Downloaded newer image for {inst.image}, starting container"
        total = images.image_gb(inst.image)
        return (
            f"Pulling image {inst.image}: {done} of {LOAD_LAYERS} layers complete "
            f"({total * done / LOAD_LAYERS:.1f}/{total:.1f} GB)"
        )

    def sync(self, now: float, *, force: bool = False) -> None:
        """Apply what is due by `now`: outbid events, images cached on hosts, and the billing
        rule that running instances stop when the credit reaches 0.

        It walks every instance, so without `force` it runs at most every SYNC_EVERY_S of real
        time: an event may show up to that late, but it is back-dated to when it was due (the
        stop time of an outbid or out-of-credit instance, hence its bill, stays exact)."""
        tick = time.monotonic()
        if not force and tick - self._last_full < SYNC_EVERY_S:
            return
        self._last_full = tick
        for inst in self.instances.values():
            if inst.intended == "running":
                if inst.outbid_at is not None and inst.outbid_at <= now:
                    self._stop(inst, inst.outbid_at, OUTBID_MSG)
                    inst.outbid_at = None
                    continue
                start = self.running_from(inst)
                if start is not None and start <= now:
                    inst.pulled = True
                    self.cache.add((inst.machine_id, images.repository(inst.image)))
        if self._credit_may_be_out(now) and self.credit(now) <= 0:
            # Stop at the moment the credit crossed 0 (spend only grows: bisect).
            lo, hi = min(self.last_sync, now), now
            if self.credit(lo) > 0:
                for _ in range(50):
                    mid = (lo + hi) / 2
                    if self.credit(mid) > 0:
                        lo = mid
                    else:
                        hi = mid
            for inst in self.instances.values():
                if inst.intended == "running":
                    self._stop(inst, hi, NO_CREDIT_MSG)
        if self._credit_may_be_out(now):
            credit = self.credit(now)
            self.exhausted = credit <= 0
            self._ref_at, self._ref_credit = now, credit
        self.last_sync = max(self.last_sync, now)

    def _raise_max_rate(self, now: float, extra: float) -> None:
        self._ref_credit -= self._max_rate * max(0.0, now - self._ref_at)
        self._ref_at = max(self._ref_at, now)
        self._max_rate += extra

    def _credit_may_be_out(self, now: float) -> bool:
        if self._ref_credit <= 0:
            return True
        if self._max_rate <= 0:
            return False
        return now >= self._ref_at + self._ref_credit / self._max_rate

    # -- money -------------------------------------------------------------------------------
    def spend(self, at: float) -> float:
        """USD spent by the account up to `at` (destroyed instances included)."""
        live = sum(
            billing.cost(inst.usage, self.spans(inst, at), 0.0, at, at)
            for inst in self.instances.values()
        )
        return self.ended_cost + live

    def credit(self, at: float) -> float:
        return float(self.config.credit) - self.spend(at)

    def charges(self, start: float, end: float) -> list[dict[str, Any]]:
        """/charges/ results for [start, end], oldest first."""
        now = self.now()
        found: list[dict[str, Any]] = []
        for usage in self.ended:
            entry = billing.charge(usage, self.ended_spans[usage.instance_id], start, end, now)
            if entry is not None:
                found.append(entry)
        for inst in self.instances.values():
            entry = billing.charge(inst.usage, self.spans(inst, now), start, end, now)
            if entry is not None:
                found.append(entry)
        found.sort(key=lambda e: (e["start"], e["source"]))
        return found

    # -- host faults -------------------------------------------------------------------------
    def add_host_fault(self, fault: HostFault) -> None:
        """Apply at once (instance target, offer_taken on an offer) or queue for creates."""
        now = self.now()
        if fault.instance_id is not None:
            inst = self.instances.get(fault.instance_id)
            if inst is None:
                raise FaultError(f"no instance {fault.instance_id}")
            if fault.kind == "create_stopped":
                raise FaultError("create_stopped applies to creates, not to an instance")
            if fault.kind == "outbid" and not inst.is_bid:
                raise FaultError("outbid applies to interruptible (bid) instances only")
            start = self.running_from(inst)
            if fault.kind in ("stuck_loading", "oci_error") and start is not None and start <= now:
                raise FaultError(f"{fault.kind} needs an instance that is not running yet")
            self._apply(fault, inst, now)
            self.sync(now, force=True)
            return
        if fault.kind == "offer_taken" and fault.offer_id is not None:
            index = self.market.index_by_id.get(fault.offer_id)
            if index is None:
                raise FaultError(f"no offer {fault.offer_id}")
            self.available[index] = 0
            self.taken.add(index)
            return
        self.host_faults.append(fault)

    def _take_create_faults(self, offer_id: int, machine_id: int, is_bid: bool) -> list[HostFault]:
        """The pending faults this create consumes (one of each kind at most)."""
        taken: list[HostFault] = []
        for fault in list(self.host_faults):
            if any(t.kind == fault.kind for t in taken):
                continue
            if fault.matches(offer_id, machine_id, is_bid):
                taken.append(fault)
                fault.count -= 1
                if fault.count <= 0:
                    self.host_faults.remove(fault)
        return taken

    def _apply(self, fault: HostFault, inst: Instance, now: float) -> None:
        delay = fault.after_s / self.config.speed
        if fault.kind == "stuck_loading":
            inst.stuck = True
        elif fault.kind == "oci_error":
            inst.oci_msg = fault.message or OCI_ERROR
        elif fault.kind == "offline":  # GPU billing ends there (open_span clips at offline_at)
            inst.offline_at = now + delay
        elif fault.kind == "outbid":
            inst.outbid_at = now + delay
        elif fault.kind == "destroy_ignored":
            inst.destroy_ignores += fault.times
        elif fault.kind == "lying_host":
            inst.lie = {**(inst.lie or {}), **fault.lie}
            inst.facts_version += 1

    # -- views -------------------------------------------------------------------------------
    def instance_environment(self, inst: Instance) -> dict[str, str]:
        """The container's environment: `extra_env` (not the `-p` port entries) and Vast's."""
        env = {k: v for k, v in inst.extra_env if not k.startswith("-")}
        env.update(
            {
                "VAST_CONTAINERLABEL": f"C.{inst.id}",
                "CONTAINER_ID": str(inst.id),
                "CONTAINER_API_KEY": inst.api_key,
                "PUBLIC_IPADDR": SSH_HOST,
                "EMULATOR_DISK_GB": f"{inst.disk:g}",
                # for simulated programs (ai-toolkit): delays divided by this, download speed
                "EMULATOR_SPEED": f"{self.config.speed:g}",
                "EMULATOR_INET_DOWN": f"{self.market.full(inst.offer_index)['inet_down']:g}",
            }
        )
        for name, number in port_map(inst).items():  # as Vast: VAST_TCP_PORT_8080=<host port>
            port, _, proto = name.partition("/")
            env[f"VAST_{proto.upper()}_PORT_{port}"] = str(number)
        return env

    def instance_view(self, instance_id: int) -> dict[str, Any] | None:
        """Control-side view of one instance: status, faults, money (hosts.py adds SSH)."""
        inst = self.instances.get(instance_id)
        if inst is None:
            return None
        now = self.now()
        actual, msg, since = self.status(inst, now)
        spans = self.spans(inst, now)
        gpu_s = billing.gpu_seconds(spans, 0.0, now)
        disk_s = now - inst.created_at
        return {
            **_control_core(inst, actual, msg),
            "running_since": since,
            "ssh_host": SSH_HOST,
            "env": self.instance_environment(inst),
            "pull_s": inst.pull_s,
            "boot_s": inst.boot_s,
            "image_gb": images.image_gb(inst.image),
            "faults": {
                "stuck_loading": inst.stuck,
                "oci_error": inst.oci_msg is not None,
                "offline_at": inst.offline_at,
                "outbid_at": inst.outbid_at,
                "destroy_ignores": inst.destroy_ignores,
                "create_stopped": inst.busy,
                "lying_host": inst.lie,
            },
            "billing": {
                "gpu_rate": inst.usage.gpu_rate,
                "disk_rate": inst.usage.disk_rate,
                "gpu_hours": gpu_s / billing.HOUR,
                "disk_hours": disk_s / billing.HOUR,
                "cost": billing.cost(inst.usage, spans, 0.0, now, now),
            },
        }

    def row(self, inst: Instance, now: float) -> dict[str, Any]:
        """The instance object exactly as `GET /instances/{id}/` shows it (all 107 fields)."""
        offer = self.market.full(inst.offer_index)
        actual, msg, running_since = self.status(inst, now)
        running = actual == "running"
        stopped = inst.intended == "stopped"
        prices = price_fields(
            offer, inst.disk, "bid" if inst.is_bid else "on-demand", base=inst.price
        )
        ports: dict[str, list[dict[str, str]]] = {}
        if running:
            for name, number in port_map(inst).items():
                host_port = str(number)
                ports[name] = [
                    {"HostIp": "0.0.0.0", "HostPort": host_port},
                    {"HostIp": "::", "HostPort": host_port},
                ]
        uptime = round((now - running_since) / 60.0, 1) if running_since is not None else None
        duration = round(offer["end_date"] - now, 1)
        row: dict[str, Any] = {name: offer[name] for name in OFFER_FIELDS_IN_INSTANCE}
        row.update(
            {
                "actual_status": actual,
                "client_run_time": 1.1,
                "country_code": None,
                "cpu_util": 12.5 if running else None,
                "credit_balance": None,
                "credit_discount": None,
                "cur_state": "stopped" if stopped else "running",
                "direct_port_end": -1 if stopped else inst.ssh_port + PORTS_PER_INSTANCE - 1,
                "direct_port_start": -1 if stopped else inst.ssh_port,
                "disk_space": inst.disk,
                "disk_usage": round(min(inst.disk, 2.5 + inst.disk * 0.1), 1) if running else -1,
                "disk_util": round(min(1.0, (2.5 + inst.disk * 0.1) / inst.disk), 3)
                if running
                else -1,
                "dlperf_per_dphtotal": prices["dlperf_per_dphtotal"],
                "dph_base": prices["dph_base"],
                "dph_total": prices["dph_total"],
                "duration": duration,
                "external": False,
                "extra_env": [list(pair) for pair in inst.extra_env],
                "flops_per_dphtotal": prices["flops_per_dphtotal"],
                "gpu_temp": 45.0 if running else None,
                "gpu_totalram": offer["gpu_total_ram"],
                "gpu_util": 0.0 if running else None,
                "host_run_time": 2592000.0,
                "id": inst.id,
                "image_args": list(inst.args),
                "image_runtype": inst.runtype,
                "image_uuid": inst.image,
                "inet_down_billed": 0.0 if running else None,
                "inet_up_billed": 0.0 if running else None,
                "instance": prices["instance"],
                "intended_status": inst.intended,
                "is_bid": inst.is_bid,
                "jupyter_token": inst.jupyter_token,
                "label": inst.label,
                "local_ipaddrs": f"{inst.local_ip} 172.17.0.1 \n",
                "machine_dir_ssh_port": inst.machine_dir_ssh_port,
                "mem_limit": round(offer["cpu_ram"] * offer["gpu_frac"] / 1000.0, 1)
                if running
                else None,
                "mem_usage": 1.2 if running else None,
                "next_state": "stopped" if stopped else "running",
                "onstart": inst.onstart,
                "ports": ports,
                "public_ipaddr": "127.0.0.1",
                "rentable": True,
                "search": prices["search"],
                "ssh_host": "127.0.0.1",
                "ssh_idx": "0",
                "ssh_port": inst.ssh_port,
                "start_date": inst.created_at,
                "status_msg": msg,
                "storage_total_cost": prices["storage_total_cost"],
                "template_hash_id": inst.template_hash_id,
                "template_id": inst.template_id,
                "template_name": inst.template_name,
                "time_remaining": format_remaining(duration) if running else "",
                "time_remaining_isbid": format_remaining(duration) if running else "",
                "uptime_mins": uptime,
                "vmem_usage": 0.5 if running else None,
                "volume_info": [],
                "vram_costperhour": prices["vram_costperhour"],
            }
        )
        return row

    def summary(self) -> dict[str, Any]:
        """Control-API view of the state (no secrets)."""
        now = self.now()
        instances = []
        for inst in self.instances.values():
            actual, msg, _ = self.status(inst, now)
            instances.append(
                {
                    **_control_core(inst, actual, msg),
                    "dph_base": inst.price,
                    "disk": inst.disk,
                    "start_date": inst.created_at,
                }
            )
        return {
            "offers": len(self.market),
            "offers_available": sum(self.available),
            "instances": instances,
            "ssh_keys": list(self.ssh_keys),
            "user": {"id": USER_ID, "credit": round(self.credit(now), 4)},
        }


def _control_core(inst: Instance, actual: str | None, msg: str | None) -> dict[str, Any]:
    """The fields every control-API view of an instance shows."""
    return {
        "id": inst.id,
        "offer_id": inst.offer_id,
        "machine_id": inst.machine_id,
        "label": inst.label,
        "image": inst.image,
        "actual_status": actual,
        "intended_status": inst.intended,
        "status_msg": msg,
        "is_bid": inst.is_bid,
        "ssh_port": inst.ssh_port,
        "ssh_keys": [k["public_key"] for k in inst.keys],
    }


_OP_TEXT = {"eq": "==", "neq": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def _condition_text(name: str, spec: Any) -> str:
    """{"gte": 24000} on gpu_ram -> "gpu_ram >= 24000" (the CLI's query syntax)."""
    if not isinstance(spec, dict):
        return f"{name} == {spec}"
    return " and ".join(f"{name} {_OP_TEXT.get(op, op)} {value}" for op, value in spec.items())


def port_map(inst: Instance) -> dict[str, int]:
    """Container port ("22/tcp", "8080/tcp", ...) -> host port. Only 22/tcp is served (SSH);
    the `-p` ports are numbered after it, as the API shows them, but nothing listens there."""
    names = ["22/tcp"]
    for key, _ in inst.extra_env:
        if key.startswith("-p "):
            inner = key[3:].strip().rsplit(":", 1)[-1]
            proto = "udp" if inner.endswith("/udp") else "tcp"
            names.append(f"{inner.split('/')[0]}/{proto}")
    return {name: inst.ssh_port + k for k, name in enumerate(dict.fromkeys(names))}


def identity_hash(key: str) -> str:
    """A stable, non-reversible stand-in for a key (rate-limit buckets never hold the key)."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass
class _CreateRequest:
    image: str
    runtype: str
    args: list[str]
    extra_env: list[list[str]]
    onstart: str | None
    label: str | None
    disk: float
    price: float | None
    template_id: int | None
    template_hash_id: str | None
    cancel_unavail: bool
    target_state: str
    extra_filters: dict[str, Any]

    @classmethod
    def parse(
        cls, body: dict[str, Any], offer_id: int, template: dict[str, Any] | None = None
    ) -> _CreateRequest:
        """The body, on top of `template` when one is named: the request's scalars win when
        given (not null), `env` and `extra_filters` are merged by key (reference 4)."""

        def opt_str(name: str, limit: int | None = None) -> str | None:
            value = body.get(name)
            if value is None:
                return None
            if not isinstance(value, str):
                raise invalid_args(f"{name} must be a string", ask_id=offer_id)
            if limit is not None and len(value) > limit:
                raise invalid_args(f"{name} is longer than {limit} characters", ask_id=offer_id)
            return value

        tpl = template or {}
        default_image = f"{tpl['image']}:{tpl['tag']}" if template else DEFAULT_IMAGE
        image = opt_str("image") or default_image
        if not image.strip() or any(c.isspace() for c in image):
            raise invalid_args("image must be a docker image name", ask_id=offer_id)
        disk_raw = body.get("disk")
        if disk_raw is None:
            disk_raw = tpl.get("recommended_disk_space") or 10.0
        if isinstance(disk_raw, bool) or not isinstance(disk_raw, int | float) or disk_raw <= 0:
            raise invalid_args("disk must be a positive number of GB", ask_id=offer_id)
        price_raw = body.get("price")
        price: float | None = None
        if price_raw is not None:
            if isinstance(price_raw, bool) or not isinstance(price_raw, int | float):
                raise invalid_args("price must be a number", ask_id=offer_id)
            if price_raw < 0.001:
                raise ApiError(
                    400,
                    {
                        "success": False,
                        "error": "invalid_price",
                        "msg": "Please set a bid price >= 0.001.",
                        "ask_id": offer_id,
                    },
                )
            if price_raw > 128:
                raise ApiError(
                    400,
                    {
                        "success": False,
                        "error": "invalid_price",
                        "msg": "Please set a bid price <= 128.",
                        "ask_id": offer_id,
                    },
                )
            price = float(price_raw)
        runtype = opt_str("runtype") or tpl.get("runtype")
        args = body.get("args")
        if args is not None and (
            not isinstance(args, list) or not all(isinstance(a, str) for a in args)
        ):
            raise invalid_args("args must be a list of strings", ask_id=offer_id)
        target_state = body.get("target_state") or "running"
        if target_state not in ("running", "stopped"):
            raise invalid_args("target_state must be running or stopped", ask_id=offer_id)
        label = opt_str("label")
        if label is not None and len(label) > MAX_LABEL:
            raise ApiError(400, {"error": "invalid_args", "msg": "label_too_long"})
        env = dict((k, v) for k, v in parse_env(tpl.get("env")))
        env.update((k, v) for k, v in parse_env(body.get("env")))
        filters = body.get("extra_filters") or {}
        if not isinstance(filters, dict):
            raise invalid_args("extra_filters must be an object", ask_id=offer_id)
        onstart = opt_str("onstart", MAX_ONSTART)
        return cls(
            image=image,
            runtype=runtype or ("args" if args else "ssh"),
            args=list(args or []),
            extra_env=[[k, v] for k, v in env.items()],
            onstart=onstart if onstart is not None else (tpl.get("onstart") or None),
            label=label,
            disk=float(disk_raw),
            price=price,
            template_id=tpl.get("id"),
            template_hash_id=tpl.get("hash_id"),
            cancel_unavail=bool(body.get("cancel_unavail", False)),
            target_state=target_state,
            extra_filters={**(tpl.get("extra_filters") or {}), **filters},
        )
