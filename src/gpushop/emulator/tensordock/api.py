"""TensorDock API v2 over HTTP, under `PREFIX` of the emulator's server, and its control API.

Requests go: endpoint faults (shared with the Vast side: `POST /_emulator/faults` with an
endpoint such as "POST /tensordock/api/v2/instances", or "*"), the rate limit (100 per minute per
token), Bearer auth (401 `{"status": 401, "error": "Unauthorized"}`; an anonymous
`GET /locations` answers an empty list, as the real one has since mid-2026), then the handler.
Every answer is JSON with `Content-Type: application/json`; refusals are `{"status", "error"}`,
capacity and balance refusals of a create with HTTP 200 (reference 2.10).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gpushop.emulator.config import EmulatorConfig
from gpushop.emulator.errors import ApiError
from gpushop.emulator.faults import FaultBook, FaultError
from gpushop.emulator.routes import Route, Router
from gpushop.emulator.state import identity_hash
from gpushop.emulator.tensordock import wire
from gpushop.emulator.tensordock.faults import TdHostFault
from gpushop.emulator.tensordock.market import Market, generate
from gpushop.emulator.tensordock.ratelimit import WindowLimiter
from gpushop.emulator.tensordock.runtime import VmRuntime
from gpushop.emulator.tensordock.state import TdError, TdState, bad_request, not_found

PREFIX = "/tensordock/api/v2"

ROUTES: tuple[Route, ...] = tuple(
    Route(method, PREFIX + template, name, auth)
    for method, template, name, auth in (
        ("GET", "/locations", "locations", "anonymous_empty"),
        ("GET", "/hostnodes", "hostnodes", "required"),
        ("GET", "/hostnodes/{id}", "hostnode", "required"),
        ("POST", "/instances", "create", "required"),
        ("GET", "/instances", "list", "required"),
        ("GET", "/instances/{id}", "get", "required"),
        ("POST", "/instances/{id}/start", "start", "required"),
        ("POST", "/instances/{id}/stop", "stop", "required"),
        ("PUT", "/instances/{id}/modify", "modify", "required"),
        ("DELETE", "/instances/{id}", "delete", "required"),
        ("GET", "/secrets", "secrets", "required"),
        ("POST", "/secrets", "secret_create", "required"),
        ("GET", "/secrets/{id}", "secret", "required"),
        ("DELETE", "/secrets/{id}", "secret_delete", "required"),
    )
)

UNAUTHORIZED = {"status": 401, "error": "Unauthorized"}
RATE_LIMITED = {"status": 429, "error": "Too many requests"}
_REASONS = {502: "Bad Gateway", 503: "Service Temporarily Unavailable", 504: "Gateway Time-out"}
_PROXY_PAGE = (
    "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {reason}</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
    "</body>\r\n</html>\r\n"
)

Reply = tuple[int, Any]
Logger = Callable[..., None]  # (method, endpoint, path, query, body, status, auth)


def respond(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    if isinstance(body, str):
        return Response(body.encode(), status, headers, media_type="text/html")
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def fault_body(status: int) -> Any:
    """What TensorDock (or Cloudflare in front of it) answers with an injected status."""
    if status in _REASONS:
        return _PROXY_PAGE.format(status=status, reason=_REASONS[status])
    if status == 429:
        return dict(RATE_LIMITED)
    if status == 401:
        return dict(UNAUTHORIZED)
    if status >= 500:
        return {"status": status, "error": "Internal server error"}
    return {"status": status, "error": f"Emulated HTTP {status}"}


class TensorDock:
    """The TensorDock side of one emulator: market, organization state, VMs' machines."""

    def __init__(self, config: EmulatorConfig, clock: Callable[[], float]) -> None:
        self.market: Market = generate(config.seed)
        self.clock = clock
        self.state = TdState(config, self.market, clock)
        self.runtime = VmRuntime()
        self.router = Router(ROUTES)
        self.limiter = WindowLimiter()

    def reset(self, config: EmulatorConfig) -> None:
        self.runtime.close_all()
        self.state.close()
        if self.market.seed != config.seed:
            self.market = generate(config.seed)
        self.state = TdState(config, self.market, self.clock)
        self.limiter.reset()

    def close(self) -> None:
        self.runtime.close_all()
        self.state.close()

    @staticmethod
    def serves(path: str) -> bool:
        return path == PREFIX or path.startswith(PREFIX + "/")

    # -- HTTP ----------------------------------------------------------------------------------
    async def handle(
        self,
        request: Request,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        faults: FaultBook,
        counts: Counter[str],
        log: Logger,
        hold: Callable[[float], Awaitable[None]],
        broken: Callable[[Response, Send], Awaitable[None]],
    ) -> None:
        state = self.state
        state.sync(state.now())
        await self.runtime.reconcile(state)
        method, path = request.method, scope["path"]
        route, params, known = self.router.match(method, path)
        body = await request.body()
        token = _bearer(request)
        auth = "bearer" if token is not None else None
        if route is None:
            status = 405 if known else 404
            error = "Method not allowed" if known else "Not found"
            log(method, f"{method} {path}", path, request.query_params, body, status, auth)
            await respond(status, {"status": status, "error": error})(scope, receive, send)
            return
        endpoint = route.endpoint
        counts[endpoint] += 1
        fault = faults.take(endpoint)
        drop = False
        if fault is not None:
            if fault.kind in ("status", "quota"):
                status = fault.status or 500
                payload = fault.body if fault.body is not None else fault_body(status)
                log(method, endpoint, path, request.query_params, body, status, auth)
                await respond(status, payload, dict(fault.headers))(scope, receive, send)
                return
            if fault.kind == "latency":
                await hold(fault.latency_s)
            drop = fault.kind == "drop"
        status, payload, headers = self._dispatch(route, params, request, body, token)
        if drop and fault is not None and fault.latency_s > 0:
            await hold(fault.latency_s)
        if method != "GET":  # stop/delete: the VM's processes are dead before the answer
            await self.runtime.stop_unwanted(self.state)
        # A VM this answer shows booted (its IP) already accepts SSH: the handler's clock ran
        # after the reconcile above.
        await self.runtime.reconcile(self.state)
        log(method, endpoint, path, request.query_params, body, status, auth)
        response = respond(status, payload, headers)
        if drop:
            await broken(response, send)
        else:
            await response(scope, receive, send)

    def _dispatch(
        self, route: Route, params: dict[str, str], request: Request, body: bytes, token: str | None
    ) -> tuple[int, Any, dict[str, str] | None]:
        state = self.state
        headers: dict[str, str] | None = None
        if state.config.rate_limit:
            client = request.client.host if request.client else "unknown"
            identity = f"ip:{client}" if token is None else identity_hash(token)
            allowed, headers = self.limiter.check(identity, time.monotonic(), time.time())
            if not allowed:
                return 429, dict(RATE_LIMITED), headers
        if not state.is_token(token):
            if route.auth == "anonymous_empty" and token is None:
                return 200, {"data": {"locations": []}}, headers
            return 401, dict(UNAUTHORIZED), headers
        try:
            status, payload = getattr(self, "_" + route.name)(params, request, body)
        except TdError as exc:
            return exc.http, exc.body, headers
        return status, payload, headers

    # -- handlers ------------------------------------------------------------------------------
    def _locations(self, params: dict[str, str], request: Request, body: bytes) -> Reply:
        now = self.state.now()
        locations = [wire.location(self.state, loc, now) for loc in self.market.locations]
        return 200, {"data": {"locations": [loc for loc in locations if loc["gpus"]]}}

    def _hostnodes(self, params: dict[str, str], request: Request, body: bytes) -> Reply:
        """Filters the clients send (reference 2.4), as exact matches; others are ignored."""
        state, now = self.state, self.state.now()
        query = request.query_params
        rows = [wire.hostnode(state, node, now) for node in self.market.hostnodes]
        location = query.get("location") or query.get("location_id")
        if location:
            wanted = location.lower()
            rows = [
                r
                for r in rows
                if wanted in (r["location_id"], r["location"]["city"].lower())
                or wanted == r["location"]["country"].lower()
            ]
        gpu = query.get("gpu") or query.get("gpu_model") or query.get("gpu_name")
        if gpu:
            rows = [
                r
                for r in rows
                if any(
                    g["v0Name"] == gpu and g["availableCount"] > 0
                    for g in r["available_resources"]["gpus"]
                )
            ]
        if query.get("status") == "available":
            rows = [
                r
                for r in rows
                if any(g["availableCount"] > 0 for g in r["available_resources"]["gpus"])
            ]
        for name, key in (("minVcpu", "vcpu_count"), ("minRamGb", "ram_gb")):
            raw = query.get(name)
            if raw is not None:
                try:
                    minimum = float(raw)
                except ValueError:
                    raise bad_request(f"{name} must be a number") from None
                rows = [r for r in rows if r["available_resources"][key] >= minimum]
        return 200, {"data": {"hostnodes": rows}}

    def _hostnode(self, params: dict[str, str], request: Request, body: bytes) -> Reply:
        node = self.market.hostnode(params["id"])
        if node is None:
            raise not_found("Hostnode")
        return 200, {"data": wire.hostnode(self.state, node, self.state.now())}

    def _create(self, params: dict[str, str], request: Request, body: bytes) -> Reply:
        vm = self.state.create(_json(body))
        return 200, wire.created(vm)

    def _list(self, params: dict[str, str], request: Request, body: bytes) -> Reply:
        return 200, wire.instances(self.state, self.state.now())

    def _get(self, params: dict[str, str], request: Request, body: bytes) -> Reply:
        vm = self.state.vm_or_404(params["id"])
        return 200, wire.instance(self.state, vm, self.state.now())

    def _start(self, params: dict[str, str], request: Request, body: bytes) -> Reply:
        vm = self.state.start(params["id"])
        return 200, wire.action(vm, "starting")

    def _stop(self, params: dict[str, str], request: Request, body: bytes) -> Reply:
        """`disassociate_resources` (true releases the GPU; reference 2.7/2.9) in the JSON body,
        in `data.attributes`, or as a query parameter."""
        data = _json(body) if body.strip() else {}
        flag: Any = request.query_params.get("disassociate_resources")
        if isinstance(data, dict):
            attrs = data.get("data", {}).get("attributes", {}) if "data" in data else data
            if isinstance(attrs, dict) and "disassociate_resources" in attrs:
                flag = attrs["disassociate_resources"]
        vm = self.state.stop(params["id"], _truthy(flag))
        return 200, wire.action(vm, "stopping")

    def _modify(self, params: dict[str, str], request: Request, body: bytes) -> Reply:
        self.state.modify(params["id"], _json(body))
        return 200, wire.message("Instance modified successfully")

    def _delete(self, params: dict[str, str], request: Request, body: bytes) -> Reply:
        self.state.delete(params["id"])
        return 200, wire.message("Instance deleted successfully")

    def _secrets(self, params: dict[str, str], request: Request, body: bytes) -> Reply:
        rows = [{"type": s.type, "id": s.id, "name": s.name} for s in self.state.secrets.values()]
        return 200, {"data": {"secrets": rows}}

    def _secret_create(self, params: dict[str, str], request: Request, body: bytes) -> Reply:
        secret = self.state.add_secret(_json(body))
        return 200, {"data": {"id": secret.id, "name": secret.name, "type": secret.type}}

    def _secret(self, params: dict[str, str], request: Request, body: bytes) -> Reply:
        s = self.state.secret_or_404(params["id"])
        return 200, {"data": {"id": s.id, "name": s.name, "type": s.type, "value": s.value}}

    def _secret_delete(self, params: dict[str, str], request: Request, body: bytes) -> Reply:
        secret = self.state.secret_or_404(params["id"])
        del self.state.secrets[secret.id]
        return 200, wire.message("Secret deleted successfully")

    # -- control (/_emulator/tensordock/...) ---------------------------------------------------
    async def control(self, method: str, action: str, data: Any, counts: Counter[str]) -> Reply:
        state = self.state
        if (method, action) == ("GET", "state"):
            public = state.config.public_dict()
            config = {k: v for k, v in public.items() if k.startswith("tensordock")}
            config.update(speed=state.config.speed, rate_limit=state.config.rate_limit)
            return 200, {
                "config": config,
                **state.summary(),
                "request_counts": {k: v for k, v in counts.items() if PREFIX in k},
            }
        if method == "GET" and action.startswith("vms/"):
            vm = state.vms.get(action.removeprefix("vms/"))
            if vm is None:
                return 404, {"success": False, "msg": f"no VM {action.removeprefix('vms/')}"}
            return 200, {**state.vm_view(vm), **self.runtime.view(vm.id)}
        if (method, action) == ("POST", "faults"):
            try:
                fault = TdHostFault.from_json(data)
                state.add_fault(fault)
            except FaultError as exc:
                return 400, {"success": False, "msg": str(exc)}
            await self.runtime.stop_unwanted(state)
            await self.runtime.reconcile(state)
            return 200, {"success": True, "fault": fault.to_json()}
        if (method, action) == ("DELETE", "faults"):
            self.clear_faults()
            return 200, {"success": True}
        try:
            if (method, action) == ("POST", "trainer_fault"):
                return 200, {"success": True, "fault": self.runtime.trainer_fault(state, data)}
            if (method, action) == ("POST", "drop_ssh"):
                return 200, {"success": True, "dropped": self.runtime.drop_ssh(state, data)}
        except ApiError as exc:
            return exc.status, exc.body
        return 404, {"success": False, "msg": f"no control action {method} tensordock/{action}"}

    def clear_faults(self) -> None:
        self.state.host_faults.clear()
        self.runtime.clear_trainer_faults()

    async def advance(self) -> None:
        """After the control clock moved: apply what is due, end what must not run."""
        self.state.sync(self.state.now())
        await self.runtime.stop_unwanted(self.state)
        await self.runtime.reconcile(self.state)


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None


def _json(body: bytes) -> Any:
    if not body.strip():
        return {}
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise bad_request("Invalid JSON body") from None


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)
