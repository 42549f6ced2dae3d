"""A small on-disk cache of market snapshots, shared by every gpushop command.

Market context (median prices per GPU model) comes from one broad search; caching it for a TTL
(default 60 s) means ``gpushop offers`` and ``gpushop market`` run back to back cost no extra
rate-limited call. One JSON file per provider endpoint, written atomically.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from gpushop.models import Offer

log = logging.getLogger("gpushop.cache")
FORMAT = 1


class MarketCache:
    def __init__(self, directory: Path, ttl_s: float) -> None:
        self.directory = directory
        self.ttl_s = ttl_s

    def _path(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()[:24]
        return self.directory / f"market-{digest}.json"

    def get(self, key: str) -> tuple[float, list[Offer]] | None:
        """(fetched_at epoch, offers) when fresh, else None. A corrupt file is a miss."""
        if self.ttl_s <= 0:
            return None
        path = self._path(key)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError:
            log.warning("ignoring unreadable market cache %s", path)
            return None
        return self.decode(key, raw, str(path))

    def decode(self, key: str, data: bytes, where: str) -> tuple[float, list[Offer]] | None:
        """A stored snapshot, if it is this key's, in this format, and fresh."""
        try:
            raw: Any = orjson.loads(data)
        except orjson.JSONDecodeError:
            log.warning("ignoring unreadable market cache %s", where)
            return None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT or raw.get("key") != key:
            return None
        fetched_at = float(raw.get("fetched_at", 0))
        if time.time() - fetched_at > self.ttl_s or fetched_at > time.time() + 5:
            return None
        try:
            offers = [Offer(**row) for row in raw["offers"]]
        except (TypeError, KeyError):
            return None
        return fetched_at, offers

    @staticmethod
    def encode(key: str, offers: list[Offer]) -> bytes:
        payload = {
            "format": FORMAT,
            "key": key,
            "fetched_at": time.time(),
            # orjson writes dataclasses natively: 30x faster than dataclasses.asdict's deep copy
            "offers": offers,
        }
        return orjson.dumps(payload)

    def put(self, key: str, offers: list[Offer]) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".market-", suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                fh.write(self.encode(key, offers))
            os.replace(tmp, self._path(key))
        except OSError as exc:  # a cache that cannot be written is only slower, never fatal
            log.warning("cannot write market cache: %s", exc)

    def clear(self) -> None:
        for path in self.directory.glob("market-*.json"):
            path.unlink(missing_ok=True)
