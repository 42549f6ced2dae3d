"""/v1/webhooks: a user's webhook endpoints, their delivery log, pings and redeliveries."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/v1", tags=["webhooks"])
