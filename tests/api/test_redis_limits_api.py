"""The per-token request limits of two `gpushop serve` replicas through Redis: a token's
requests count together whichever replica they reach, and every key they write in Redis is under
the deployment's GPUSHOP_REDIS_PREFIX (two deployments may share one Redis)."""

from __future__ import annotations

from typing import Any

import httpx
import redis

from .conftest import token


def test_a_tokens_limit_holds_across_replicas_under_the_prefix(
    serve: Any, environment: dict[str, str], capsys: Any, redis_url: Any
) -> None:
    env = {
        **environment,
        "GPUSHOP_REDIS_URL": str(redis_url),
        "GPUSHOP_REDIS_PREFIX": redis_url.prefix,
        "GPUSHOP_API_RATE_LIMIT": "6/minute",
    }
    url_a, _ = serve(env)
    url_b, _ = serve(env)
    alice = token(capsys, "alice")
    answers = [httpx.get(f"{url}/v1/me", headers=alice).status_code for url in [url_a, url_b] * 4]
    # six in the minute, whichever replica counted them; then 429 on both
    assert answers == [200] * 6 + [429, 429], answers
    client = redis.Redis.from_url(str(redis_url))
    try:
        user_id = httpx.get(f"{url_a}/v1/me", headers=token(capsys, "bob")).json()["id"]
        ours = [k.decode() for k in client.scan_iter(match=f"{redis_url.prefix}*")]
        assert any(user_id in key for key in ours), ours
        outside = [
            k
            for k in client.scan_iter(match=f"*{user_id}*")
            if not k.decode().startswith(redis_url.prefix)
        ]
        assert outside == []
    finally:
        client.close()
