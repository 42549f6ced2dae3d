"""Endpoint handlers: one function per route name, each `(emulator, call) -> Reply`.

Handlers raise `ApiError` for refusals; the dispatcher in app.py turns that into the response.
Bodies follow the fixtures in shared/fixtures/vastai/ field for field.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from starlette.datastructures import QueryParams

from gpushop.emulator.dsl import BAD_QUERY, OPS, QueryError, compile_query, select_columns
from gpushop.emulator.errors import ApiError, invalid_args

if TYPE_CHECKING:
    from gpushop.emulator.app import Emulator

_UNSET: Any = object()

BAD_JSON_SEARCH = {"error": "invalid_request", "msg": "Invalid json body"}
BAD_QUERY_BODY = {"error": "invalid_request", "msg": BAD_QUERY}
INVALID_INSTANCE_ID = {"success": False, "error": "invalid_args", "msg": "invalid instance_id"}

V1_DEFAULT_LIMIT = 25
V1_MAX_LIMIT = 25
# Stored columns the v1 list can filter and sort on; computed ones (dph_total, num_gpus...) are
# refused like the real API refuses them.
V1_COLUMNS = frozenset(
    {
        "id",
        "label",
        "actual_status",
        "intended_status",
        "cur_state",
        "next_state",
        "status_msg",
        "gpu_name",
        "verification",
        "machine_id",
        "host_id",
        "image_uuid",
        "template_id",
        "template_hash_id",
        "start_date",
        "end_date",
        "is_bid",
        "geolocation",
        "disk_space",
    }
)


@dataclass
class Call:
    """One API request as the handlers see it."""

    method: str
    path: str
    endpoint: str
    params: dict[str, str]
    query: QueryParams
    body: bytes
    auth: str | None  # "bearer" | "param" | None
    key_valid: bool
    _json: Any = field(default=_UNSET)
    base_url: str = ""  # the emulator's root as the client reached it (result_url)

    def json(self, *, search: bool = False) -> Any:
        """The JSON body ({} when empty: clients send {} or nothing on DELETE/PUT)."""
        if self._json is _UNSET:
            text = self.body.strip()
            if not text:
                self._json = {}
            else:
                try:
                    self._json = orjson.loads(text)
                except orjson.JSONDecodeError:
                    if search:
                        raise ApiError(400, dict(BAD_JSON_SEARCH)) from None
                    raise invalid_args("Invalid json body") from None
        return self._json

    def json_object(self) -> dict[str, Any]:
        data = self.json()
        if not isinstance(data, dict):
            raise invalid_args("Request body must be a JSON object")
        return data

    def logged_json(self) -> Any:
        """Body for the request log: parsed JSON or None, never raising."""
        if self._json is not _UNSET:
            return self._json
        try:
            return orjson.loads(self.body) if self.body.strip() else None
        except orjson.JSONDecodeError:
            return None

    def int_param(self, name: str, error: dict[str, Any]) -> int:
        try:
            return int(self.params[name])
        except ValueError:
            raise ApiError(400, dict(error)) from None


Reply = tuple[int, Any]
Handler = Callable[["Emulator", Call], Reply]


# -- search -----------------------------------------------------------------------------------
def _search(emu: Emulator, call: Call, raw_query: Any, select_raw: Any) -> list[dict[str, Any]]:
    state = emu.state
    try:
        query = compile_query(raw_query)
        select = select_columns(select_raw)
    except QueryError as exc:
        raise ApiError(400, {"error": "invalid_request", "msg": exc.msg}) from None
    now = state.now()
    rented = state.rented_machines() if call.key_valid else frozenset()
    hits = state.searcher.search(query, now=now, available=state.available, rented=rented)
    machines = state.market.columns["machine_id"]
    return [
        state.market.payload(
            index,
            now=now,
            storage_gb=query.storage_gb,
            kind=query.kind,
            rented=bool(rented) and machines[index] in rented,
            rn=rank,
            select=select,
        )
        for rank, index in enumerate(hits, start=1)
    ]


def _json_param(call: Call, name: str, error: dict[str, Any]) -> Any:
    raw = call.query.get(name)
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, dict(error)) from None


def search_post(emu: Emulator, call: Call) -> Reply:
    return 200, {"offers": _search(emu, call, call.json(search=True), None)}


def search_get(emu: Emulator, call: Call) -> Reply:
    query = _json_param(call, "q", BAD_QUERY_BODY)
    select = _json_param(call, "select_cols", BAD_QUERY_BODY)
    return 200, {"offers": _search(emu, call, {} if query is None else query, select)}


def search_put(emu: Emulator, call: Call) -> Reply:
    body = call.json(search=True)
    if not isinstance(body, dict):
        raise ApiError(400, dict(BAD_QUERY_BODY))
    query = body.get("q", {})
    return 200, {"success": True, "offers": _search(emu, call, query, body.get("select_cols"))}


def gpu_names(emu: Emulator, call: Call) -> Reply:
    return 200, {"gpu_names": list(emu.state.market.gpu_names)}


# -- account ----------------------------------------------------------------------------------
def user_current(emu: Emulator, call: Call) -> Reply:
    return 200, emu.state.user()


def ssh_list(emu: Emulator, call: Call) -> Reply:
    return 200, [dict(k) for k in emu.state.ssh_keys]


def ssh_create(emu: Emulator, call: Call) -> Reply:
    key = emu.state.add_key(call.json_object().get("ssh_key"))
    return 200, {"success": True, "key": dict(key)}


_BAD_KEY_ID = {"success": False, "error": "invalid_args", "msg": "invalid ssh key id"}


def ssh_update(emu: Emulator, call: Call) -> Reply:
    key_id = call.int_param("id", _BAD_KEY_ID)
    key = emu.state.update_key(key_id, call.json_object().get("ssh_key"))
    return 200, {"success": True, "key": dict(key)}


def ssh_delete(emu: Emulator, call: Call) -> Reply:
    emu.state.delete_key(call.int_param("id", _BAD_KEY_ID))
    return 200, {"success": True}


# -- instances --------------------------------------------------------------------------------
def create_instance(emu: Emulator, call: Call) -> Reply:
    bad_offer = {
        "success": False,
        "error": "invalid_args",
        "msg": "'id' is required and must be a valid offer ID",
    }
    offer_id = call.int_param("id", bad_offer)
    return 200, emu.state.create(offer_id, call.json_object())


def show_instance(emu: Emulator, call: Call) -> Reply:
    instance_id = call.int_param("id", INVALID_INSTANCE_ID)
    inst = emu.state.instances.get(instance_id)
    # Unknown or destroyed: HTTP 200 with null, as the real API (the CLI relies on it).
    return 200, {"instances": None if inst is None else emu.state.row(inst, emu.state.now())}


def manage_instance(emu: Emulator, call: Call) -> Reply:
    instance_id = call.int_param("id", INVALID_INSTANCE_ID)
    return 200, emu.state.change(instance_id, call.json_object())


def destroy_instance(emu: Emulator, call: Call) -> Reply:
    emu.state.destroy(call.int_param("id", INVALID_INSTANCE_ID))
    return 200, {"success": True}


def _all_rows(emu: Emulator) -> list[dict[str, Any]]:
    now = emu.state.now()
    return [emu.state.row(inst, now) for _, inst in sorted(emu.state.instances.items())]


def list_v0(emu: Emulator, call: Call) -> Reply:
    if emu.state.config.legacy_list_deprecated:
        raise ApiError(
            410,
            {
                "success": False,
                "error": "deprecated",
                "msg": "Endpoint deprecated: /api/v0/instances/ is deprecated. "
                "Use /api/v1/instances/ instead.",
            },
        )
    rows = _all_rows(emu)
    return 200, {"instances_found": len(rows), "instances": rows}


def list_filters(emu: Emulator, call: Call) -> Reply:
    seen: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in _all_rows(emu):
        combo = {k: row[k] for k in ("actual_status", "verification", "gpu_name")}
        seen.setdefault(tuple(combo.values()), combo)
    return 200, {"filters": list(seen.values())}


def _v1_error(msg: str) -> ApiError:
    return ApiError(400, {"error": "invalid_request", "msg": f"Error in query parameters: {msg}"})


def _v1_predicate(column: str, spec: Any) -> Callable[[dict[str, Any]], bool]:
    if column not in V1_COLUMNS:
        raise _v1_error(f"{column} is not a valid search key")
    if not isinstance(spec, dict):
        spec = {"eq": spec}
    checks: list[Callable[[Any], bool]] = []
    for op, value in spec.items():
        if op in ("in", "notin"):
            if not isinstance(value, list):
                raise _v1_error(f"{op} needs a list for {column}")
            members = [_v1_coerce(column, v) for v in value]
            checks.append(
                (lambda m: lambda x: x in m)(members)
                if op == "in"
                else (lambda m: lambda x: x not in m)(members)
            )
        elif op in OPS:
            fn, target = OPS[op], _v1_coerce(column, value)

            def check(x: Any, fn: Callable[[Any, Any], bool] = fn, target: Any = target) -> bool:
                if x is None or target is None:
                    return bool(fn(x, target)) if fn in (operator.eq, operator.ne) else False
                try:
                    return bool(fn(x, target))
                except TypeError:
                    return False

            checks.append(check)
        else:
            raise _v1_error(f"unknown operator {op} for {column}")
    return lambda row: all(check(row.get(column)) for check in checks)


def _v1_coerce(column: str, value: Any) -> Any:
    numeric = column in ("id", "machine_id", "host_id", "template_id", "start_date", "end_date")
    if numeric and isinstance(value, str):
        try:
            return float(value) if "." in value else int(value)
        except ValueError:
            raise _v1_error(f"invalid value {value!r} for {column}") from None
    return value


def _v1_order(raw: Any) -> list[tuple[str, bool]]:
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise _v1_error("order_by must be a list")
    order: list[tuple[str, bool]] = []
    for item in raw:
        if isinstance(item, dict):
            col, direction = item.get("col"), item.get("dir", "asc")
        elif isinstance(item, list) and 1 <= len(item) <= 2:
            col, direction = item[0], (item[1] if len(item) == 2 else "asc")
        else:
            raise _v1_error("order_by entries must be {col, dir}")
        if not isinstance(col, str) or col not in V1_COLUMNS:
            raise _v1_error(f"{col} is not a valid search key")
        if not isinstance(direction, str) or direction.lower() not in ("asc", "desc"):
            raise _v1_error(f"invalid order direction {direction!r}")
        order.append((col, direction.lower() == "desc"))
    if not any(col == "id" for col, _ in order):
        order.append(("id", False))  # tie-break, as the real API does
    return order


def _token(offset: int, signature: str) -> str:
    raw = json.dumps({"o": offset, "s": signature}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _read_token(token: str, signature: str) -> int:
    bad = ApiError(
        400, {"success": False, "error": "invalid_token", "msg": "Invalid pagination token"}
    )
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise bad from None
    if not isinstance(data, dict) or data.get("s") != signature:
        raise bad
    offset = data.get("o")
    if not isinstance(offset, int) or offset < 0:
        raise bad
    return offset


def list_v1(emu: Emulator, call: Call) -> Reply:
    filters = _json_param(call, "select_filters", _v1_error("select_filters is not JSON").body)
    order_raw = _json_param(call, "order_by", _v1_error("order_by is not JSON").body)
    cols = _json_param(call, "select_cols", _v1_error("select_cols is not JSON").body)
    limit_raw = _json_param(call, "limit", _v1_error("limit must be an integer").body)
    if filters is None:
        filters = {}
    if not isinstance(filters, dict):
        raise _v1_error("select_filters must be an object")
    predicates = [_v1_predicate(col, spec) for col, spec in filters.items()]
    order = _v1_order(order_raw)
    if limit_raw is None:
        limit = V1_DEFAULT_LIMIT
    elif isinstance(limit_raw, bool) or not isinstance(limit_raw, int | float):
        raise _v1_error("limit must be an integer")
    else:
        limit = int(limit_raw)
        limit = 5 if limit <= 0 else min(limit, V1_MAX_LIMIT)
    if cols is None or cols == ["*"] or (isinstance(cols, list) and "*" in cols):
        select: list[str] | None = None
    elif isinstance(cols, list) and all(isinstance(c, str) for c in cols):
        select = ["id", *[c for c in cols if c != "id"]]
    else:
        raise _v1_error("select_cols must be a list of column names")

    rows = _all_rows(emu)
    label_counts: dict[str, int] = {}
    for row in rows:
        label = row["label"] or ""
        label_counts[label] = label_counts.get(label, 0) + 1
    matched = [row for row in rows if all(p(row) for p in predicates)]
    for col, desc in reversed(order):
        present = [r for r in matched if r.get(col) is not None]
        absent = [r for r in matched if r.get(col) is None]
        present.sort(key=lambda r, c=col: r[c], reverse=desc)  # type: ignore[misc]
        matched = present + absent
    # The token is an offset signed with the query: a token from another query is refused.
    signature = hashlib.sha256(
        orjson.dumps([filters, order], option=orjson.OPT_SORT_KEYS)
    ).hexdigest()[:16]
    token = call.query.get("after_token")
    offset = _read_token(token, signature) if token else 0
    page = matched[offset : offset + limit]
    more = offset + limit < len(matched)
    if select is not None:
        page = [{c: row.get(c) for c in select} for row in page]
    return 200, {
        "success": True,
        "instances_found": len(page),
        "total_instances": len(matched),
        "label_counts": label_counts,
        "next_token": _token(offset + limit, signature) if more else None,
        "instances": page,
    }


# -- instance SSH keys ------------------------------------------------------------------------
def attach_ssh(emu: Emulator, call: Call) -> Reply:
    instance_id = call.int_param("id", INVALID_INSTANCE_ID)
    return 200, emu.state.attach_key(instance_id, call.json_object().get("ssh_key"))


def instance_ssh_list(emu: Emulator, call: Call) -> Reply:
    inst = emu.state.instance_or_404(call.int_param("id", INVALID_INSTANCE_ID))
    return 200, {"success": True, "keys": json.dumps(inst.keys)}


def detach_ssh(emu: Emulator, call: Call) -> Reply:
    instance_id = call.int_param("id", INVALID_INSTANCE_ID)
    key_id = call.int_param("key_id", _BAD_KEY_ID)
    return 200, emu.state.detach_key(instance_id, key_id)


# -- templates --------------------------------------------------------------------------------
def search_templates(emu: Emulator, call: Call) -> Reply:
    """GET /template/?select_cols=..&select_filters=..&order_by=..: public + your private."""
    bad = {"error": "invalid_request", "msg": "Invalid query: parameters must be JSON"}
    rows = emu.state.templates.search(
        _json_param(call, "select_filters", bad),
        _json_param(call, "order_by", bad),
        _json_param(call, "select_cols", bad),
        own=call.key_valid,  # anonymous: the public catalogue only
    )
    if not rows:
        return 200, {"success": False, "msg": "No templates found"}
    return 200, {"success": True, "templates_found": len(rows), "templates": rows}


def create_template(emu: Emulator, call: Call) -> Reply:
    return 200, emu.state.create_template(call.json_object())


def update_template(emu: Emulator, call: Call) -> Reply:
    return 200, emu.state.update_template(call.json_object())


def delete_template(emu: Emulator, call: Call) -> Reply:
    return 200, emu.state.delete_template(call.json_object())


# -- billing ----------------------------------------------------------------------------------
CHARGES_MAX_LIMIT = 500
CHARGES_DEFAULT_LIMIT = 100


def epoch_range(filters: dict[str, Any], column: str) -> tuple[float, float]:
    """(start, end) of `{column: {"gte"|"gt": s, "lte"|"lt": e}}` in select_filters."""
    spec = filters.get(column, {})
    if not isinstance(spec, dict):
        raise _v1_error(f'{column} must be a range such as {{"gte": s, "lte": e}}')
    start, end = float("-inf"), float("inf")
    for op, value in spec.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _v1_error(f"{column} {op} must be an epoch number")
        if op in ("gte", "gt"):
            start = max(start, float(value))
        elif op in ("lte", "lt"):
            end = min(end, float(value))
        else:
            raise _v1_error(f"unknown operator {op} for {column}")
    return start, end


def charges(emu: Emulator, call: Call) -> Reply:
    """GET /charges/: per-instance charges (gpu, disk) over the `day` range of select_filters."""
    bad = _v1_error("select_filters is not JSON").body
    filters = _json_param(call, "select_filters", bad)
    if filters is None:
        filters = {}
    if not isinstance(filters, dict):
        raise _v1_error("select_filters must be an object")
    start, end = epoch_range(filters, "day")
    start = max(start, 0.0)
    kinds = filters.get("type", {"in": ["instance"]})
    wanted = kinds.get("in", [kinds.get("eq")]) if isinstance(kinds, dict) else [kinds]
    results = emu.state.charges(start, end) if "instance" in wanted else []
    if call.query.get("latest_first", "").lower() in ("1", "true"):
        results.reverse()
    limit_raw = _json_param(call, "limit", _v1_error("limit must be an integer").body)
    if limit_raw is None:
        limit = CHARGES_DEFAULT_LIMIT
    elif isinstance(limit_raw, bool) or not isinstance(limit_raw, int):
        raise _v1_error("limit must be an integer")
    else:
        limit = max(1, min(limit_raw, CHARGES_MAX_LIMIT))
    signature = hashlib.sha256(
        orjson.dumps([filters, call.query.get("latest_first")], option=orjson.OPT_SORT_KEYS)
    ).hexdigest()[:16]
    token = call.query.get("after_token")
    offset = _read_token(token, signature) if token else 0
    page = results[offset : offset + limit]
    more = offset + limit < len(results)
    return 200, {
        "success": True,
        "count": len(page),
        "total": len(results),
        "next_token": _token(offset + limit, signature) if more else None,
        "results": page,
    }


HANDLERS: dict[str, Handler] = {
    "gpu_names": gpu_names,
    "search_post": search_post,
    "search_get": search_get,
    "search_put": search_put,
    "user_current": user_current,
    "ssh_list": ssh_list,
    "ssh_create": ssh_create,
    "ssh_update": ssh_update,
    "ssh_delete": ssh_delete,
    "create_instance": create_instance,
    "list_v1": list_v1,
    "list_v0": list_v0,
    "list_filters": list_filters,
    "show_instance": show_instance,
    "manage_instance": manage_instance,
    "destroy_instance": destroy_instance,
    "attach_ssh": attach_ssh,
    "instance_ssh_list": instance_ssh_list,
    "detach_ssh": detach_ssh,
    "charges": charges,
    "search_templates": search_templates,
    "create_template": create_template,
    "update_template": update_template,
    "delete_template": delete_template,
}
