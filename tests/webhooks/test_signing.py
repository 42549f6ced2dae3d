"""Signing per Standard Webhooks: the spec's test vectors, the reference library as the oracle,
two signatures while a secret is rotated; the retry schedule and Retry-After."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from standardwebhooks import Webhook

from gpushop.service import webhooks as service
from gpushop.service.webhook_policy import (
    ATTEMPTS,
    RETRY_AFTER_CAP_S,
    SCHEDULE_S,
    next_delay,
    retry_after,
)

from .conftest import Bed
from .helpers import verify

KEY = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.mark.parametrize(
    ("msg_id", "body", "expected"),
    [
        (
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            b'{"test": 2432232314}',
            "v1,AQG81rX2n4rTN1fkXoqILSHO9gAOcwya9dP41rhrQDI=",
        ),
        (
            "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
            b'{"type":"instance.terminated","timestamp":"2026-09-30T12:00:00Z",'
            b'"data":{"instance_id":"inst_01J9ZQ3K8M","provider":"runpod"}}',
            "v1,+Wf6Wi3+TV/qTeQYiKoUEsq9vawksKCYWXeL1FWnFrE=",
        ),
    ],
)
def test_sign_matches_the_spec_vectors(msg_id: str, body: bytes, expected: str) -> None:
    assert service.sign(KEY, msg_id, 1674087231, body) == expected
    # the reference library agrees (an aware UTC datetime: its sign() relabels naive ones)
    at = datetime.fromtimestamp(1674087231, UTC)
    assert Webhook(KEY).sign(msg_id, at, body) == expected


def test_a_fresh_secret_is_whsec_and_32_bytes() -> None:
    secret = service.new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32


def test_the_schedule_is_the_specs_scaled_and_jittered() -> None:
    assert ATTEMPTS == 10
    assert sum(SCHEDULE_S) / 3600 == pytest.approx(75.6, abs=0.05)  # the spec's ~75.6 h
    for attempts, step in enumerate(SCHEDULE_S):
        for _ in range(20):
            assert 0.8 * step * 0.5 <= next_delay(attempts, 0.5) <= 1.2 * step * 0.5
    # Retry-After is not scaled: a receiver's wish holds even in a compressed schedule
    assert next_delay(1, 0.001, asked=30.0) == 30.0
    assert next_delay(8, 1.0, asked=1.0) >= 0.8 * SCHEDULE_S[8]


def test_retry_after_reads_seconds_and_dates() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert retry_after("120", now) == 120.0
    assert retry_after(format_datetime(now + timedelta(minutes=5), usegmt=True), now) == 300.0
    assert retry_after(format_datetime(now - timedelta(minutes=5), usegmt=True), now) == 0.0
    assert retry_after("999999999", now) == RETRY_AFTER_CAP_S
    assert retry_after("soon", now) is None
    assert retry_after(None, now) is None


async def test_during_a_rotation_deliveries_verify_with_the_old_and_the_new_secret(
    bed: Bed,
) -> None:
    made = await bed.endpoint("/rotated")
    old = made["secret"]
    new = service.rotate(bed.cfg, bed.store, bed.admin, made["id"])["secret"]
    assert new != old
    bed.tell()
    assert await bed.dispatcher().drain() == 1
    [request] = bed.receiver.at("/rotated")
    signatures = request.headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    assert verify(old, request)["type"] == "reconcile.completed"  # type: ignore[index]
    assert verify(new, request)["type"] == "reconcile.completed"  # type: ignore[index]
