"""The emulated endpoints: method, canonical path template, auth mode.

Endpoint names everywhere (rate limits, faults, counters, the request log) are
"METHOD /template/" with the trailing slash, e.g. "PUT /api/v0/asks/{id}/". Paths match with or
without the trailing slash and are never redirected (the official CLI needs both forms).
"""

from __future__ import annotations

from dataclasses import dataclass

# auth modes: "none" (ignores keys), "optional" (anonymous allowed; a wrong key is refused with
# 404 like the real search), "required" (no key -> 403, wrong key -> 401), "login" (no key ->
# 403, wrong key -> 404, as charges and invoices answer)


@dataclass(frozen=True)
class Route:
    method: str
    template: str
    name: str  # handler name in api.py
    auth: str

    @property
    def endpoint(self) -> str:
        return f"{self.method} {self.template}"

    @property
    def segments(self) -> tuple[str, ...]:
        return _segments(self.template)


ROUTES: tuple[Route, ...] = (
    Route("GET", "/api/v0/gpu_names/unique/", "gpu_names", "none"),
    Route("POST", "/api/v0/bundles/", "search_post", "optional"),
    Route("GET", "/api/v0/bundles/", "search_get", "optional"),
    Route("PUT", "/api/v0/search/asks/", "search_put", "optional"),
    Route("GET", "/api/v0/users/current/", "user_current", "required"),
    Route("GET", "/api/v0/ssh/", "ssh_list", "required"),
    Route("POST", "/api/v0/ssh/", "ssh_create", "required"),
    Route("PUT", "/api/v0/ssh/{id}/", "ssh_update", "required"),
    Route("DELETE", "/api/v0/ssh/{id}/", "ssh_delete", "required"),
    Route("PUT", "/api/v0/asks/{id}/", "create_instance", "required"),
    Route("GET", "/api/v1/instances/", "list_v1", "required"),
    Route("GET", "/api/v0/instances/", "list_v0", "required"),
    Route("GET", "/api/v0/instances/filters/", "list_filters", "required"),
    Route("GET", "/api/v0/instances/{id}/", "show_instance", "required"),
    Route("PUT", "/api/v0/instances/{id}/", "manage_instance", "required"),
    Route("DELETE", "/api/v0/instances/{id}/", "destroy_instance", "required"),
    Route("POST", "/api/v0/instances/{id}/ssh/", "attach_ssh", "required"),
    Route("GET", "/api/v0/instances/{id}/ssh/", "instance_ssh_list", "required"),
    Route("DELETE", "/api/v0/instances/{id}/ssh/{key_id}/", "detach_ssh", "required"),
    Route("GET", "/api/v0/charges/", "charges", "login"),
    Route("GET", "/api/v0/template/", "search_templates", "optional"),
    Route("POST", "/api/v0/template/", "create_template", "required"),
    Route("PUT", "/api/v1/template/", "update_template", "required"),  # CLI 1.9.1
    Route("PUT", "/api/v0/template/", "update_template", "required"),  # older CLIs, OAPI
    Route("DELETE", "/api/v0/template/", "delete_template", "required"),
    # instance_ops.py
    Route("PUT", "/api/v0/instances/reboot/{id}/", "reboot_instance", "required"),
    Route("PUT", "/api/v0/instances/recycle/{id}/", "recycle_instance", "required"),
    Route("PUT", "/api/v0/instances/bid_price/{id}/", "change_bid", "required"),
    Route("PUT", "/api/v0/instances/command/{id}/", "execute_command", "required"),
    # invoices.py
    Route("GET", "/api/v0/users/me/invoices/", "invoices_legacy", "login"),
    Route("GET", "/api/v1/invoices/", "invoices_v1", "login"),
    Route("GET", "/api/v0/invoices/", "invoices_search", "login"),
    # instance_logs.py
    Route("PUT", "/api/v0/instances/request_logs/{id}/", "request_logs", "required"),
)


def _segments(path: str) -> tuple[str, ...]:
    return tuple(part for part in path.split("/") if part)


class Router:
    def __init__(self, routes: tuple[Route, ...] = ROUTES) -> None:
        self.routes = routes
        # Literal templates resolve with one dict lookup (the hot search path).
        self.exact: dict[tuple[str, tuple[str, ...]], Route] = {
            (r.method, r.segments): r for r in routes if "{" not in r.template
        }

    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
        """(route, path params, path known for another method)."""
        parts = _segments(path)
        route = self.exact.get((method, parts))
        if route is not None:
            return route, {}, True
        known = False
        for route in self.routes:
            params = _match(route.segments, parts)
            if params is None:
                continue
            if route.method == method:
                return route, params, True
            known = True
        return None, {}, known


def _match(template: tuple[str, ...], parts: tuple[str, ...]) -> dict[str, str] | None:
    if len(template) != len(parts):
        return None
    params: dict[str, str] = {}
    for want, got in zip(template, parts, strict=True):
        if want.startswith("{"):
            params[want[1:-1]] = got
        elif want != got:
            return None
    return params
