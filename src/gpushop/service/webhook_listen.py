"""Cross-replica wake-ups for the webhook dispatcher on PostgreSQL: a transaction that makes
deliveries due NOTIFYs ``gpushop_webhooks`` (store/webhooks.py), delivered at its commit; each
dispatcher holds a LISTEN connection and looks at once. The connection is reopened quietly when
it drops; meanwhile the dispatcher polls, as it always does."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg
from sqlalchemy import make_url

from gpushop.store.webhooks import CHANNEL

log = logging.getLogger("gpushop.webhooks")


def _quiet(exc: BaseException, url: str) -> str:
    """The error's first line, without the URL's password should a driver ever quote it."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    password = make_url(url).password
    return text.replace(str(password), "***") if password else text


async def listen(
    url: str,
    wake: Callable[[], None],
    up: asyncio.Event,
    *,
    retry_s: float = 0.5,
    max_retry_s: float = 30.0,
) -> None:
    """Call ``wake`` on every notification, until cancelled; ``up`` is set while listening.
    ``url``: a libpq URL (it holds the password: never logged)."""
    delay = retry_s
    while True:
        try:
            conn = await psycopg.AsyncConnection.connect(
                url,
                autocommit=True,
                connect_timeout=10,
                # a server that vanished without a word is noticed within about a minute
                keepalives=1,
                keepalives_idle=30,
                keepalives_interval=10,
                keepalives_count=3,
            )
            try:
                await conn.execute(f"LISTEN {CHANNEL}")
                up.set()
                delay = retry_s
                wake()  # what was made due while nobody listened
                async for _ in conn.notifies():
                    wake()
            finally:
                up.clear()
                await conn.close()
        except psycopg.Error as exc:
            log.info("webhooks: no LISTEN connection (%s); polling meanwhile", _quiet(exc, url))
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_retry_s)
