"""The shared HTTP layer's retry rules, against the emulator's fault injection."""

from __future__ import annotations

import time
from typing import Any

import pytest

from gpushop import errors
from gpushop.models import CreateRequest, OfferQuery, SortKey
from gpushop.providers.http import RetryPolicy
from gpushop.providers.vastai import VastAIProvider

FAST = RetryPolicy(attempts=4, backoff_base_s=0.01, backoff_max_s=0.05)


def provider(emu: Any, key: str | None = "default", **kw: Any) -> VastAIProvider:
    return VastAIProvider(
        url=emu.url,
        api_key=emu.api_key if key == "default" else key,
        retry=kw.pop("retry", FAST),
        rate_limit=kw.pop("rate_limit", False),
        **kw,
    )


async def first_offer_id(p: VastAIProvider) -> str:
    offers = await p.search_offers(OfferQuery(), pool=1, sort=SortKey.PRICE)
    return offers[0].offer_id


def request(offer_id: str) -> CreateRequest:
    return CreateRequest(offer_id=offer_id, label="gpushop-test00-r1", disk_gb=32, image="img")


async def test_idempotent_calls_retry_5xx(emulator: Any) -> None:
    p = provider(emulator)
    emulator.control.fault("GET /api/v1/instances/", "status", status=503, count=2)
    assert await p.list_instances() == []
    assert emulator.control.request_count("GET /api/v1/instances/") == 3
    await p.aclose()


async def test_create_is_never_retried_after_an_unclear_failure(emulator: Any) -> None:
    p = provider(emulator)
    offer_id = await first_offer_id(p)
    emulator.control.fault("PUT /api/v0/asks/{id}/", "status", status=503, count=1)
    with pytest.raises(errors.ProviderUnavailable):
        await p.create_instance(request(offer_id))
    assert emulator.control.request_count("PUT /api/v0/asks/{id}/") == 1
    emulator.control.fault("PUT /api/v0/asks/{id}/", "drop", count=1)
    with pytest.raises(errors.ProviderUnavailable, match="lost the connection"):
        await p.create_instance(request(offer_id))
    # the dropped call did act: exactly one instance exists, and we did not buy a second
    assert emulator.control.request_count("PUT /api/v0/asks/{id}/") == 2
    assert len(emulator.control.state()["instances"]) == 1
    await p.aclose()


async def test_create_is_retried_on_429_which_proves_nothing_was_done(emulator: Any) -> None:
    p = provider(emulator)
    offer_id = await first_offer_id(p)
    emulator.control.fault("PUT /api/v0/asks/{id}/", "status", status=429, count=1)
    result = await p.create_instance(request(offer_id))
    assert result.started
    assert len(emulator.control.state()["instances"]) == 1
    await p.aclose()


async def test_retry_after_is_honoured(emulator: Any) -> None:
    p = provider(emulator)
    emulator.control.fault(
        "POST /api/v0/bundles/", "status", status=429, count=1, headers={"Retry-After": "1"}
    )
    started = time.perf_counter()
    await first_offer_id(p)
    assert time.perf_counter() - started >= 1.0
    await p.aclose()


async def test_retries_give_up_with_a_typed_error(emulator: Any) -> None:
    p = provider(emulator)
    emulator.control.fault("POST /api/v0/bundles/", "status", status=502, count=10)
    with pytest.raises(errors.ProviderUnavailable):
        await first_offer_id(p)
    assert emulator.control.request_count("POST /api/v0/bundles/") == FAST.attempts
    await p.aclose()


async def test_gone_offer_is_offer_unavailable(emulator: Any) -> None:
    p = provider(emulator)
    offer_id = await first_offer_id(p)
    await p.create_instance(request(offer_id))
    with pytest.raises(errors.OfferUnavailable):
        await p.create_instance(request(offer_id))
    await p.aclose()


async def test_keyless_calls_that_need_a_key_name_the_variable(emulator: Any) -> None:
    p = provider(emulator, key=None)
    with pytest.raises(errors.AuthFailed, match="VASTAI_API_KEY"):
        await p.list_instances()
    await p.aclose()


async def test_client_side_limiter_keeps_us_under_the_real_limits(make_emulator: Any) -> None:
    emu = make_emulator(rate_limit=True)
    # without our limiter, three searches in a row meet the server's limit (burst 2, then 2 s)
    bare = VastAIProvider(
        url=emu.url,
        api_key=emu.api_key,
        retry=RetryPolicy(attempts=1, rate_limit_budget_s=0),
        rate_limit=False,
    )
    with pytest.raises(errors.RateLimited):
        for _ in range(3):
            await first_offer_id(bare)
    await bare.aclose()
    emu.control.reset()
    # with it, the same three calls are spaced out and all succeed
    limited = VastAIProvider(url=emu.url, api_key=emu.api_key, retry=RetryPolicy(attempts=2))
    started = time.perf_counter()
    for _ in range(3):
        await first_offer_id(limited)
    assert time.perf_counter() - started >= 2.0
    assert [r["status"] for r in emu.control.requests()].count(200) == 3
    await limited.aclose()


async def test_instance_lifecycle_through_the_provider(emulator: Any) -> None:
    from gpushop.models import InstanceStatus

    p = provider(emulator)
    offer_id = await first_offer_id(p)
    created = await p.create_instance(request(offer_id))
    inst = await p.get_instance(created.instance_id)
    assert inst is not None and inst.label == "gpushop-test00-r1"
    ours = await p.list_instances(label_prefix="gpushop-test00-")
    assert [i.instance_id for i in ours] == [created.instance_id]
    assert await p.list_instances(label_prefix="gpushop-other-") == []
    assert await p.set_state(created.instance_id, "stopped")
    stopped = await p.get_instance(created.instance_id)
    assert stopped is not None and stopped.status is InstanceStatus.STOPPED
    assert await p.destroy_instance(created.instance_id) is True
    assert await p.get_instance(created.instance_id) is None
    assert await p.destroy_instance(created.instance_id) is False
    await p.aclose()


async def test_processes_sharing_a_key_queue_for_its_limits_instead_of_colliding(
    make_emulator: Any, tmp_path: Any
) -> None:
    import asyncio

    emu = make_emulator(rate_limit=True)

    async def burst(shared: bool) -> list[int]:
        emu.control.reset()
        # two clients with the same key, as two gpushop processes would be
        clients = [
            VastAIProvider(
                url=emu.url,
                api_key=emu.api_key,
                shared_limits_dir=tmp_path / "limits" if shared else None,
            )
            for _ in range(2)
        ]
        await asyncio.gather(*(c.list_instances() for c in clients for _ in range(2)))
        for c in clients:
            await c.aclose()
        return [r["status"] for r in emu.control.requests()]

    apart = await burst(shared=False)
    assert 429 in apart  # each paces itself, yet together they pass the server's limit
    together = await burst(shared=True)
    assert together == [200, 200, 200, 200]  # one queue: no 429 at all
