"""The TensorDock v2 provider: thin HTTP calls; the mapping lives in ``mapping``, ``query``,
``pricing`` and ``errors``.

- Offers come from ``GET /hostnodes``: one per hostnode, GPU model and GPU count that fits,
  priced from the node's per-resource prices (``pricing``), filtered and ordered locally.
- VMs are created on the offer's hostnode (``hostnode_id`` placement) with SSH forwarded from a
  free public port, named after the rental's label: names are the only tag TensorDock has.
- Stop releases the GPU (``disassociate_resources``): a stopped VM that keeps it bills the full
  rate; a released one bills storage only, and a restart may find the GPU taken.
- One token bucket for every call: the limit is 100 requests a minute per organization.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from pathlib import Path
from typing import Any

import httpx

from gpushop import __version__
from gpushop.errors import (
    AuthFailed,
    BadRequest,
    NotFound,
    OfferUnavailable,
    ProviderUnavailable,
    Unsupported,
)
from gpushop.models import (
    CreateRequest,
    Feature,
    Instance,
    InstanceStatus,
    Offer,
    OfferQuery,
    SortKey,
)
from gpushop.providers.base import CreateResult
from gpushop.providers.http import HttpClient, RetryPolicy
from gpushop.providers.ratelimit import REDIS_PREFIX, Bucket, EndpointLimit, RateLimiter
from gpushop.providers.tensordock import errors, mapping, pricing, query
from gpushop.providers.tensordock.mapping import DISPLAY_NAME, NAME

# 100 requests a minute per organization, whatever the endpoint (reference 2.1). The client paces
# itself 15 % slower than that, like the Vast.ai adapter, and a burst of 10 on top keeps any
# 60-second window under the limit (10 + 60 / 0.69 = 97 calls).
RATE_PER_MINUTE = 100
MARGIN = 1.15
BURST = 10
LIMIT = EndpointLimit(60.0 / RATE_PER_MINUTE * MARGIN, BURST)
ORG_BUCKET = "TensorDock organization"
HOSTNODES_TTL_S = 5.0  # one listing serves a search and its market context
SSHKEY = "SSHKEY"
_FEATURES = frozenset({Feature.SSH_KEYS, Feature.STOP_RELEASES_GPU})

STOP_WARNING = (
    "TensorDock bills a stopped VM in full while it keeps its GPU, so stop released it: only"
    " storage bills now, and a restart may find no GPU free on that host"
)


class OrganizationRateLimiter(RateLimiter):
    """One bucket for every endpoint: TensorDock counts all of an organization's calls."""

    def bucket(self, endpoint: str) -> Bucket | None:
        return super().bucket(ORG_BUCKET)


class TensorDockProvider:
    name = NAME
    display_name = DISPLAY_NAME
    # ``gpushop stop`` releases the GPU here (storage-only billing); the CLI warns with
    # STOP_WARNING that a restart may find none.
    stop_releases_gpu = True
    stop_warning = STOP_WARNING
    ssh_user = mapping.SSH_USER

    def __init__(
        self,
        *,
        url: str,
        api_token: str | None,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy | None = None,
        rate_limit: bool = True,
        shared_limits_dir: Path | None = None,
        redis_url: str | None = None,
        redis_prefix: str = REDIS_PREFIX,
        sizing: pricing.Sizing | None = None,
        hostnodes_ttl_s: float = HOSTNODES_TTL_S,
        rng: random.Random | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.sizing = sizing or pricing.Sizing()
        self.hostnodes_ttl_s = hostnodes_ttl_s
        self._rng = rng or random.Random()
        # one queue per server and token: the limit is the organization's, not the process's
        ident = hashlib.sha256(f"{self.url}|{api_token or ''}".encode()).hexdigest()[:16]
        if shared_limits_dir is not None:
            shared_limits_dir = shared_limits_dir / ident
        self.http = HttpClient(
            provider=NAME,
            display_name=DISPLAY_NAME,
            base_url=self.url,
            token=api_token,
            error_mapper=errors.map_error,
            retry=retry,
            transport=transport,
            user_agent=f"gpushop/{__version__}",
        )
        self.http.limiter = OrganizationRateLimiter(
            {},
            LIMIT,
            shared_limits_dir,
            redis_url=redis_url,
            redis_prefix=f"{redis_prefix}{NAME}:{ident}:",
        )
        self.http.limiter.enabled = rate_limit
        self._nodes: list[dict[str, Any]] | None = None
        self._nodes_at = 0.0
        self._nodes_lock = asyncio.Lock()
        self._key_ids: dict[str, str] = {}  # public key (type and body) -> secret id
        self._public_key: str | None = None

    @property
    def has_credentials(self) -> bool:
        return self.http.has_token

    def supports(self, feature: Feature) -> bool:
        return feature in _FEATURES

    def _require_token(self) -> None:
        if not self.http.has_token:
            raise AuthFailed(
                "TENSORDOCK_API_TOKEN is not set: this needs a TensorDock API token", provider=NAME
            )

    async def _call(
        self,
        method: str,
        path: str,
        *,
        endpoint: str,
        json: Any = None,
        idempotent: bool | None = None,
    ) -> Any:
        """One call; an error carried by an HTTP 200 body raises like an HTTP error."""
        data = await self.http.request(
            method, path, endpoint=endpoint, json=json, idempotent=idempotent
        )
        problem = errors.error_in_body(data, endpoint)
        if problem is not None:
            raise problem
        return data

    # -- discovery ------------------------------------------------------------------------

    async def hostnodes(self) -> list[dict[str, Any]]:
        """Every hostnode with its free resources and prices (briefly cached: one listing
        serves a search and the market context fetched with it)."""
        self._require_token()  # discovery needs the token too since 2026 (reference 1)
        async with self._nodes_lock:
            if self._nodes is not None and time.monotonic() - self._nodes_at < self.hostnodes_ttl_s:
                return self._nodes
            data = await self._call("GET", "/hostnodes", endpoint="GET /hostnodes")
            self._nodes = mapping.hostnode_list(data)
            self._nodes_at = time.monotonic()
            return self._nodes

    def _forget_hostnodes(self) -> None:
        self._nodes = None

    async def hostnode(self, hostnode_id: str) -> dict[str, Any]:
        """One hostnode, fresh (``OfferUnavailable`` when it is gone)."""
        self._require_token()
        errors.check_id(hostnode_id, "hostnode")
        data = await self._call("GET", f"/hostnodes/{hostnode_id}", endpoint="GET /hostnodes/{id}")
        return mapping.hostnode_body(data)

    async def ping(self) -> None:
        await self.locations()

    async def locations(self) -> list[dict[str, Any]]:
        """Locations with their deployable GPU models and per-resource prices."""
        data = await self._call("GET", "/locations", endpoint="GET /locations")
        body = data.get("data") if isinstance(data, dict) else None
        found = body.get("locations") if isinstance(body, dict) else body
        if not isinstance(found, list):
            raise ProviderUnavailable("TensorDock returned an unexpected location list")
        return [loc for loc in found if isinstance(loc, dict)]

    # -- offers ---------------------------------------------------------------------------

    async def search_offers(
        self, query_: OfferQuery, *, pool: int, sort: SortKey = SortKey.PRICE
    ) -> list[Offer]:
        if query_.interruptible:
            return []  # no spot market in v2
        offers = [
            offer
            for node in await self.hostnodes()
            for offer in mapping.offers_from_hostnode(
                node, disk_gb=query_.disk_gb, sizing=self.sizing
            )
        ]
        return query.select(offers, query_, sort=sort, limit=pool)

    async def market_offers(self, disk_gb: float) -> list[Offer]:
        """One single-GPU configuration per hostnode and GPU model: a host with eight free GPUs
        counts once in the price statistics, as one machine."""
        return [
            offer
            for node in await self.hostnodes()
            for offer in mapping.offers_from_hostnode(
                node, disk_gb=disk_gb, sizing=self.sizing, all_counts=False
            )
        ]

    # -- instances ------------------------------------------------------------------------

    async def list_instances(self, label_prefix: str | None = None) -> list[Instance]:
        """Our VMs (those whose name starts with ``label_prefix`` when given), with details."""
        self._require_token()
        data = await self._call("GET", "/instances", endpoint="GET /instances")
        items = mapping.instance_list(data)
        if label_prefix is not None:
            prefix = mapping.name_prefix(label_prefix)
            items = [i for i in items if str(i.get("name") or "").startswith(prefix)]
        found = await asyncio.gather(*(self._detailed(item) for item in items))
        return [inst for inst in found if inst is not None]

    async def _detailed(self, item: dict[str, Any]) -> Instance | None:
        """A list item with its details: the list carries ids, names and statuses only."""
        if "ipAddress" in item or "resources" in item:
            return mapping.instance_from_tensordock(item)
        inst = await self.get_instance(str(item["id"]))
        if inst is not None and inst.label is None and item.get("name"):
            inst.label = str(item["name"])
        return inst

    async def get_instance(self, instance_id: str) -> Instance | None:
        self._require_token()
        errors.check_id(instance_id)
        try:
            data = await self._call(
                "GET", f"/instances/{instance_id}", endpoint="GET /instances/{id}"
            )
        except NotFound:
            return None
        return mapping.instance_from_tensordock(mapping.instance_body(data))

    async def create_instance(self, request: CreateRequest) -> CreateResult:
        """A VM on the offer's hostnode: its GPUs, the configured vCPUs and RAM per GPU, at
        least 100 GB of storage, SSH forwarded from a free port, named after the label."""
        self._require_token()
        hostnode_id, v0_name, count = mapping.parse_offer_id(request.offer_id)
        if request.bid_price is not None:
            raise BadRequest("TensorDock has no interruptible (bid) VMs", provider=NAME)
        node = await self.hostnode(hostnode_id)
        available = node.get("available_resources") or {}
        free = {
            str(g.get("v0Name")): int(g.get("availableCount") or 0)
            for g in available.get("gpus") or []
            if isinstance(g, dict)
        }
        if free.get(v0_name, 0) < count:
            raise OfferUnavailable(
                f"hostnode {hostnode_id} has {free.get(v0_name, 0)} free {v0_name}, {count} wanted",
                provider=NAME,
            )
        res = pricing.size_vm(count, request.disk_gb, pricing.caps_from(available), self.sizing)
        if res is None:
            raise OfferUnavailable(
                f"hostnode {hostnode_id} no longer has room for {count}x {v0_name}", provider=NAME
            )
        forwards, dedicated = mapping.plan_ports(
            request.ports,
            available.get("available_ports") or [],
            bool(available.get("has_public_ip_available")),
            self._rng,
        )
        image, docker_image = mapping.vm_image(request.image)
        key_id = self._key_ids.get(self._public_key or "")
        if key_id is None and self._public_key is None:
            raise BadRequest(
                "TensorDock needs an SSH key for the VM: register one with ensure_ssh_key first",
                provider=NAME,
            )
        body = mapping.create_body(
            name=mapping.vm_name(request.label),
            hostnode_id=hostnode_id,
            v0_name=v0_name,
            res=res,
            image=image,
            forwards=forwards,
            dedicated_ip=dedicated,
            ssh_key=None if key_id else self._public_key,
            ssh_key_id=key_id,
            init=mapping.cloud_init(
                onstart=request.onstart, env=request.env, docker_image=docker_image
            ),
        )
        self._forget_hostnodes()
        data = await self._call(
            "POST", "/instances", endpoint="POST /instances", json=body, idempotent=False
        )
        instance_id, status = mapping.created_instance(data)
        if instance_id is None:
            # unclear whether it exists: the caller looks for the label before anything else
            raise ProviderUnavailable(
                "TensorDock answered the create without an instance id", provider=NAME
            )
        # the answer says "running"; a VM created stopped (or failed) will not come up by itself
        started = status is None or mapping.instance_status(status, "-") not in (
            InstanceStatus.STOPPED,
            InstanceStatus.FAILED,
        )
        return CreateResult(instance_id=instance_id, started=started)

    async def destroy_instance(self, instance_id: str) -> bool:
        """Delete the VM and its storage; False when it was already gone."""
        self._require_token()
        errors.check_id(instance_id)
        try:
            await self._call(
                "DELETE", f"/instances/{instance_id}", endpoint="DELETE /instances/{id}"
            )
        except NotFound:
            return False
        except BadRequest as exc:
            text = str(exc).lower()
            if "already" in text and ("delet" in text or "terminat" in text):
                return False  # "already terminated" (dstack treats it as gone)
            raise
        self._forget_hostnodes()
        return True

    async def set_state(self, instance_id: str, state: str) -> bool:
        """Start ("running") or stop ("stopped"). Stop releases the GPU: a TensorDock VM that
        keeps it bills the full rate while stopped. Starting a released VM needs a free GPU on
        its host again; without one it raises ``OfferUnavailable`` and the VM stays stopped."""
        self._require_token()
        errors.check_id(instance_id)
        if state == "stopped":
            try:
                await self._call(
                    "POST",
                    f"/instances/{instance_id}/stop",
                    endpoint="POST /instances/{id}/stop",
                    json={"disassociate_resources": True},
                    idempotent=True,
                )
            except BadRequest as exc:
                if not errors.already_in_state(exc):
                    raise
                inst = await self._existing(instance_id)
                if inst.status is not InstanceStatus.STOPPED:
                    raise
                # already released, or a stop under way (which this call cannot change)
                if inst.raw_status not in (mapping.RELEASED, "stopping"):
                    raise BadRequest(
                        f"TensorDock VM {instance_id} is stopped but keeps its GPU (full rate)"
                        " and TensorDock would not release it: `gpushop down` deletes it",
                        provider=NAME,
                    ) from exc
        elif state == "running":
            try:
                await self._call(
                    "POST",
                    f"/instances/{instance_id}/start",
                    endpoint="POST /instances/{id}/start",
                    json={},
                    idempotent=True,
                )
            except BadRequest as exc:
                if not errors.already_in_state(exc):
                    raise
                inst = await self._existing(instance_id)
                if inst.status not in (InstanceStatus.RUNNING, InstanceStatus.LOADING):
                    raise
        else:
            raise BadRequest(f"unknown instance state {state!r}", provider=NAME)
        self._forget_hostnodes()
        return True

    async def _existing(self, instance_id: str) -> Instance:
        inst = await self.get_instance(instance_id)
        if inst is None:
            raise NotFound(f"TensorDock VM {instance_id} does not exist", provider=NAME)
        return inst

    def watchdog_script(self, deadline: float) -> str | None:
        """None: TensorDock puts no instance-scoped key on a VM, the account's token never goes
        there, and a guest that powers itself off is only "stopped", which bills the full rate.
        The max duration is enforced by ``gpushop reconcile`` (and ``up``) instead."""
        del deadline
        return None

    def move_deadline_command(self, deadline: float) -> str | None:
        del deadline
        return None

    async def change_bid(self, instance_id: str, price: float) -> None:
        """TensorDock has no spot market: its VMs have no bid to change."""
        del instance_id, price
        raise Unsupported("TensorDock has no bids (no interruptible VMs)", provider=NAME)

    async def charges(self, start: float, end: float) -> list[dict[str, Any]]:
        """Not available (``Feature.CHARGES`` is not supported): the v2 billing paths are
        undocumented."""
        del start, end
        return []

    # -- SSH keys (secrets of type SSHKEY) ------------------------------------------------

    async def list_ssh_keys(self) -> list[dict[str, Any]]:
        """The account's stored SSH keys: ``id``, ``name``, ``type`` (no values)."""
        self._require_token()
        data = await self._call("GET", "/secrets", endpoint="GET /secrets")
        return [s for s in mapping.secret_list(data) if str(s.get("type", SSHKEY)) == SSHKEY]

    async def add_ssh_key(self, public_key: str, name: str) -> dict[str, Any]:
        self._require_token()
        body = {
            "data": {
                "type": "secret",
                "attributes": {"name": name, "type": SSHKEY, "value": public_key.strip()},
            }
        }
        data = await self._call(
            "POST", "/secrets", endpoint="POST /secrets", json=body, idempotent=True
        )
        created = data.get("data") if isinstance(data, dict) else None
        return dict(created) if isinstance(created, dict) else {}

    async def ensure_ssh_key(self, public_key: str) -> None:
        """Store the key as a secret (once: it is found again by its name, which carries its
        fingerprint) and use it for every VM this provider creates. Where the secrets API is
        missing, the key goes inline with each create instead."""
        wanted = " ".join(public_key.split()[:2])
        self._public_key = wanted
        if wanted in self._key_ids:
            return
        name = "gpushop-" + hashlib.sha256(wanted.encode()).hexdigest()[:16]
        try:
            for secret in await self.list_ssh_keys():
                if secret.get("name") == name:
                    self._key_ids[wanted] = str(secret["id"])
                    return
            created = await self.add_ssh_key(wanted, name)
        except (NotFound, BadRequest):
            return  # no secrets API here: the key goes inline
        if created.get("id"):
            self._key_ids[wanted] = str(created["id"])

    async def aclose(self) -> None:
        await self.http.aclose()
