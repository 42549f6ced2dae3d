"""Short offer ids: what tables show and what ``--offer`` accepts.

A full offer id is ``<provider>:<provider's id>`` (``vastai:21262447``,
``tensordock:<hostnode>:<gpu>:<count>``). A table shows the shortest prefix of the provider's id,
at least ``MIN_SHORT`` characters, that matches no other current offer (``2126244``); with offers
of several providers in one table, the provider stays in front (``tensordock:1a2b``). JSON keeps
the full id.

``--offer TOKEN`` takes a full id, a short id of a table shown on this machine in the last day
(exactly the offer shown there: if that one is gone, it is gone, never another that shares the
prefix), or any prefix of a provider's id, or of a full id, that matches one current offer.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import orjson

from gpushop.errors import NoMatchError, UsageError

MIN_SHORT = 4
SHOWN_FILE = "offers-shown.json"
SHOWN_TTL_S = 24 * 3600.0
SHOWN_MAX = 2000


def provider_of(offer_id: str) -> str:
    return offer_id.partition(":")[0]


def local_part(offer_id: str) -> str:
    """The provider's own id: everything after the first ``:``."""
    return offer_id.partition(":")[2]


def matching(token: str, universe: Iterable[str]) -> list[str]:
    """The ids ``token`` names: the full id itself, else every id whose provider's id is
    ``token``, else every id that starts with it or whose provider's id starts with it."""
    ids = sorted(set(universe))
    if token in ids:
        return [token]
    exact = [i for i in ids if local_part(i) == token]
    if exact:
        return exact
    return [i for i in ids if i.startswith(token) or local_part(i).startswith(token)]


def _common(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def short_ids(shown: Sequence[str], universe: Iterable[str]) -> dict[str, str]:
    """Full id -> the short id a table shows, unique among ``universe`` and ``shown``: the
    shortest prefix of the provider's id (at least MIN_SHORT characters) that ``matching``
    finds nothing else for, from the neighbours in sorted order (20,000 offers: milliseconds)."""
    everything = set(universe) | set(shown)
    locals_sorted = sorted(local_part(i) for i in everything)
    several_providers = len({provider_of(i) for i in shown}) > 1
    out: dict[str, str] = {}
    for offer_id in shown:
        local = local_part(offer_id)
        pos = bisect.bisect_left(locals_sorted, local)
        shared = max(
            [
                _common(local, locals_sorted[j])
                for j in (pos - 1, pos + 1)
                if 0 <= j < len(locals_sorted)
            ],
            default=0,
        )
        length = max(min(MIN_SHORT, len(local)), shared + 1)
        short = local[:length]
        if not short or matching(short, everything) != [offer_id]:
            short = offer_id  # the same provider's id at two providers, or a clash with a full id
        elif several_providers:
            short = f"{provider_of(offer_id)}:{short}"
        out[offer_id] = short
    return out


def resolve(token: str, universe: Iterable[str]) -> str:
    """The one current offer id ``token`` names. Ambiguous: UsageError (exit 2); none:
    NoMatchError (exit 6). Both are one line."""
    token = token.strip()
    if not token:
        raise UsageError("--offer is empty: give an offer id from `gpushop offers`")
    found = matching(token, universe)
    if len(found) == 1:
        return found[0]
    if not found:
        raise NoMatchError(f"offer {token} is not available or does not fit")
    more = f" and {len(found) - 3} more" if len(found) > 3 else ""
    raise UsageError(
        f"offer {token} is ambiguous: it matches {', '.join(found[:3])}{more}; give more of the id"
    )


# -- what the tables of this machine showed ----------------------------------------------------


def _shown_path(cache_dir: Path) -> Path:
    return cache_dir / SHOWN_FILE


def _load(cache_dir: Path, now: float) -> dict[str, list[object]]:
    try:
        raw = orjson.loads(_shown_path(cache_dir).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    if not isinstance(raw, dict):
        return {}
    return {
        short: entry
        for short, entry in raw.items()
        if isinstance(entry, list)
        and len(entry) == 2
        and isinstance(entry[0], str)
        and isinstance(entry[1], int | float)
        and now - entry[1] < SHOWN_TTL_S
    }


def remember(cache_dir: Path, shorts: dict[str, str], now: float | None = None) -> None:
    """Record the short ids a table showed (short -> full), newest first; best effort."""
    now = time.time() if now is None else now
    entries = _load(cache_dir, now)
    for full, short in shorts.items():
        if short != full:
            entries.pop(short, None)
            entries[short] = [full, now]
    kept = dict(list(entries.items())[-SHOWN_MAX:])
    with contextlib.suppress(OSError):
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".shown-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(orjson.dumps(kept))
            os.replace(tmp, _shown_path(cache_dir))
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def recall(cache_dir: Path, token: str, now: float | None = None) -> str | None:
    """The full id a table of this machine showed as ``token`` in the last day, if any."""
    entry = _load(cache_dir, time.time() if now is None else now).get(token.strip())
    return str(entry[0]) if entry else None
