"""Webhook endpoints of the team service's users: register one (a URL, the event types it
wants; a ``whsec_`` secret shown once), list, remove, ping, read its delivery log, redeliver,
enable again after it was disabled, rotate its secret. Signing per Standard Webhooks v1."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from datetime import datetime, timedelta
from typing import Any

from gpushop.config import Settings
from gpushop.errors import NotFound, UsageError
from gpushop.net_guard import AddressRefused as AddressRefused
from gpushop.net_guard import Unresolvable as Unresolvable
from gpushop.net_guard import parse, resolve
from gpushop.store import Store, User
from gpushop.store.events import KNOWN_TYPES
from gpushop.store.secret_box import SecretBox
from gpushop.store.secret_box import SecretKeyMissing as SecretKeyMissing
from gpushop.store.secret_box import SecretUnreadable as SecretUnreadable
from gpushop.store.secret_box import keygen as keygen
from gpushop.store.webhooks import Attempt, Delivery, Endpoint, iso

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
ROTATION_OVERLAP = timedelta(hours=24)  # the old secret signs too, while consumers switch
_TYPE = re.compile(r"[a-z_]+\.(?:\*|[a-z_]+)")


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256>`` of ``{id}.{timestamp}.{body}`` with the secret's key bytes."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def box(cfg: Settings) -> SecretBox:
    key = cfg.gpushop_secret_key
    return SecretBox.from_setting(key.get_secret_value() if key else None)


def signing_secrets(cfg: Settings, endpoint: Endpoint, now: datetime) -> list[str]:
    """The current secret, and the previous one while a rotation's overlap lasts."""
    opened = box(cfg)
    found = [opened.open(endpoint.secret)]
    if endpoint.previous_secret and endpoint.previous_until and endpoint.previous_until > now:
        found.append(opened.open(endpoint.previous_secret))
    return found


def check_event_types(types: list[str]) -> list[str]:
    for wanted in types:
        family = wanted[:-2] if wanted.endswith(".*") else None
        known_family = family is not None and any(t.startswith(family + ".") for t in KNOWN_TYPES)
        if not _TYPE.fullmatch(wanted) or not (wanted in KNOWN_TYPES or known_family):
            raise UsageError(
                f"event_types: {wanted!r} is not an event type; one of "
                + ", ".join(sorted(KNOWN_TYPES))
                + " (or a family such as rental.*)"
            )
    return sorted(set(types))


async def check_url(cfg: Settings, url: str) -> str:
    """A URL webhooks may post to: http(s), no credentials, a host that resolves to public
    addresses only (unless GPUSHOP_WEBHOOK_ALLOW_PRIVATE). Checked again at every connection."""
    url = url.strip()
    if len(url) > 2000:
        raise UsageError("url: at most 2000 characters")
    _, host, port = parse(url)
    await resolve(host, port, allow_private=cfg.gpushop_webhook_allow_private)
    return url


def visible(store: Store, user: User, endpoint_id: str) -> Endpoint:
    """The endpoint if it is the user's (or any, for an admin); 404 otherwise."""
    endpoint = store.webhooks.endpoint(endpoint_id)
    if endpoint is None or not (user.is_admin or endpoint.user_id == user.id):
        raise NotFound(f"no webhook {endpoint_id!r}")
    return endpoint


def view(endpoint: Endpoint) -> dict[str, Any]:
    return {
        "id": endpoint.id,
        "user_id": endpoint.user_id,
        "url": endpoint.url,
        "event_types": endpoint.event_types,
        "description": endpoint.description,
        "created_at": iso(endpoint.created_at),
        "enabled": endpoint.disabled_at is None,
        "disabled_at": iso(endpoint.disabled_at) if endpoint.disabled_at else None,
        "disabled_reason": endpoint.disabled_reason,
        "rotating_until": (
            iso(endpoint.previous_until)
            if endpoint.previous_secret and endpoint.previous_until
            else None
        ),
    }


def attempt_view(attempt: Attempt) -> dict[str, Any]:
    return {
        "at": iso(attempt.at),
        "status_code": attempt.status_code,
        "error": attempt.error,
        "duration_ms": round(attempt.duration_ms, 1),
        "replica": attempt.replica,
    }


def delivery_view(delivery: Delivery, attempts: list[Attempt] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": delivery.id,
        "webhook_id": delivery.msg_id,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "next_attempt_at": iso(delivery.next_attempt_at) if delivery.status == "pending" else None,
        "created_at": iso(delivery.created_at),
        "delivered_at": iso(delivery.delivered_at) if delivery.delivered_at else None,
        "last_status": delivery.last_status,
        "last_error": delivery.last_error,
    }
    if attempts is not None:
        out["attempt_log"] = [attempt_view(a) for a in attempts]
    return out


async def create(
    cfg: Settings, store: Store, user: User, url: str, event_types: list[str], description: str
) -> dict[str, Any]:
    """The new endpoint, with its secret: the only time the secret is shown."""
    url = await check_url(cfg, url)
    types = check_event_types(event_types)
    secret = new_secret()
    endpoint = store.webhooks.add_endpoint(
        user.id, url, types, description.strip()[:500], box(cfg).seal(secret)
    )
    return {**view(endpoint), "secret": secret}


def listing(store: Store, user: User, *, everyone: bool = False) -> list[dict[str, Any]]:
    mine = None if everyone and user.is_admin else user.id
    return [view(e) for e in store.webhooks.endpoints(mine)]


def delete(store: Store, user: User, endpoint_id: str) -> None:
    visible(store, user, endpoint_id)
    store.webhooks.delete_endpoint(endpoint_id)


def ping(store: Store, user: User, endpoint_id: str) -> dict[str, Any]:
    visible(store, user, endpoint_id)
    return delivery_view(store.webhooks.ping(endpoint_id))


def enable(store: Store, user: User, endpoint_id: str) -> dict[str, Any]:
    visible(store, user, endpoint_id)
    resumed = store.webhooks.enable(endpoint_id)
    endpoint = store.webhooks.endpoint(endpoint_id)
    assert endpoint is not None
    return {**view(endpoint), "resumed_deliveries": resumed}


def rotate(cfg: Settings, store: Store, user: User, endpoint_id: str) -> dict[str, Any]:
    """A new secret; for ROTATION_OVERLAP the old one signs too (``webhook-signature`` carries
    both), so that receivers switch over without losing a delivery."""
    endpoint = visible(store, user, endpoint_id)
    secret = new_secret()
    until = store.clock() + ROTATION_OVERLAP
    store.webhooks.reseal(endpoint_id, box(cfg).seal(secret), endpoint.secret, until)
    fresh = store.webhooks.endpoint(endpoint_id)
    assert fresh is not None
    return {**view(fresh), "secret": secret}


def deliveries(
    store: Store,
    user: User,
    endpoint_id: str,
    *,
    status: str | None = None,
    before: int | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    visible(store, user, endpoint_id)
    found = store.webhooks.deliveries(endpoint_id, status=status, before=before, limit=limit)
    return [delivery_view(d, store.webhooks.attempts(d.id)) for d in found]


def redeliver(store: Store, user: User, endpoint_id: str, delivery_id: int) -> dict[str, Any]:
    visible(store, user, endpoint_id)
    delivery = store.webhooks.delivery(delivery_id)
    if delivery is None or delivery.endpoint_id != endpoint_id:
        raise NotFound(f"no delivery {delivery_id} of webhook {endpoint_id!r}")
    return delivery_view(store.webhooks.redeliver(delivery_id))


def reseal_all(cfg: Settings, store: Store) -> int:
    """Every stored secret re-encrypted under GPUSHOP_SECRET_KEY's first key (after putting a
    new key first); how many endpoints. Then the old key can be dropped."""
    opened = box(cfg)
    count = 0
    for endpoint in store.webhooks.endpoints():
        previous = endpoint.previous_secret and opened.reseal(endpoint.previous_secret)
        store.webhooks.reseal(
            endpoint.id, opened.reseal(endpoint.secret), previous or None, endpoint.previous_until
        )
        count += 1
    return count
