"""Parsing of the units users type: durations, sizes, prices."""

from __future__ import annotations

import re

from gpushop.errors import UsageError

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``90s``, ``30m``, ``2h``, ``1h30m``, or a bare number of seconds.

    >>> parse_duration("1h30m")
    5400.0
    >>> parse_duration("45")
    45.0
    """
    raw = text.strip().lower()
    try:
        value = float(raw)
    except ValueError:
        pos = 0
        total = 0.0
        for match in _DURATION_PART.finditer(raw):
            if match.start() != pos:
                break
            total += float(match.group(1)) * _SECONDS[match.group(2)]
            pos = match.end()
        if pos != len(raw) or not raw:
            raise UsageError(f"invalid duration {text!r}: use e.g. 90s, 30m, 2h or 1h30m") from None
        value = total
    if value <= 0:
        raise UsageError(f"invalid duration {text!r}: must be positive")
    return value


def mb_to_gb(mb: float) -> float:
    """Vast.ai reports MB; we show GB as its own CLI does (MB / 1000)."""
    return mb / 1000.0
