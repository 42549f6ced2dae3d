"""Checks and ids the store's modules share: ids for rentals and jobs, the refusal of anything
that looks like a secret, and the lost race of a compare-and-set."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from typing import Any

# Crockford's base32, lower case: no i, l, o, u (nothing to misread in a terminal).
_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_SECRET_KEY = re.compile(
    r"(^|[_\-.])(api[_\-]?key|token|password|passwd|secret|private[_\-]?key|credentials?)($|[_\-.])",
    re.IGNORECASE,
)


class StaleState(ValueError):
    """The rental is not in the state the caller expected: another process moved it first.

    A ``ValueError`` like an illegal transition, so ``except ValueError`` catches both; catch this
    one to tell a lost race from a bug.
    """


def new_rental_id() -> str:
    return "r" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(10))


def check_no_secrets(value: Any, where: str = "details") -> None:
    """Refuse what looks like a credential in a JSON value: the store never holds secrets."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if _SECRET_KEY.search(str(key)):
                raise ValueError(
                    f"{where}: key {key!r} looks like a secret; secrets are not stored"
                )
            check_no_secrets(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for item in value:
            check_no_secrets(item, where)
    elif isinstance(value, str) and "PRIVATE KEY-----" in value:
        raise ValueError(f"{where}: looks like a private key; secrets are not stored")
