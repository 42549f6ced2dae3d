"""The emulator's ASGI application: routing, auth, faults, rate limits, the request log, and the
control API under /_emulator/.

It is a plain ASGI callable built on Starlette's request/response types rather than a Starlette
router, because it must answer both slash forms of every path without redirecting, name
endpoints by template for faults and counters, and, for `drop` faults, break a response halfway —
which needs the raw `send`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter, deque
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gpushop.emulator import instance_logs, instance_ops, invoices, isolation, results
from gpushop.emulator.api import HANDLERS, Call
from gpushop.emulator.config import EmulatorConfig
from gpushop.emulator.errors import ApiError
from gpushop.emulator.faults import Fault, FaultBook, FaultError
from gpushop.emulator.hostfaults import HOST_KINDS, HostFault
from gpushop.emulator.hosts import HostRuntime
from gpushop.emulator.ratelimit import RateLimiter, limit_body, retry_after_value
from gpushop.emulator.routes import Route, Router
from gpushop.emulator.state import EmulatorState, identity_hash
from gpushop.emulator.tensordock.api import TensorDock

log = logging.getLogger("gpushop.emulator")

LOG_SIZE = 500
_warned: list[bool] = []  # the no-sandbox line is said once per process
AUTH_MISSING = {"success": False, "error": "auth_error", "msg": "This action requires login."}
AUTH_INVALID = {"success": False, "error": "auth_error", "msg": "Invalid user key"}
INSTANCE_KEY_ROUTES = frozenset({"show_instance", "manage_instance"})
DROPPED_MESSAGE = "ASGI callable returned without completing response."


class _DropFilter(logging.Filter):
    """Silence uvicorn's complaint about the responses we break on purpose (`drop` faults)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != DROPPED_MESSAGE


_drop_filter = _DropFilter()


def install_log_filter() -> None:
    logger = logging.getLogger("uvicorn.error")
    if _drop_filter not in logger.filters:
        logger.addFilter(_drop_filter)


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    """JSON with `Content-Type: application/json` exactly: the official CLI refuses a charset."""
    if isinstance(body, str | bytes):
        text = body.encode() if isinstance(body, str) else body
        media = "text/html" if text.lstrip().startswith(b"<") else "text/plain"
        return Response(text, status, headers, media_type=media)
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


class Emulator:
    """ASGI app holding the emulator state; `reset()` puts it back to the seeded start."""

    def __init__(self, config: EmulatorConfig) -> None:
        config = self._sandboxed(config)
        self.base_config = config
        self.state = EmulatorState(config)
        self.router = Router()
        self.faults = FaultBook()
        self.limiter = RateLimiter()
        self.counts: Counter[str] = Counter()
        self.requests: deque[dict[str, Any]] = deque(maxlen=LOG_SIZE)
        self._holds: asyncio.Event | None = None  # set to end every held answer at once
        self.runtime = HostRuntime()
        self.ops = instance_ops.InstanceOps()  # reboot, recycle, bid, execute; result URLs
        # TensorDock v2 under /tensordock/api/v2, on the same simulated clock
        self.tensordock = TensorDock(config, lambda: self.state.now())

    @staticmethod
    def _sandboxed(config: EmulatorConfig) -> EmulatorConfig:
        """SSH endpoints only where every instance can have its own sandbox: never half
        isolated (one line says why, once per process)."""
        if config.ssh and isolation.probe() is None:
            if not _warned:
                _warned.append(True)
                log.warning(
                    "emulator: no sandboxes for instances here (%s): serving without SSH "
                    "endpoints (ssh=False)",
                    isolation.reason(),
                )
            return dataclasses.replace(config, ssh=False)
        return config

    @property
    def config(self) -> EmulatorConfig:
        return self.state.config

    async def _hold(self, seconds: float, until: asyncio.Event | None = None) -> None:
        """Sleep (or wait for `until`), but end early on reset or shutdown (a held answer must
        block neither)."""
        if self._holds is None:
            self._holds = asyncio.Event()
        waits = [asyncio.ensure_future(e.wait()) for e in (self._holds, until) if e is not None]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    def release_holds(self) -> None:
        """End every held answer now (called on the server's loop: reset, shutdown)."""
        if self._holds is not None:
            self._holds.set()
            self._holds = None

    async def reset(self, overrides: dict[str, Any] | None = None) -> None:
        """Fresh state from the start-up config plus `overrides` (not cumulative)."""
        self.release_holds()
        config = self._sandboxed(self.base_config.with_overrides(overrides or {}))
        # every instance process and SSH server of the old state, Vast and TensorDock at once;
        # no reconcile of either runs until the new state is in place (the tick would boot a
        # machine of the old state, and the reset would end it under its start)
        async with self.runtime.quiet(), self.tensordock.runtime.quiet():
            await self.ops.reset()
            await asyncio.gather(
                self.runtime.end_every_machine(), self.tensordock.runtime.end_every_machine()
            )
            self.state.close()
            self.state = EmulatorState(config, market=self.state.market)
            self.tensordock.reset(config)
        self.faults.clear()
        self.limiter.reset()
        self.counts.clear()
        self.requests.clear()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off; websockets are not served
            return
        self.runtime.ensure_ticker(lambda: self.state)
        self.tensordock.runtime.ensure_ticker(lambda: self.tensordock.state)
        # Bring the world up to now first: due events, then SSH servers of running instances,
        # so an instance the answer shows as running already accepts SSH.
        self.state.sync(self.state.now())
        await self.runtime.reconcile(self.state)
        request = Request(scope, receive)
        path: str = scope["path"]
        if path.startswith(results.PREFIX):  # result_url of execute / request_logs
            text = self.ops.results.get(path)
            found = text is not None
            reply = Response(
                text if found else results.NO_SUCH_KEY,
                200 if found else 404,
                media_type="text/plain" if found else "application/xml",
            )
            await reply(scope, receive, send)
            return
        if path == "/_emulator" or path.startswith("/_emulator/"):
            response = await self._control(request)
            await response(scope, receive, send)
            return
        if self.tensordock.serves(path):
            await self.tensordock.handle(
                request,
                scope,
                receive,
                send,
                faults=self.faults,
                counts=self.counts,
                log=self._log,
                hold=self._hold,
                broken=_send_broken,
            )
            return
        await self._api(request, scope, receive, send)

    # -- API ---------------------------------------------------------------------------------
    async def _api(self, request: Request, scope: Scope, receive: Receive, send: Send) -> None:
        method = request.method
        path: str = scope["path"]
        route, params, known = self.router.match(method, path)
        body = await request.body()
        query = request.query_params
        key, auth = _credentials(request)
        if route is None:
            status = 405 if known else 404
            reply = json_response(
                status,
                {
                    "success": False,
                    "error": "method_not_allowed" if known else "not_found",
                    "msg": f"{method} {path} is not an emulated endpoint",
                },
            )
            self._log(method, f"{method} {path}", path, query, body, status, auth)
            await reply(scope, receive, send)
            return
        endpoint = route.endpoint
        self.counts[endpoint] += 1
        state = self.state
        call = Call(
            method=method,
            path=path,
            endpoint=endpoint,
            params=params,
            query=query,
            body=body,
            auth=auth,
            key_valid=state.is_key(key),
            base_url=str(request.base_url),
        )
        fault = self.faults.take(endpoint)
        drop = False
        if fault is not None:
            if fault.kind in ("status", "quota"):
                status, fault_body, fault_headers = fault.answer(endpoint)
                self._log_call(call, status)
                await json_response(status, fault_body, fault_headers)(scope, receive, send)
                return
            if fault.kind == "latency":
                await self._hold(fault.latency_s)
            if fault.gate is not None:
                await self._hold(fault.latency_s, fault.gate.arrive())
            drop = fault.kind == "drop"
        status, payload, headers = self._handle(route, call, key, request)
        if drop and fault is not None and fault.latency_s > 0:
            # "act, then hold": the action is done, the answer is held (a client killed now
            # never learns the instance id), then the connection breaks
            await self._hold(fault.latency_s)
        if method != "GET":  # stop/destroy: processes are dead before the answer leaves
            await self.runtime.stop_unwanted(self.state)
        self._log_call(call, status)
        response = json_response(status, payload, headers)
        if drop:
            await _send_broken(response, send)
        else:
            await response(scope, receive, send)

    def _handle(
        self, route: Route, call: Call, key: str | None, request: Request
    ) -> tuple[int, Any, dict[str, str] | None]:
        """Rate limit, then auth, then the handler (the real API limits before it checks keys)."""
        state = self.state
        if state.config.rate_limit:
            client = request.client.host if request.client else "unknown"
            identity = identity_hash(key) if key is not None else f"ip:{client}"
            wait = self.limiter.check(call.endpoint, identity, time.monotonic())
            if wait is not None:
                headers = (
                    {"Retry-After": retry_after_value(wait)} if state.config.retry_after else None
                )
                return 429, limit_body(call.endpoint), headers
        if (
            not call.key_valid
            and route.name in INSTANCE_KEY_ROUTES
            and state.is_instance_key(key, call.params.get("id"))
        ):
            call.key_valid = True  # an instance's own key may show and start/stop it
        if route.auth in ("required", "login"):
            if key is None:
                return 403, dict(AUTH_MISSING), None
            if not call.key_valid:  # charges/invoices answer 404 for a bad key (reference 13)
                return (401 if route.auth == "required" else 404), dict(AUTH_INVALID), None
        elif route.auth == "optional" and key is not None and not call.key_valid:
            return 404, dict(AUTH_INVALID), None  # search answers 404 for a bad key
        try:
            status, payload = _HANDLERS[route.name](self, call)
        except ApiError as exc:
            return exc.status, exc.body, None
        return status, payload, None

    def _log_call(self, call: Call, status: int) -> None:
        self._log(
            call.method, call.endpoint, call.path, call.query, call.body, status, call.auth, call
        )

    def _log(
        self,
        method: str,
        endpoint: str,
        path: str,
        query: Any,
        body: bytes,
        status: int,
        auth: str | None,
        call: Call | None = None,
    ) -> None:
        if call is not None:
            parsed = call.logged_json()
        else:
            try:
                parsed = orjson.loads(body) if body.strip() else None
            except orjson.JSONDecodeError:
                parsed = None
        self.requests.append(
            {
                "time": time.time(),
                "method": method,
                "endpoint": endpoint,
                "path": path,
                # never keep the key: drop api_key from the query string
                "query": {k: v for k, v in query.multi_items() if k != "api_key"},
                "json": parsed,
                "status": status,
                "auth": auth,
            }
        )

    # -- control -----------------------------------------------------------------------------
    async def _control(self, request: Request) -> Response:
        method = request.method
        action = request.url.path.rstrip("/").removeprefix("/_emulator").strip("/")
        body = await request.body()
        try:
            data = orjson.loads(body) if body.strip() else {}
        except orjson.JSONDecodeError:
            return json_response(400, {"success": False, "msg": "body is not JSON"})
        if action.startswith("tensordock/"):
            status, answer = await self.tensordock.control(
                method, action.removeprefix("tensordock/"), data, self.counts
            )
            return json_response(status, answer)
        if (method, action) == ("POST", "reset"):
            if not isinstance(data, dict):
                return json_response(400, {"success": False, "msg": "overrides must be an object"})
            try:
                await self.reset(data)
            except (ValueError, TypeError) as exc:
                return json_response(400, {"success": False, "msg": str(exc)})
            return json_response(200, {"success": True, "config": self.config.public_dict()})
        if (method, action) == ("GET", "state"):
            return json_response(
                200,
                {
                    "config": self.config.public_dict(),
                    **self.state.summary(),
                    "request_counts": dict(self.counts),
                    "faults": [f.to_json() for f in self.faults.pending]
                    + [f.to_json() for f in self.state.host_faults],
                },
            )
        if (method, action) == ("POST", "faults"):
            if isinstance(data, dict) and data.get("kind") in HOST_KINDS:
                return await self._host_fault(data)
            try:
                fault = Fault.from_json(data)
            except FaultError as exc:
                return json_response(400, {"success": False, "msg": str(exc)})
            self.faults.add(fault)
            return json_response(200, {"success": True, "fault": fault.to_json()})
        if (method, action) == ("DELETE", "faults"):
            self.faults.clear()
            self.state.host_faults.clear()
            self.runtime.clear_trainer_faults()
            self.tensordock.clear_faults()
            return json_response(200, {"success": True})
        if (method, action) == ("POST", "trainer_fault"):
            try:
                armed = self.runtime.trainer_fault(self.state, data)
            except ApiError as exc:
                return json_response(exc.status, exc.body)
            return json_response(200, {"success": True, "fault": armed})
        if (method, action) == ("POST", "drop_ssh"):
            try:
                dropped = self.runtime.drop_ssh(self.state, data)
            except ApiError as exc:
                return json_response(exc.status, exc.body)
            return json_response(200, {"success": True, "dropped": dropped})
        if method == "GET" and action.startswith("instances/"):
            return self._instance_view(action.removeprefix("instances/"))
        if (method, action) == ("POST", "clock"):
            return await self._clock(data)
        if (method, action) == ("GET", "requests"):
            return json_response(200, {"requests": list(self.requests)})
        return json_response(404, {"success": False, "msg": f"no control action {method} {action}"})

    async def _host_fault(self, data: dict[str, Any]) -> Response:
        try:
            fault = HostFault.from_json(data)
            self.state.add_host_fault(fault)
        except FaultError as exc:
            return json_response(400, {"success": False, "msg": str(exc)})
        await self.runtime.stop_unwanted(self.state)  # offline/outbid now: SSH and processes go
        await self.runtime.reconcile(self.state)  # lying_host: nvidia-smi rewritten
        return json_response(200, {"success": True, "fault": fault.to_json()})

    def _instance_view(self, raw_id: str) -> Response:
        try:
            instance_id = int(raw_id)
        except ValueError:
            return json_response(400, {"success": False, "msg": "instance id must be an integer"})
        view = self.state.instance_view(instance_id)
        if view is None:
            return json_response(404, {"success": False, "msg": f"no instance {instance_id}"})
        view.update(self.runtime.view(instance_id))
        return json_response(200, view)

    async def _clock(self, data: Any) -> Response:
        """Move simulated time forward: {"advance": s} or {"offset": s} (never backwards:
        billing and the life cycle assume time only grows)."""
        state = self.state
        if not isinstance(data, dict) or len(data) != 1 or not ({"advance", "offset"} & set(data)):
            return json_response(
                400, {"success": False, "msg": 'give {"advance": s} or {"offset": s}'}
            )
        value = data.get("advance", data.get("offset"))
        if isinstance(value, bool) or not isinstance(value, int | float):
            return json_response(400, {"success": False, "msg": "seconds must be a number"})
        offset = state.now_offset + value if "advance" in data else float(value)
        if offset < state.now_offset:
            return json_response(400, {"success": False, "msg": "time cannot go backwards"})
        state.now_offset = float(offset)
        state.sync(state.now(), force=True)
        await self.runtime.stop_unwanted(state)
        await self.runtime.reconcile(state)
        await self.tensordock.advance()
        return json_response(200, {"success": True, "offset": state.now_offset, "now": state.now()})


_HANDLERS = {**HANDLERS, **instance_ops.HANDLERS, **invoices.HANDLERS, **instance_logs.HANDLERS}


def _credentials(request: Request) -> tuple[str | None, str | None]:
    """(key, how it came): the Bearer header wins over the legacy ?api_key= parameter."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip(), "bearer"
    key = request.query_params.get("api_key")
    if key:
        return key, "param"
    return None, None


async def _send_broken(response: Response, send: Send) -> None:
    """Announce the full body, send half of it, and stop: the server then closes the
    connection, so the client sees an incomplete response (httpx: RemoteProtocolError)."""
    body = response.body
    headers = [(k, v) for k, v in response.raw_headers if k.lower() != b"content-length"]
    headers.append((b"content-length", str(len(body) + 64).encode()))
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send(
        {"type": "http.response.body", "body": bytes(body[: len(body) // 2]), "more_body": True}
    )
