"""The dispatcher against a real receiver: signed deliveries, retries on the schedule with the
same webhook-id, 410 and consistent failure disable the endpoint, no redirect followed, no
private address reached (nor one a name rebinds to), Retry-After and timeouts honoured."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from datetime import timedelta
from typing import Any

import pytest

import gpushop
from gpushop.service.webhook_dispatch import GONE
from gpushop.service.webhook_policy import ATTEMPTS
from gpushop.store.secret_box import keygen
from gpushop.store.webhooks import Webhooks

from .conftest import Bed
from .helpers import eventually, verify
from .receiver import Reply


async def test_retried_until_delivered_with_the_same_webhook_id(bed: Bed) -> None:
    made = await bed.endpoint("/flaky")
    bed.receiver.script("/flaky", *[Reply(500)] * 3)
    bed.start(bed.dispatcher(webhook_retry_scale=0.0001))
    bed.tell()
    await eventually(lambda: bed.one(made["id"]).status == "delivered", "the 4th attempt")

    delivery = bed.one(made["id"])
    requests = bed.receiver.at("/flaky")
    assert len(requests) == 4 and delivery.attempts == 4 and delivery.last_status == 200
    assert {r.headers["webhook-id"] for r in requests} == {delivery.msg_id}
    for request in requests:
        assert request.body == delivery.body.encode()  # the exact bytes, every time
        assert verify(made["secret"], request) == json.loads(delivery.body)
        assert request.headers["content-type"] == "application/json"
        assert request.headers["user-agent"] == f"gpushop-webhooks/{gpushop.__version__}"
        assert request.headers["webhook-signature"].startswith("v1,")
    log = bed.store.webhooks.attempts(delivery.id)
    assert [a.status_code for a in log] == [500, 500, 500, 200]
    assert [a.error for a in log] == ["HTTP 500 Internal Server Error"] * 3 + [None]
    assert all(a.replica == "r1" for a in log)


async def test_410_disables_the_endpoint_and_holds_what_follows(bed: Bed) -> None:
    gone = await bed.endpoint("/gone")
    watcher = await bed.endpoint("/watch", ("webhook.disabled",))
    bed.receiver.script("/gone", Reply(410))
    dispatcher = bed.dispatcher()
    bed.tell()
    await dispatcher.drain()  # the 410, then the webhook.disabled event to the watcher

    endpoint = bed.store.webhooks.endpoint(gone["id"])
    assert endpoint is not None and endpoint.disabled_at is not None
    assert endpoint.disabled_reason == GONE
    [told] = bed.store.feed.after(0, types=["webhook.disabled"])
    assert told.reason == GONE and told.data["endpoint_id"] == gone["id"]
    [notice] = bed.receiver.at("/watch")
    assert verify(watcher["secret"], notice)["data"]["endpoint_id"] == gone["id"]  # type: ignore[index]
    assert bed.one(gone["id"]).status == "held"

    bed.tell()
    assert await dispatcher.drain() == 0
    assert len(bed.receiver.at("/gone")) == 1
    assert {d.status for d in bed.deliveries(gone["id"])} == {"held"}


async def test_a_redirect_is_not_followed(bed: Bed) -> None:
    made = await bed.endpoint("/moved")
    target = bed.receiver.url("/target")
    bed.receiver.script("/moved", Reply(302, {"location": target}))
    bed.tell()
    assert await bed.dispatcher(webhook_retry_scale=1.0).drain() == 1

    assert len(bed.receiver.at("/moved")) == 1 and bed.receiver.at("/target") == []
    delivery = bed.one(made["id"])
    assert delivery.status == "pending" and delivery.last_status == 302
    assert delivery.last_error == f"redirect not followed (HTTP 302 to {target})"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_a_private_address_gets_no_request_when_not_allowed(bed: Bed, host: str) -> None:
    made = await bed.endpoint(bed.receiver.url("/inside", host=host))
    bed.tell()
    strict = bed.dispatcher(webhook_allow_private=False, webhook_retry_scale=1.0)
    assert await strict.drain() == 1

    assert bed.receiver.received == []
    delivery = bed.one(made["id"])
    assert delivery.status == "pending" and delivery.last_status is None  # retried later
    [attempt] = bed.store.webhooks.attempts(delivery.id)
    assert attempt.error is not None and "loopback address" in attempt.error
    assert "public addresses only" in attempt.error and "\n" not in attempt.error


class FakeDns:
    """The running loop's getaddrinfo, with one name answered as we say."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
        self.name, self.address = name, "93.184.215.14"  # a public address
        loop = asyncio.get_running_loop()
        real = loop.getaddrinfo

        async def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            if host != self.name:
                return await real(host, port, *args, **kwargs)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (self.address, int(port)))]

        monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)


async def test_a_name_rebound_to_a_private_address_gets_no_request(
    bed: Bed, monkeypatch: pytest.MonkeyPatch
) -> None:
    dns = FakeDns(monkeypatch, "hooks.example.test")
    url = bed.receiver.url("/rebound", host="hooks.example.test")
    made = await bed.endpoint(url, webhook_allow_private=False)  # public when it was checked
    dns.address = "127.0.0.1"  # ... and the receiver's address when it is sent
    bed.tell()
    assert await bed.dispatcher(webhook_allow_private=False, webhook_retry_scale=1.0).drain() == 1
    assert bed.receiver.received == []
    [attempt] = bed.store.webhooks.attempts(bed.one(made["id"]).id)
    assert attempt.error is not None
    assert "hooks.example.test resolves to 127.0.0.1: 127.0.0.1 is a loopback" in attempt.error

    # allowed, the request goes to the address that was checked, under the URL's host name
    assert await bed.dispatcher(webhook_allow_private=True).drain() == 0  # not due yet
    bed.store.webhooks.redeliver(bed.one(made["id"]).id)
    assert await bed.dispatcher(webhook_allow_private=True).drain() == 1
    [request] = bed.receiver.at("/rebound")
    assert request.headers["host"] == f"hooks.example.test:{bed.receiver.port}"
    verify(made["secret"], request)


async def test_retry_after_is_honoured(bed: Bed) -> None:
    made = await bed.endpoint("/busy")
    bed.receiver.script("/busy", Reply(503, {"retry-after": "1"}))
    bed.start(bed.dispatcher(webhook_retry_scale=0.0001))  # the schedule alone: 0.5 ms
    bed.tell()
    await eventually(lambda: bed.one(made["id"]).status == "delivered", "the retry")
    first, second = bed.receiver.at("/busy")
    assert second.at - first.at >= 0.95
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert [a.status_code for a in bed.store.webhooks.attempts(bed.one(made["id"]).id)] == [
        503,
        200,
    ]


async def test_a_timeout_is_recorded(bed: Bed) -> None:
    made = await bed.endpoint("/slow")
    bed.receiver.script("/slow", Reply(200, delay=5))
    bed.tell()
    assert await bed.dispatcher(webhook_timeout=0.3, webhook_retry_scale=1.0).drain() == 1
    delivery = bed.one(made["id"])
    assert delivery.status == "pending" and delivery.last_status is None
    assert delivery.last_error == "timed out after 0.3 s"
    [attempt] = bed.store.webhooks.attempts(delivery.id)
    assert 250 <= attempt.duration_ms < 2000


async def test_consistent_failure_disables_the_endpoint(bed: Bed) -> None:
    made = await bed.endpoint("/down")
    bed.receiver.script("/down", *[Reply(500)] * ATTEMPTS)
    bed.start(bed.dispatcher(webhook_retry_scale=0.000001))  # 75.6 h in 0.27 s
    bed.tell()

    def disabled() -> bool:  # the last step: the attempt is recorded first
        endpoint = bed.store.webhooks.endpoint(made["id"])
        return endpoint is not None and endpoint.disabled_at is not None

    await eventually(disabled, "the endpoint disabled after the last attempt")

    delivery = bed.one(made["id"])
    assert delivery.status == "failed" and delivery.attempts == ATTEMPTS
    assert len(bed.receiver.at("/down")) == ATTEMPTS
    endpoint = bed.store.webhooks.endpoint(made["id"])
    assert endpoint is not None
    assert endpoint.disabled_reason is not None
    assert endpoint.disabled_reason.startswith("consistent failure")
    assert endpoint.disabled_reason.endswith("the last: HTTP 500 Internal Server Error")
    assert bed.store.feed.after(0, types=["webhook.disabled"])


@pytest.mark.parametrize(("change", "after"), [("delete", "failed"), ("disable", "held")])
async def test_an_endpoint_deleted_or_disabled_during_an_attempt_stays_so(
    bed: Bed, change: str, after: str
) -> None:
    made = await bed.endpoint("/changed")
    bed.receiver.script("/changed", Reply(500, delay=0.2))
    bed.tell()
    draining = asyncio.create_task(bed.dispatcher(webhook_retry_scale=1.0).drain())
    await eventually(lambda: bed.receiver.at("/changed"), "the request")
    if change == "delete":
        bed.store.webhooks.delete_endpoint(made["id"])
    else:
        bed.store.webhooks.disable(made["id"], "by hand")
    assert await draining == 1
    delivery = bed.one(made["id"])
    assert delivery.status == after and delivery.attempts == 1  # not pending again
    assert delivery.last_error == "HTTP 500 Internal Server Error"


async def test_the_next_due_time_counts_a_claim_in_progress(
    bed: Bed, monkeypatch: pytest.MonkeyPatch
) -> None:
    await bed.endpoint("/claimed")
    bed.tell()
    due = bed.store.webhooks.due_at()
    assert due is not None and due <= bed.store.clock()
    [claimed] = bed.store.webhooks.claim("elsewhere", lock_s=60)
    later = bed.store.webhooks.due_at()  # another replica's claim: not before it lapses
    assert later is not None and later >= bed.store.clock() + timedelta(seconds=59)
    # a dispatcher that finds nothing to claim sleeps until then (or its poll), not in a loop
    claims: list[int] = []
    claim = Webhooks.claim

    def counted(self: Webhooks, *args: Any, **kwargs: Any) -> Any:
        found = claim(self, *args, **kwargs)
        claims.append(len(found))
        return found

    monkeypatch.setattr(Webhooks, "claim", counted)
    bed.start(bed.dispatcher(webhook_poll=0.05))
    await asyncio.sleep(0.3)  # about 6 polls
    assert bed.receiver.received == [] and bed.store.webhooks.attempts(claimed.id) == []
    assert 1 <= len(claims) <= 15 and not any(claims)


async def test_a_secret_that_cannot_be_opened_is_retried_and_never_logged(
    bed: Bed, caplog: pytest.LogCaptureFixture
) -> None:
    made = await bed.endpoint("/locked")
    bed.tell()
    caplog.set_level(logging.DEBUG, "gpushop")
    other_key = bed.dispatcher(secret_key=keygen(), webhook_retry_scale=1.0)
    assert await other_key.drain() == 1
    assert bed.receiver.received == []
    delivery = bed.one(made["id"])
    assert delivery.status == "pending" and delivery.last_error is not None
    assert delivery.last_error.startswith("cannot sign:")
    assert "cannot be signed" in caplog.text
    assert made["secret"] not in caplog.text and "whsec_" not in caplog.text
    assert "fernet:" not in caplog.text


async def test_a_connection_refused_is_a_failure(bed: Bed) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nobody listens there once closed
    made = await bed.endpoint(f"http://127.0.0.1:{port}/nobody")
    bed.tell()
    assert await bed.dispatcher(webhook_retry_scale=1.0).drain() == 1
    delivery = bed.one(made["id"])
    assert delivery.status == "pending" and delivery.last_error is not None
    assert delivery.last_error.startswith("cannot connect")
