"""Users of the team service: a token shown once and kept only as a hash, Bearer auth on the
API, revoke and rotate that take effect at once, quotas kept."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from cli_run import cli

from .conftest import free_port


def add(capsys: Any, *argv: str) -> str:
    code, out, err = cli(capsys, "users", "add", *argv)
    assert code == 0, err
    token = out.strip()
    assert token.startswith("gps_") and len(token) > 40
    assert "shown once" in err and token not in err
    return token


def me(url: str, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{url}/v1/me", headers=headers)


def test_a_token_is_shown_once_kept_as_a_hash_and_names_its_user(
    serve: Any, environment: dict[str, str], capsys: Any, tmp_path: Path
) -> None:
    url, _ = serve(environment)
    alice = add(capsys, "alice", "--admin")
    bob = add(capsys, "bob", "--max-rentals", "3", "--monthly-budget", "100")
    store = Path(environment["GPUSHOP_DB_URL"].removeprefix("sqlite:///"))
    for token in (alice, bob):  # nowhere on disk, in any form the service could give back
        assert not [
            p for p in store.parent.rglob("*") if p.is_file() and token.encode() in p.read_bytes()
        ]
    shown = me(url, alice).json()
    assert (shown["name"], shown["is_admin"]) == ("alice", True)
    shown = me(url, bob).json()
    assert (shown["name"], shown["is_admin"], shown["max_rentals"]) == ("bob", False, 3)
    assert shown["monthly_budget_usd"] == 100 and "digest" not in shown
    code, out, _ = cli(capsys, "users", "list", "--json")
    listed = {u["name"]: u for u in json.loads(out)}
    assert code == 0 and listed["bob"]["hint"] == bob[:8] + "…"
    assert bob not in out and alice not in out


def test_no_token_or_a_bad_one_is_401_with_a_code(
    serve: Any, environment: dict[str, str], capsys: Any
) -> None:
    url, _ = serve(environment)
    add(capsys, "carol")
    for token in (None, "gps_not-a-token", "not even bearer"):
        answer = me(url, token)
        assert answer.status_code == 401
        assert answer.json()["code"] == "unauthorized"
        assert answer.headers["www-authenticate"] == "Bearer"
    basic = httpx.get(f"{url}/v1/me", headers={"Authorization": "Basic Y2Fyb2w6eA=="})
    assert basic.status_code == 401


def test_revoke_and_rotate_take_effect_at_once(
    serve: Any, environment: dict[str, str], capsys: Any
) -> None:
    url, _ = serve(environment)
    old = add(capsys, "dave")
    assert me(url, old).status_code == 200
    code, out, _ = cli(capsys, "users", "rotate", "dave")
    new = out.strip()
    assert code == 0 and new.startswith("gps_") and new != old
    assert me(url, old).status_code == 401 and me(url, new).status_code == 200
    assert cli(capsys, "users", "revoke", "dave")[0] == 0
    assert me(url, new).status_code == 401


def test_bad_input_is_one_line_and_exit_2(environment: dict[str, str], capsys: Any) -> None:
    add(capsys, "erin")
    for argv, says in (
        (("users", "add", "erin"), "exists already"),
        (("users", "add", "Erin Smith"), "lower-case letters"),
        (("users", "set", "nobody", "--max-rentals", "1"), "no user named 'nobody'"),
        (("users", "add", "frank", "--max-rentals", "-1"), "--max-rentals"),
    ):
        code, _, err = cli(capsys, *argv)
        assert code == 2 and says in err and err.count("\n") == 1, (argv, err)


def test_a_token_past_its_request_limit_gets_429_with_retry_after(
    serve: Any, environment: dict[str, str], capsys: Any
) -> None:
    url, _ = serve({**environment, "GPUSHOP_API_RATE_LIMIT": "5/minute"})
    fast, slow = add(capsys, "fast"), add(capsys, "slow")
    answers = [me(url, fast) for _ in range(8)]
    assert [a.status_code for a in answers] == [200] * 5 + [429] * 3
    limited = answers[-1]
    assert limited.json()["code"] == "rate_limited"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert me(url, slow).status_code == 200  # per token: another user is not held up


def test_a_bad_request_limit_is_one_line_at_start(environment: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gpushop", "serve", "--port", str(free_port())],
        env={**environment, "GPUSHOP_API_RATE_LIMIT": "lots"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "GPUSHOP_API_RATE_LIMIT 'lots'" in done.stderr
