"""The invoice endpoints (reference section 10), from the same figures as /charges/.

The account's one payment is its starting credit (`credit` in the config), paid by card when the
account was made (the user's `created_at`, card `last4`); its charges are the instances' GPU and
disk items of billing.py.

- `GET /users/me/invoices?owner=me&sdate=&edate=&inc_charges=` (CLI `show invoices`, legacy):
  `{"invoices": [{description, quantity, rate, amount, timestamp, type: "charge"|"payment",
  instance_id}], "current": {charges, service_fee, total, credit}, "username", "email",
  "bill_to"}`.
- `GET /api/v1/invoices/?select_filters={"when": {...}, "service": {...}}&limit=&after_token=&
  latest_first=` (CLI `show invoices-v1 -i`): payments only, `/charges/`'s envelope.
- `GET /invoices?select_cols=["*"]&select_filters=` (CLI `search invoices`): a bare array of rows
  with `quantity`, `rate`, `amount` as strings (OAPI's example).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import orjson

from gpushop.emulator import billing
from gpushop.emulator.api import (
    Call,
    Handler,
    Reply,
    _json_param,
    _read_token,
    _token,
    _v1_error,
    epoch_range,
)
from gpushop.emulator.dsl import OPS
from gpushop.emulator.errors import ApiError

if TYPE_CHECKING:
    from gpushop.emulator.app import Emulator
    from gpushop.emulator.state import EmulatorState

INVOICE_ID = 4_820_001
V1_DEFAULT_LIMIT, V1_MAX_LIMIT = 20, 100
V1_SERVICES = ("stripe_payments",)


def _account(state: EmulatorState) -> dict[str, Any]:
    return state.user()


def _payments(state: EmulatorState) -> list[dict[str, Any]]:
    """The starting credit, as a card payment when the account was made."""
    user = _account(state)
    amount = float(state.config.credit)
    if amount <= 0:
        return []
    return [
        {
            "id": INVOICE_ID,
            "when": float(user["created_at"]),
            "amount": round(amount, 2),
            "description": f"Manual billing from VISA ending in {user['last4']}",
            "service": "stripe_payments",
            "last4": user["last4"],
        }
    ]


def _charge_rows(state: EmulatorState, start: float, end: float) -> list[dict[str, Any]]:
    """One legacy row per GPU or disk item of each instance's charges in [start, end]."""
    rows = []
    for entry in state.charges(start, end):
        instance_id = int(entry["source"].removeprefix("instance-"))
        for item in entry["items"]:
            hours = (item["end"] - item["start"]) / billing.HOUR
            if item["type"] == "gpu":
                quantity = float(item["description"].split(" ", 1)[0])  # "3.000 hours at ..."
                rate = round(item["amount"] / quantity, 4) if quantity else 0.0
                text = f"Instance {instance_id} GPU charge: {item['description']}"
            else:
                quantity = round(hours, 3)
                rate = round(item["amount"] / quantity, 4) if quantity else 0.0
                text = f"Instance {instance_id} storage charge: {item['description']}"
            rows.append(
                {
                    "description": text,
                    "quantity": quantity,
                    "rate": rate,
                    "amount": item["amount"],
                    "timestamp": float(item["end"]),
                    "type": "charge",
                    "instance_id": instance_id,
                }
            )
    return rows


def _payment_rows(state: EmulatorState, start: float, end: float) -> list[dict[str, Any]]:
    return [
        {
            "description": pay["description"],
            "quantity": 1,
            "rate": pay["amount"],
            "amount": pay["amount"],
            "timestamp": pay["when"],
            "type": "payment",
            "instance_id": None,
        }
        for pay in _payments(state)
        if start <= pay["when"] <= end
    ]


def _number(call: Call, name: str, default: float) -> float:
    raw = call.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ApiError(
            400, {"success": False, "error": "invalid_args", "msg": f"{name} must be a number"}
        ) from None


def invoices_legacy(emu: Emulator, call: Call) -> Reply:
    state = emu.state
    now = state.now()
    start = _number(call, "sdate", 0.0)
    end = _number(call, "edate", now)
    with_charges = call.query.get("inc_charges", "true").lower() not in ("false", "0")
    rows = _payment_rows(state, start, end)
    if with_charges:
        rows += _charge_rows(state, start, end)
    rows.sort(key=lambda r: r["timestamp"])
    user = _account(state)
    spend = float(user["total_spend"])
    return 200, {
        "invoices": rows,
        "current": {
            "charges": round(spend, 4),
            "service_fee": 0.0,
            "total": round(spend, 4),
            "credit": user["credit"],
        },
        "username": user["username"],
        "email": user["email"],
        "bill_to": user["fullname"],
    }


def _services(filters: dict[str, Any]) -> set[str] | None:
    spec = filters.get("service")
    if spec is None:
        return None
    if not isinstance(spec, dict):
        spec = {"eq": spec}
    wanted = set(V1_SERVICES)
    for op, value in spec.items():
        values = value if isinstance(value, list) else [value]
        if op in ("in", "eq"):
            wanted &= set(values)
        elif op in ("notin", "neq"):
            wanted -= set(values)
        else:
            raise _v1_error(f"unknown operator {op} for service")
    return wanted


def invoices_v1(emu: Emulator, call: Call) -> Reply:
    state = emu.state
    bad = _v1_error("select_filters is not JSON").body
    filters = _json_param(call, "select_filters", bad)
    if filters is None:
        filters = {}
    if not isinstance(filters, dict):
        raise _v1_error("select_filters must be an object")
    unknown = set(filters) - {"when", "service"}
    if unknown:
        raise _v1_error(f"{sorted(unknown)[0]} is not a valid search key")
    start, end = epoch_range(filters, "when")
    services = _services(filters)
    results = [
        {
            "start": int(pay["when"]),
            "end": int(pay["when"]),
            "type": "credit",
            "source": "stripe",
            "description": pay["description"],
            "amount": -pay["amount"],  # a payment is negative here (the CLI flips it)
            "metadata": {
                "invoice_id": pay["id"],
                "service": pay["service"],
                "last4": pay["last4"],
                "network": "visa",
            },
            "items": [],
        }
        for pay in _payments(state)
        if start <= pay["when"] <= end and (services is None or pay["service"] in services)
    ]
    latest_first = call.query.get("latest_first", "").lower() in ("1", "true")
    if latest_first:
        results.reverse()
    limit_raw = _json_param(call, "limit", _v1_error("limit must be an integer").body)
    if limit_raw is None:
        limit = V1_DEFAULT_LIMIT
    elif isinstance(limit_raw, bool) or not isinstance(limit_raw, int):
        raise _v1_error("limit must be an integer")
    else:
        limit = max(1, min(limit_raw, V1_MAX_LIMIT))
    signature = hashlib.sha256(
        orjson.dumps([filters, latest_first], option=orjson.OPT_SORT_KEYS)
    ).hexdigest()[:16]
    token = call.query.get("after_token")
    offset = _read_token(token, signature) if token else 0
    page = results[offset : offset + limit]
    more = offset + limit < len(results)
    return 200, {
        "success": True,
        "count": len(page),
        "total": len(results),
        "results": page,
        "next_token": _token(offset + limit, signature) if more else None,
    }


SEARCH_COLUMNS = frozenset({"type", "timestamp", "when", "instance_id", "amount"})


def invoices_search(emu: Emulator, call: Call) -> Reply:
    """GET /invoices: every payment and charge row, filtered on the row's own fields."""
    state = emu.state
    bad = {"error": "invalid_request", "msg": "Invalid query: parameters must be JSON"}
    filters = _json_param(call, "select_filters", bad)
    if filters is None:
        filters = {}
    if not isinstance(filters, dict):
        raise ApiError(400, {"error": "invalid_request", "msg": "Invalid query: must be dict"})
    rows = _payment_rows(state, 0.0, float("inf")) + _charge_rows(state, 0.0, state.now())
    rows.sort(key=lambda r: r["timestamp"])
    for column, spec in filters.items():
        if column not in SEARCH_COLUMNS:
            raise ApiError(
                400,
                {
                    "error": "invalid_request",
                    "msg": f"Invalid query: {column} is not a valid search key",
                },
            )
        field = "timestamp" if column == "when" else column
        conditions = spec if isinstance(spec, dict) else {"eq": spec}
        for op, value in conditions.items():
            rows = [r for r in rows if _holds(op, r.get(field), value)]
    return 200, [
        {
            **row,
            "quantity": f"{float(row['quantity']):.3f}",
            "rate": f"{float(row['rate']):.4f}",
            "amount": f"{float(row['amount']):.3f}",
            "timestamp": int(row["timestamp"]),
        }
        for row in rows
    ]


def _holds(op: str, have: Any, want: Any) -> bool:
    if op in ("in", "notin"):
        members = want if isinstance(want, list) else [want]
        return (have in members) == (op == "in")
    fn = OPS.get(op)
    if fn is None:
        raise ApiError(400, {"error": "invalid_request", "msg": f"Invalid query: unknown {op}"})
    try:
        return bool(fn(have, want))
    except TypeError:
        return False


HANDLERS: dict[str, Handler] = {
    "invoices_legacy": invoices_legacy,
    "invoices_v1": invoices_v1,
    "invoices_search": invoices_search,
}
