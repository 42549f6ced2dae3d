"""Helpers for the SSH tests: keys, a running instance, an asyncssh client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncssh
import httpx

T = TypeVar("T")


def new_key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519")


def public_text(key: asyncssh.SSHKey) -> str:
    return key.export_public_key().decode().strip()


def register(client: httpx.Client, key: asyncssh.SSHKey) -> int:
    response = client.post("/api/v0/ssh/", json={"ssh_key": public_text(key)})
    assert response.status_code == 200, response.text
    return int(response.json()["key"]["id"])


def cheapest(client: httpx.Client, query: dict[str, Any] | None = None) -> dict[str, Any]:
    q = {"rentable": {"eq": True}, "order": [["dph_total", "asc"]], "limit": 5, **(query or {})}
    offers: list[dict[str, Any]] = client.post("/api/v0/bundles/", json=q).json()["offers"]
    return offers[0]


def create(client: httpx.Client, offer_id: int, **body: Any) -> int:
    payload = {"client_id": "me", "image": "vastai/base-image:latest", "disk": 16, **body}
    response = client.put(f"/api/v0/asks/{offer_id}/", json=payload)
    assert response.status_code == 200, response.text
    return int(response.json()["new_contract"])


def show(client: httpx.Client, instance_id: int) -> dict[str, Any] | None:
    row: dict[str, Any] | None = client.get(f"/api/v0/instances/{instance_id}/").json()["instances"]
    return row


def wait_status(
    client: httpx.Client, instance_id: int, status: str | None, timeout: float = 10.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        row = show(client, instance_id)
        assert row is not None
        if row["actual_status"] == status:
            return row
        assert time.monotonic() < deadline, f"still {row['actual_status']}: {row['status_msg']}"
        time.sleep(0.02)


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await asyncio.wait_for(coro, 20)

    return asyncio.run(main())


async def connect(port: int, key: asyncssh.SSHKey) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        "127.0.0.1",
        port,
        username="root",
        client_keys=[key],
        known_hosts=None,
        agent_path=None,
        config=None,
    )


def ssh_run(
    port: int, key: asyncssh.SSHKey, command: str, **kw: Any
) -> asyncssh.SSHCompletedProcess:
    async def go() -> asyncssh.SSHCompletedProcess:
        async with await connect(port, key) as conn:
            return await conn.run(command, **kw)

    return run(go())


def pid_gone(pid: int) -> bool:
    """Dead or a zombie (reaped later by whoever is its parent)."""
    stat = Path(f"/proc/{pid}/stat")
    try:
        text = stat.read_text()
    except OSError:
        return True
    return text.rsplit(")", 1)[1].split()[0] == "Z"


def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def inside(view: dict[str, Any]) -> list[int]:
    """Host pids of an instance's (or VM's) processes but its PID 1, from its control view."""
    return [pid for pid in view["processes"] if pid != view["init_pid"]]


def lasting(view: Callable[[], dict[str, Any]], count: int, timeout: float = 10.0) -> list[int]:
    """Host pids of the `count` processes that stay inside an instance (or VM) besides its PID 1,
    then PID 1's: right after an SSH command returns, the shell that ran it may still be on its
    way out, so a list taken at once may hold a pid about to vanish."""
    found: list[int] = []

    def settled() -> bool:
        nonlocal found
        now = view()
        live = [pid for pid in inside(now) if not pid_gone(pid)]
        found = [*live, now["init_pid"]]
        return len(live) == count

    assert wait_until(settled, timeout), f"not {count} lasting processes inside: {found}"
    return found


def all_gone(pids: list[int]) -> bool:
    return all(pid_gone(pid) for pid in pids)
