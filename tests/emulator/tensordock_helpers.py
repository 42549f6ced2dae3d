"""Helpers for the TensorDock emulator tests: the wire, a VM on a chosen GPU, SSH as `user`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import asyncssh
import httpx

T = TypeVar("T")
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tensordock"
RTX4090 = "geforcertx4090-pcie-24gb"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def td_client(url: str, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url, headers=headers, timeout=30)


def new_key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519")


def public_text(key: asyncssh.SSHKey) -> str:
    return key.export_public_key().decode().strip()


def hostnodes(client: httpx.Client) -> list[dict[str, Any]]:
    response = client.get("/hostnodes")
    assert response.status_code == 200, response.text
    nodes: list[dict[str, Any]] = response.json()["data"]["hostnodes"]
    return nodes


def free_gpus(node: dict[str, Any], model: str) -> int:
    return sum(
        g["availableCount"] for g in node["available_resources"]["gpus"] if g["v0Name"] == model
    )


def node_with(client: httpx.Client, model: str = RTX4090, count: int = 1) -> dict[str, Any]:
    """A hostnode with `count` free GPUs of `model` (the one with most ports, then first)."""
    nodes = [n for n in hostnodes(client) if free_gpus(n, model) >= count]
    assert nodes, f"no hostnode with {count} x {model}"
    return max(nodes, key=lambda n: len(n["available_resources"]["available_ports"]))


def body(
    key: asyncssh.SSHKey | str | None = None, *, name: str = "vm-test", **attrs: Any
) -> dict[str, Any]:
    """A create body; `attrs` override the attributes (resources by `resources=`)."""
    resources = {"vcpu_count": 4, "ram_gb": 16, "storage_gb": 100}
    resources.update(attrs.pop("resources", {}))
    attributes: dict[str, Any] = {
        "name": name,
        "type": "virtualmachine",
        "image": "ubuntu2404",
        "resources": resources,
    }
    if key is not None:
        attributes["ssh_key"] = key if isinstance(key, str) else public_text(key)
    attributes.update(attrs)
    return {"data": {"type": "virtualmachine", "attributes": attributes}}


def create_on(
    client: httpx.Client,
    key: asyncssh.SSHKey,
    node: dict[str, Any],
    model: str | None = RTX4090,
    count: int = 1,
    **attrs: Any,
) -> tuple[str, int]:
    """A VM on `node` with SSH forwarded from the node's first free port: (id, ssh port)."""
    port = node["available_resources"]["available_ports"][0]
    resources = dict(attrs.pop("resources", {}))
    if model is not None:
        resources["gpus"] = {model: {"count": count}}
    payload = body(
        key,
        hostnode_id=node["id"],
        port_forwards=[{"internal_port": 22, "external_port": port}],
        resources=resources,
        **attrs,
    )
    response = client.post("/instances", json=payload)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert "error" not in response.json(), response.text
    return str(data["id"]), int(port)


def detail(client: httpx.Client, vm_id: str) -> dict[str, Any]:
    response = client.get(f"/instances/{vm_id}")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def wait_for(
    client: httpx.Client, vm_id: str, status: str, *, ip: bool = False, timeout: float = 10
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        row = detail(client, vm_id)
        if row["status"] == status and (not ip or row["ipAddress"]):
            return row
        assert time.monotonic() < deadline, f"still {row['status']} (ip {row['ipAddress']!r})"
        time.sleep(0.01)


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await asyncio.wait_for(coro, 60)

    return asyncio.run(main())


async def connect(
    port: int, key: asyncssh.SSHKey, user: str = "user"
) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        "127.0.0.1",
        port,
        username=user,
        client_keys=[key],
        known_hosts=None,
        agent_path=None,
        config=None,
    )


def ssh(port: int, key: asyncssh.SSHKey, command: str) -> asyncssh.SSHCompletedProcess:
    async def go() -> asyncssh.SSHCompletedProcess:
        async with await connect(port, key) as conn:
            return await conn.run(command)

    return run(go())


def shape(value: Any) -> Any:
    """Keys and JSON types, recursively (lists: the merged shape of their items)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        merged: Any = None
        for item in value:
            merged = merge(merged, shape(item))
        return [merged]
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if value is None:
        return "null"
    return type(value).__name__


def merge(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: merge(a.get(k), b.get(k)) for k in {**a, **b}}
    if isinstance(a, list) and isinstance(b, list):
        return [merge(a[0], b[0])]
    assert a == b, f"mixed types in a list: {a} vs {b}"
    return a


def assert_same_shape(ours: Any, theirs: Any, path: str = "$") -> None:
    """`ours` has exactly the keys of `theirs` at every level, and the same JSON types
    (numbers are numbers: the fixtures write 0.2 and 2 alike; an empty list matches any)."""
    a, b = shape(ours), shape(theirs)
    _compare(a, b, path)


def _compare(a: Any, b: Any, path: str) -> None:
    if isinstance(b, dict):
        assert isinstance(a, dict), f"{path}: {a} is not an object"
        assert set(a) == set(b), f"{path}: keys {sorted(a)} != {sorted(b)}"
        for k in b:
            _compare(a[k], b[k], f"{path}.{k}")
    elif isinstance(b, list):
        assert isinstance(a, list), f"{path}: {a} is not a list"
        if a[0] is not None and b[0] is not None:
            _compare(a[0], b[0], f"{path}[]")
    else:
        assert a == b, f"{path}: {a} != {b}"
