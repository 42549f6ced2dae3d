"""The provider-side label that marks an instance as ours (DESIGN.md, Ids and labels).

``gpushop-<deployment id, 6 chars>-<rental id>``: the deployment id is made once per store, so two
installations sharing one account never touch each other's instances.
"""

from __future__ import annotations

import re

PREFIX = "gpushop-"
_LABEL = re.compile(r"^gpushop-([a-z0-9]{6})-(r[a-z0-9]{4,20})$")


def make_label(deployment_id: str, rental_id: str) -> str:
    label = f"{PREFIX}{deployment_id}-{rental_id}"
    if not _LABEL.match(label):
        raise ValueError(f"not a valid gpushop label: {label!r}")
    return label


def deployment_prefix(deployment_id: str) -> str:
    return f"{PREFIX}{deployment_id}-"


def parse_label(label: str | None) -> tuple[str, str] | None:
    """(deployment id, rental id) of one of our labels; None for anybody else's.

    >>> parse_label("gpushop-a1b2c3-r01jq8z3k2m")
    ('a1b2c3', 'r01jq8z3k2m')
    >>> parse_label("my-own-box") is None
    True
    """
    if not label:
        return None
    match = _LABEL.match(label.strip())
    return (match.group(1), match.group(2)) if match else None
