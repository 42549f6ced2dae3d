"""The Vast.ai provider: thin HTTP calls; the mapping lives in ``query`` and ``mapping``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx

from gpushop import __version__
from gpushop.errors import AuthFailed, BadRequest, NotFound, ProviderUnavailable
from gpushop.models import CreateRequest, Feature, Instance, Offer, OfferQuery, SortKey
from gpushop.providers.base import CreateResult
from gpushop.providers.http import HttpClient, RetryPolicy
from gpushop.providers.ratelimit import REDIS_PREFIX, EndpointLimit
from gpushop.providers.vastai import mapping, query, watchdog
from gpushop.providers.vastai.errors import map_error

# The reference's thresholds (seconds between calls per key) with a small burst; the client
# paces itself 15 % slower than the server, so clock drift and scheduling jitter do not turn an
# on-time call into a 429.
THRESHOLDS: dict[str, tuple[float, int]] = {
    "POST /bundles/": (2.0, 2),
    "GET /bundles/": (1.25, 1),
    "PUT /asks/{id}/": (4.5, 1),
    "GET /api/v1/instances/": (1.0, 2),
    "GET /instances/{id}/": (2.0, 2),
    "PUT /instances/{id}/": (1.0, 2),
    "PUT /instances/bid_price/{id}/": (5.5, 1),
    "DELETE /instances/{id}/": (3.0, 2),
    "GET /ssh/": (1.0, 2),
    "POST /ssh/": (1.0, 2),
    "GET /users/current/": (1.0, 2),
}
MARGIN = 1.15
MAX_ONSTART = 4048  # characters Vast.ai accepts in `onstart` (reference: OAPI quirks)
LIMITS = {ep: EndpointLimit(t * MARGIN, burst) for ep, (t, burst) in THRESHOLDS.items()}
DEFAULT_LIMIT = EndpointLimit(1.0 * MARGIN, 2)
_FEATURES = frozenset(
    {
        Feature.INTERRUPTIBLE,
        Feature.LABELS,
        Feature.TEMPLATES,
        Feature.SSH_KEYS,
        Feature.CHARGES,
        Feature.CONTAINERS,
    }
)


class VastAIProvider:
    name = "vastai"
    display_name = "Vast.ai"
    ssh_user = "root"

    def __init__(
        self,
        *,
        url: str,
        api_key: str | None,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy | None = None,
        rate_limit: bool = True,
        shared_limits_dir: Path | None = None,
        redis_url: str | None = None,
        redis_prefix: str = REDIS_PREFIX,
    ) -> None:
        self.url = url.rstrip("/")
        # one queue per server and key: the provider limits per key, not per process or host
        ident = hashlib.sha256(f"{self.url}|{api_key or ''}".encode()).hexdigest()[:16]
        if shared_limits_dir is not None:
            shared_limits_dir = shared_limits_dir / ident
        self.http = HttpClient(
            provider=self.name,
            display_name=self.display_name,
            base_url=self.url + "/api/v0",
            public_url=self.url,
            token=api_key,
            error_mapper=map_error,
            limits=LIMITS,
            default_limit=DEFAULT_LIMIT,
            retry=retry,
            transport=transport,
            user_agent=f"gpushop/{__version__}",
            shared_limits_dir=shared_limits_dir,
            redis_url=redis_url,
            redis_prefix=f"{redis_prefix}{self.name}:{ident}:",
        )
        self.http.limiter.enabled = rate_limit

    @property
    def has_credentials(self) -> bool:
        return self.http.has_token

    def supports(self, feature: Feature) -> bool:
        return feature in _FEATURES

    def _require_key(self) -> None:
        if not self.http.has_token:
            raise AuthFailed("VASTAI_API_KEY is not set: this needs a Vast.ai API key")

    # -- offers ---------------------------------------------------------------------------

    async def search_offers(
        self, query_: OfferQuery, *, pool: int, sort: SortKey = SortKey.PRICE
    ) -> list[Offer]:
        body = query.build_search_query(query_, sort=sort, limit=pool)
        # a POST, but a read: safe to retry like a GET
        data = await self.http.request(
            "POST", "/bundles/", endpoint="POST /bundles/", json=body, idempotent=True
        )
        return [
            mapping.offer_from_vast(raw, disk_gb=query_.disk_gb, interruptible=query_.interruptible)
            for raw in _offers(data)
        ]

    async def market_offers(self, disk_gb: float) -> list[Offer]:
        params = {
            "q": json.dumps(query.build_market_query(disk_gb)),
            "select_cols": json.dumps(list(query.MARKET_COLUMNS)),
        }
        data = await self.http.request("GET", "/bundles/", endpoint="GET /bundles/", params=params)
        return [
            mapping.offer_from_vast(raw, disk_gb=disk_gb, interruptible=False)
            for raw in _offers(data)
        ]

    # -- instances ------------------------------------------------------------------------

    async def list_instances(self, label_prefix: str | None = None) -> list[Instance]:
        self._require_key()
        out: list[Instance] = []
        token: str | None = None
        for _ in range(10_000):  # bounded: a server that never ends paging cannot hang us
            params = {
                "select_filters": "{}",
                "order_by": json.dumps([{"col": "id", "dir": "asc"}]),
                "limit": "25",
            }
            if token:
                params["after_token"] = token
            data = await self.http.request(
                "GET",
                self.url + "/api/v1/instances/",
                endpoint="GET /api/v1/instances/",
                params=params,
            )
            for raw in (data or {}).get("instances") or []:
                inst = mapping.instance_from_vast(raw)
                if label_prefix is None or (inst.label or "").startswith(label_prefix):
                    out.append(inst)
            token = (data or {}).get("next_token")
            if not token:
                break
        return out

    async def get_instance(self, instance_id: str) -> Instance | None:
        self._require_key()
        data = await self.http.request(
            "GET", f"/instances/{int(instance_id)}/", endpoint="GET /instances/{id}/"
        )
        raw = (data or {}).get("instances")
        return mapping.instance_from_vast(raw) if isinstance(raw, dict) else None

    async def create_instance(self, request: CreateRequest) -> CreateResult:
        self._require_key()
        if request.onstart is not None and len(request.onstart) > MAX_ONSTART:
            raise BadRequest(
                f"the instance's start script is {len(request.onstart)} characters (the "
                f"watchdog's included); Vast.ai takes at most {MAX_ONSTART}: shorten --onstart "
                "or put it in a file you upload",
                provider=self.name,
            )
        env: dict[str, str] = dict(request.env)
        for port in request.ports:
            env[f"-p {port}:{port}"] = "1"
        body: dict[str, Any] = {
            "client_id": "me",
            "image": request.image,
            "disk": request.disk_gb,
            "env": env,
            "label": request.label,
            "onstart": request.onstart,
            "runtype": "ssh_direc ssh_proxy",
            "price": request.bid_price,
            "cancel_unavail": request.bid_price is None,
        }
        if request.template_hash:
            body["template_hash_id"] = request.template_hash
        data = await self.http.request(
            "PUT",
            f"/asks/{int(request.offer_id)}/",
            endpoint="PUT /asks/{id}/",
            json=body,
            idempotent=False,
        )
        contract = (data or {}).get("new_contract")
        if contract is None:
            raise BadRequest(
                f"Vast.ai did not create an instance: {(data or {}).get('msg', 'no reason')}",
                provider=self.name,
            )
        return CreateResult(instance_id=str(contract), started=bool(data.get("success")))

    async def destroy_instance(self, instance_id: str) -> bool:
        self._require_key()
        try:
            await self.http.request(
                "DELETE",
                f"/instances/{int(instance_id)}/",
                endpoint="DELETE /instances/{id}/",
                json={},
            )
        except NotFound:
            return False
        return True

    async def set_state(self, instance_id: str, state: str) -> bool:
        """Start ("running") or stop ("stopped"). False when Vast queued it because the GPUs
        are taken (HTTP 200 ``resources_unavailable``): the instance is not running yet."""
        self._require_key()
        data = await self.http.request(
            "PUT",
            f"/instances/{int(instance_id)}/",
            endpoint="PUT /instances/{id}/",
            json={"state": state},
        )
        return bool((data or {}).get("success"))

    async def change_bid(self, instance_id: str, price: float) -> None:
        """The new bid applies from now; an outbid instance whose bid reaches the offer's
        ``min_bid`` runs again. 404 ``no_such_instance`` → NotFound, 400 ``invalid_price`` /
        ``invalid_args`` (on-demand) → BadRequest, ``missing_billing`` → InsufficientCredit."""
        self._require_key()
        await self.http.request(
            "PUT",
            f"/instances/bid_price/{int(instance_id)}/",
            endpoint="PUT /instances/bid_price/{id}/",
            json={"client_id": "me", "price": round(float(price), 4)},
        )

    async def set_label(self, instance_id: str, label: str) -> None:
        self._require_key()
        await self.http.request(
            "PUT",
            f"/instances/{int(instance_id)}/",
            endpoint="PUT /instances/{id}/",
            json={"label": label},
        )

    async def list_ssh_keys(self) -> list[dict[str, Any]]:
        self._require_key()
        data = await self.http.request("GET", "/ssh/", endpoint="GET /ssh/")
        keys = data if isinstance(data, list) else (data or {}).get("keys") or []
        # older answers name the field "key", newer ones "public_key"
        return [{**k, "public_key": k.get("public_key") or k.get("key")} for k in keys]

    async def add_ssh_key(self, public_key: str) -> dict[str, Any]:
        self._require_key()
        data = await self.http.request(
            "POST", "/ssh/", endpoint="POST /ssh/", json={"ssh_key": public_key}, idempotent=True
        )
        key = (data or {}).get("key")
        return key if isinstance(key, dict) else {}

    def watchdog_script(self, deadline: float) -> str | None:
        """The on-instance watchdog (watchdog.py): Vast injects a key limited to the instance
        itself (``CONTAINER_API_KEY``), enough to stop it and nothing else of the account."""
        return watchdog.start_command(self.url, deadline)

    def move_deadline_command(self, deadline: float) -> str | None:
        return watchdog.move_deadline_command(deadline)

    async def ensure_ssh_key(self, public_key: str) -> None:
        """Account keys are installed on every new instance (and, per the docs, current ones)."""
        wanted = " ".join(public_key.split()[:2])
        for key in await self.list_ssh_keys():
            if " ".join(str(key.get("public_key") or "").split()[:2]) == wanted:
                return
        await self.add_ssh_key(public_key)

    async def attach_ssh_key(self, instance_id: str, public_key: str) -> dict[str, Any]:
        self._require_key()
        data = await self.http.request(
            "POST",
            f"/instances/{int(instance_id)}/ssh/",
            endpoint="POST /instances/{id}/ssh/",
            json={"ssh_key": public_key},
            idempotent=True,
        )
        key = (data or {}).get("key")
        if isinstance(key, str):  # Vast sends the key object JSON-encoded in a string
            try:
                decoded = json.loads(key)
            except ValueError:
                return {}
            return decoded if isinstance(decoded, dict) else {}
        return key if isinstance(key, dict) else {}

    async def detach_ssh_key(self, instance_id: str, key_id: str) -> bool:
        self._require_key()
        data = await self.http.request(
            "DELETE",
            f"/instances/{int(instance_id)}/ssh/{int(key_id)}/",
            endpoint="DELETE /instances/{id}/ssh/{key_id}/",
            json={},
        )
        return bool((data or {}).get("success"))

    async def search_templates(self, filters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        params = {"select_cols": '["*"]', "select_filters": json.dumps(filters or {})}
        data = await self.http.request(
            "GET", "/template/", endpoint="GET /template/", params=params
        )
        if not (data or {}).get("success"):
            return []  # "No templates found" comes as success: false
        templates = data.get("templates") or []
        return [t for t in templates if isinstance(t, dict)]

    async def charges(self, start: float, end: float) -> list[dict[str, Any]]:
        """What Vast billed per instance between two epochs (paged)."""
        self._require_key()
        out: list[dict[str, Any]] = []
        token: str | None = None
        for _ in range(1000):
            params = {
                "select_filters": json.dumps({"day": {"gte": start, "lte": end}}),
                "format": "table",
                "limit": "500",
            }
            if token:
                params["after_token"] = token
            data = await self.http.request(
                "GET", "/charges/", endpoint="GET /charges/", params=params
            )
            out.extend(r for r in (data or {}).get("results") or [] if isinstance(r, dict))
            token = (data or {}).get("next_token")
            if not token:
                break
        return out

    async def gpu_names(self) -> list[str]:
        data = await self.http.request(
            "GET", "/gpu_names/unique/", endpoint="GET /gpu_names/unique/", auth=False
        )
        return [str(n) for n in (data or {}).get("gpu_names") or []]

    async def current_user(self) -> dict[str, Any]:
        self._require_key()
        data = await self.http.request("GET", "/users/current/", endpoint="GET /users/current/")
        if not isinstance(data, dict):
            raise ProviderUnavailable("Vast.ai returned an unexpected user object")
        data.pop("api_key", None)  # never keep the key around, even in memory dumps
        return data

    async def ping(self) -> None:
        if self.has_credentials:
            await self.current_user()
        else:
            await self.gpu_names()  # searches need no key

    async def aclose(self) -> None:
        await self.http.aclose()


def _offers(data: Any) -> list[dict[str, Any]]:
    if isinstance(data, dict) and isinstance(data.get("offers"), list):
        return [o for o in data["offers"] if isinstance(o, dict) and "id" in o]
    raise ProviderUnavailable("Vast.ai returned an unexpected search answer")
