"""The offer-search query language (`POST /api/v0/bundles/` body), evaluated over a Market.

A query is compiled once into conditions on columns, then evaluated as byte masks (one byte per
offer, 0/1) built with C-level `map` calls and AND-ed as big integers; the result is read in the
order of a cached pre-sorted index, stopping after `limit` hits. Masks of conditions on fixed
columns are cached per market, because clients repeat the same queries all day.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import compress, islice, repeat
from typing import Any

from gpushop.emulator.market import (
    DEFAULT_STORAGE_GB,
    OFFER_SCALAR_FIELDS,
    PRICE_FIELDS,
    Market,
    driver_int,
)

DEFAULT_LIMIT = 64
"""Offers returned when a query gives no `limit`: the reference documents no server default (every
client sends one); 64 keeps anonymous raw queries cheap. Documented in docs/emulator.md."""

MAX_LIMIT = 2**31 - 1
"""A larger `limit` is read as this one (the market holds at most 20,000 offers)."""

BAD_QUERY = "Invalid query: must be dict of conditions"

OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "neq": operator.ne,
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}
LIST_OPS = ("in", "notin")

ALIASES = {
    "reliability2": "reliability",
    "dphtotal": "dph_total",
    "gpu_totalram": "gpu_total_ram",
    "ubuntu_version": "os_version",
    "driver_version": "driver_vers",
}
GB_ALIASES = {"gpu_totalram_GB": "gpu_total_ram", "cpu_ram_GB": "cpu_ram", "gpu_ram_GB": "gpu_ram"}
BOOL_TO_INT = {"verified": "vericode", "datacenter": "hosting_type"}

# Keys the SDKs send that select nothing here.
IGNORED_KEYS = frozenset(
    {
        "disable_bundling",
        "extra_ids",
        "gpu_option",
        "show_incompatible",
        "sort_option",
        "template_id",
    }
)
KINDS = {
    "on-demand": "on-demand",
    "ondemand": "on-demand",
    "bid": "bid",
    "interruptible": "bid",
    "reserved": "reserved",
}
# Columns whose values change per request (never cached) or are computed from a virtual field.
DYNAMIC = frozenset({"rented", "_external", "_duration"})


class QueryError(ValueError):
    """A query the API would refuse with 400 `invalid_request`; `msg` is the body's msg."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg


@dataclass(frozen=True)
class Condition:
    column: str  # a market column, "_country", or a DYNAMIC name
    op: str
    value: Any  # coerced; a tuple for in/notin


@dataclass(frozen=True)
class Query:
    conditions: tuple[Condition, ...]
    order: tuple[tuple[str, bool], ...]  # (column, descending)
    limit: int
    storage_gb: float
    kind: str  # "on-demand" | "bid" | "reserved"


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "num"
    if isinstance(value, str):
        return "str"
    return "null"


def _sample_kinds() -> dict[str, str]:
    sample = Market.generate(1, 0, now=0.0).offers[0]
    kinds = {name: _kind_of(sample[name]) for name in OFFER_SCALAR_FIELDS}
    kinds.update({"_country": "str", "rented": "bool", "_external": "bool", "_duration": "num"})
    return kinds


COLUMN_KINDS: dict[str, str] = _sample_kinds()


def _coerce(kind: str, value: Any, name: str) -> Any:
    """Coerce a filter value to the column's type: the CLI sends most numbers as strings."""
    if value is None:
        return None
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("false", "0", "no"):
            return False
    elif kind == "num":
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int | float) and math.isfinite(value):
            return value
        if isinstance(value, str):
            text = value.strip()
            if name == "driver_vers" and "." in text and text.replace(".", "").isdigit():
                return driver_int(text)
            try:
                return int(text)
            except ValueError:
                pass
            try:
                number = float(text)
            except ValueError:
                pass
            else:
                if math.isfinite(number):
                    return number
    elif kind == "str":
        if isinstance(value, str):
            return value
        if isinstance(value, int | float):
            return str(value)
    elif isinstance(value, bool | int | float | str):  # columns that are always null
        return value  # compared as given (a list or an object is no value: and unhashable)
    raise QueryError(f"Invalid query: invalid value {value!r} for {name}")


def _number(value: Any, what: str) -> float:
    if isinstance(value, dict):  # tolerate {"eq": 10} / {"gte": 10} for plain-number keys
        for op in ("eq", "gte", "gt"):
            if op in value:
                return _number(value[op], what)
        raise QueryError(f"Invalid query: invalid value for {what}")
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise QueryError(f"Invalid query: invalid value for {what}")
    return number


def compile_query(raw: Any) -> Query:
    """Validate and normalise a query object; raises QueryError with the API's message."""
    if not isinstance(raw, dict):
        raise QueryError(BAD_QUERY)
    conditions: list[Condition] = []
    order: list[tuple[str, bool]] = [("score", True)]
    limit = DEFAULT_LIMIT
    storage_gb = DEFAULT_STORAGE_GB
    kind = "on-demand"
    for key, spec in raw.items():
        if not isinstance(key, str):
            raise QueryError(BAD_QUERY)
        if key in IGNORED_KEYS:
            continue
        if key == "order":
            order = _compile_order(spec)
        elif key == "limit":
            if spec is None:
                continue
            number = _number(spec, "limit")
            if number < 0:
                raise QueryError("Invalid query: limit must be >= 0")
            # any limit past the market's size means "all"; islice() refuses > sys.maxsize
            limit = int(min(number, MAX_LIMIT))
        elif key == "type":
            if spec is None:
                continue
            if not isinstance(spec, str) or spec.lower() not in KINDS:
                raise QueryError(
                    "Invalid query: type must be one of on-demand, ondemand, bid, reserved"
                )
            kind = KINDS[spec.lower()]
        elif key == "allocated_storage":
            if spec is None:
                continue
            storage_gb = _number(spec, "allocated_storage")
            if storage_gb < 0:
                raise QueryError("Invalid query: allocated_storage must be >= 0")
        elif key == "target_reliability":
            if isinstance(spec, dict):
                conditions.extend(_compile_field("expected_reliability", spec))
            elif spec is not None:
                value = _number(spec, "target_reliability")
                conditions.append(Condition("expected_reliability", "gte", value))
        else:
            if not isinstance(spec, dict):
                raise QueryError(BAD_QUERY)
            conditions.extend(_compile_field(key, spec))
    # The storage you ask for must fit on the host's disk.
    conditions.append(Condition("disk_space", "gte", storage_gb))
    return Query(tuple(conditions), tuple(order), limit, storage_gb, kind)


def _resolve(name: str) -> tuple[str, float]:
    """Field name as sent -> (column, multiplier applied to values)."""
    if name in GB_ALIASES:
        return GB_ALIASES[name], 1000.0
    if name in ALIASES:
        return ALIASES[name], 1.0
    if name in BOOL_TO_INT:
        return BOOL_TO_INT[name], 1.0
    if name == "duration":
        return "_duration", 1.0
    if name == "external":
        return "_external", 1.0
    if name in COLUMN_KINDS and not name.startswith("_"):
        return name, 1.0
    raise QueryError(f"Invalid query: {name} is not a valid search key")


def _compile_field(name: str, spec: dict[str, Any]) -> list[Condition]:
    column, multiplier = _resolve(name)
    out = []
    for op, value in spec.items():
        if op not in OPS and op not in LIST_OPS:
            raise QueryError(f"Invalid query: unknown operator {op!r} for {name}")
        values: list[Any]
        if op in LIST_OPS:
            if not isinstance(value, list | tuple):
                raise QueryError(f"Invalid query: {op} needs a list for {name}")
            values = list(value)
        else:
            values = [value]
        target = column
        # Vast compares country codes; offers end their geolocation with the code.
        if name == "geolocation" and all(
            isinstance(v, str) and len(v.strip()) == 2 for v in values
        ):
            target = "_country"
            values = [v.strip().upper() for v in values]
        kind = COLUMN_KINDS[target]
        if name in BOOL_TO_INT:
            values = [None if v is None else int(_coerce("bool", v, name)) for v in values]
        else:
            values = [_coerce(kind, v, column) for v in values]
            if multiplier != 1.0:
                values = [None if v is None else v * multiplier for v in values]
        coerced: Any = tuple(values) if op in LIST_OPS else values[0]
        out.append(Condition(target, op, coerced))
    return out


def _compile_order(spec: Any) -> list[tuple[str, bool]]:
    if not isinstance(spec, list):
        raise QueryError("Invalid query: order must be a list of [field, direction]")
    out = []
    for item in spec:
        if not isinstance(item, list | tuple) or not 1 <= len(item) <= 2:
            raise QueryError("Invalid query: order must be a list of [field, direction]")
        name = item[0]
        direction = item[1] if len(item) == 2 else "asc"
        if not isinstance(name, str) or not isinstance(direction, str):
            raise QueryError("Invalid query: order must be a list of [field, direction]")
        if direction.lower() not in ("asc", "desc"):
            raise QueryError(f"Invalid query: order direction must be asc or desc, not {direction}")
        column, _ = _resolve(name)
        if column == "_duration":
            column = "end_date"  # duration = end_date - now: same order
        out.append((column, direction.lower() == "desc"))
    return out or [("score", True)]


def _safe(fn: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    """A comparison that is False instead of TypeError when a side is None."""

    def compare(a: Any, b: Any) -> bool:
        if a is None or b is None:
            return bool(fn(a, b)) if fn in (operator.eq, operator.ne) else False
        return bool(fn(a, b))

    return compare


class Searcher:
    """Runs compiled queries over one Market; keeps per-market caches."""

    def __init__(self, market: Market) -> None:
        self.market = market
        self.n = len(market)
        self.nullable = {
            name for name, col in market.columns.items() if any(v is None for v in col)
        }
        self._masks: dict[tuple[Any, ...], bytes] = {}
        self._orders: dict[tuple[Any, ...], list[int]] = {}
        self.all_ones = bytes([1]) * self.n

    # -- columns -------------------------------------------------------------------------
    def _column(self, name: str, q: Query, now: float, rented: frozenset[int]) -> list[Any]:
        if name in PRICE_FIELDS:
            return self.market.price_columns(q.storage_gb, q.kind)[name]
        if name == "rented":
            machines = self.market.columns["machine_id"]
            return [m in rented for m in machines] if rented else [False] * self.n
        if name == "_external":
            return [False] * self.n  # offers carry external: null, i.e. not external
        if name == "_duration":
            return [e - now for e in self.market.columns["end_date"]]
        return self.market.columns[name]

    def _mask(self, cond: Condition, q: Query, now: float, rented: frozenset[int]) -> bytes:
        price_key = (q.storage_gb, q.kind) if cond.column in PRICE_FIELDS else None
        cacheable = cond.column not in DYNAMIC
        key = (cond.column, cond.op, cond.value, price_key)
        if cacheable:
            hit = self._masks.get(key)
            if hit is not None:
                return hit
        col = self._column(cond.column, q, now, rented)
        mask = self._evaluate(cond, col)
        if cacheable:
            if len(self._masks) >= 512:
                self._masks.pop(next(iter(self._masks)))
            self._masks[key] = mask
        return mask

    def _evaluate(self, cond: Condition, col: list[Any]) -> bytes:
        if cond.op in LIST_OPS:
            members = frozenset(cond.value)
            hits: Iterable[bool] = map(members.__contains__, col)
            if cond.op == "notin":
                hits = map(operator.not_, hits)
            return bytes(hits)
        fn = OPS[cond.op]
        if cond.value is None or cond.column in self.nullable:
            fn = _safe(fn)
        if COLUMN_KINDS.get(cond.column) == "str" and not isinstance(cond.value, str | None):
            fn = _safe(fn)
        try:
            return bytes(map(fn, col, repeat(cond.value, self.n)))
        except TypeError:
            return bytes(map(_safe(fn), col, repeat(cond.value, self.n)))

    def _sorted(
        self, column: str, desc: bool, q: Query, now: float, rented: frozenset[int]
    ) -> list[int]:
        price_key = (q.storage_gb, q.kind) if column in PRICE_FIELDS else None
        key = (column, desc, price_key)
        cacheable = column not in DYNAMIC
        if cacheable and key in self._orders:
            return self._orders[key]
        col = self._column(column, q, now, rented)
        present = [i for i in range(self.n) if col[i] is not None]
        absent = [i for i in range(self.n) if col[i] is None]
        # Stable sorts: ties stay in id order (also with reverse=True); nulls go last.
        order = sorted(present, key=col.__getitem__, reverse=desc) + absent
        if cacheable:
            if len(self._orders) >= 64:
                self._orders.pop(next(iter(self._orders)))
            self._orders[key] = order
        return order

    # -- search --------------------------------------------------------------------------
    def search(
        self, q: Query, *, now: float, available: bytes | bytearray, rented: frozenset[int]
    ) -> list[int]:
        """Indices of matching offers, ordered, at most `q.limit`."""
        if self.n == 0 or q.limit == 0:
            return []
        acc = int.from_bytes(available, "little")
        for cond in q.conditions:
            if not acc:
                break
            acc &= int.from_bytes(self._mask(cond, q, now, rented), "little")
        if not acc:
            return []
        mask = acc.to_bytes(self.n, "little")
        if len(q.order) == 1:
            column, desc = q.order[0]
            order = self._sorted(column, desc, q, now, rented)
            return list(islice(compress(order, map(mask.__getitem__, order)), q.limit))
        hits = list(compress(range(self.n), mask))
        # Stable sorts from the last key to the first; equal values share a rank so that the
        # earlier sorts decide ties (and finally id order).
        for column, desc in reversed(q.order):
            col = self._column(column, q, now, rented)
            rank = [0] * self.n
            current, previous = -1, object()
            for i in self._sorted(column, desc, q, now, rented):
                if current < 0 or col[i] != previous:
                    current, previous = current + 1, col[i]
                rank[i] = current
            hits.sort(key=rank.__getitem__)
        return hits[: q.limit]


def select_columns(raw: Any) -> Sequence[str] | None:
    """`select_cols` (a JSON array) -> the columns to return (plus id), or None for all."""
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(c, str) for c in raw):
        raise QueryError("Invalid query: select_cols must be a list of column names")
    if not raw or "*" in raw:
        return None
    return ["id", *[c for c in raw if c != "id"]]
