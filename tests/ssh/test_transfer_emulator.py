"""A transfer round trip against the emulator's SSH endpoint (asyncssh server, SFTP chrooted to
the instance sandbox), under /workspace as on a Vast.ai container."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncssh
import httpx
import pytest
from test_transfer import TREE, make_tree, snapshot

from gpushop.emulator import EmulatorThread
from gpushop.ssh import transfer
from gpushop.ssh.transfer import download, upload


@pytest.fixture
def client(emulator: EmulatorThread) -> Iterator[httpx.Client]:
    emulator.control.reset(provision_delay_s=0.0, loading_delay_s=0.0)
    headers = {"Authorization": f"Bearer {emulator.api_key}"}
    with httpx.Client(base_url=emulator.url, headers=headers, timeout=10) as c:
        yield c


@pytest.fixture
def key(tmp_path: Path) -> tuple[asyncssh.SSHKey, Path]:
    private = asyncssh.generate_private_key("ssh-ed25519")
    path = tmp_path / "id_ed25519"
    path.write_bytes(private.export_private_key())
    path.chmod(0o600)
    return private, path


def running_instance(client: httpx.Client, public_key: str) -> dict[str, Any]:
    assert client.post("/api/v0/ssh/", json={"ssh_key": public_key}).status_code == 200
    query = {"rentable": {"eq": True}, "order": [["dph_total", "asc"]], "limit": 1}
    offer = client.post("/api/v0/bundles/", json=query).json()["offers"][0]
    body = {"client_id": "me", "image": "vastai/base-image:latest", "disk": 16}
    created = client.put(f"/api/v0/asks/{offer['id']}/", json=body).json()
    instance_id = int(created["new_contract"])
    deadline = time.monotonic() + 10
    while True:
        row: dict[str, Any] = client.get(f"/api/v0/instances/{instance_id}/").json()["instances"]
        if row["actual_status"] == "running":
            return row
        assert time.monotonic() < deadline, row["status_msg"]
        time.sleep(0.02)


@pytest.fixture
async def instance(
    client: httpx.Client, key: tuple[asyncssh.SSHKey, Path]
) -> AsyncIterator[tuple[asyncssh.SSHClientConnection, transfer.Endpoint]]:
    private, path = key
    row = running_instance(client, private.export_public_key().decode().strip())
    host, port = "127.0.0.1", int(row["ssh_port"])
    seen: list[asyncssh.SSHKey] = []

    class Tofu(asyncssh.SSHClient):
        def validate_host_public_key(
            self, host: str, addr: str, port: int, key: asyncssh.SSHKey
        ) -> bool:
            seen.append(key)
            return True

    conn, _ = await asyncssh.create_connection(
        Tofu,
        host,
        port,
        username="root",
        client_keys=[private],
        # an empty (not None) known-hosts set: asyncssh then asks validate_host_public_key
        known_hosts=asyncssh.import_known_hosts(""),
        agent_path=None,
        config=None,
    )
    host_key = seen[0].export_public_key().decode().strip()
    yield conn, transfer.Endpoint(host, port, "root", path, host_key)
    conn.close()
    await conn.wait_closed()


async def _same_workspace(conn: asyncssh.SSHClientConnection) -> bool:
    """Whether SFTP and commands agree on /workspace (the emulator's mount namespaces)."""
    async with conn.start_sftp_client() as sftp, sftp.open("/workspace/.probe", "w") as fh:
        await fh.write("probe")
    result = await conn.run("cat /workspace/.probe", check=False)
    return result.stdout == "probe"


@pytest.mark.parametrize("method", ["sftp", "rsync", "scp"])
async def test_round_trip_against_the_emulator(
    instance: tuple[asyncssh.SSHClientConnection, transfer.Endpoint], tmp_path: Path, method: str
) -> None:
    conn, endpoint = instance
    assert await _same_workspace(conn), "SFTP and commands must agree on /workspace"
    src, back = tmp_path / "src", tmp_path / "back"
    make_tree(src)
    report = await upload(conn, src, "/workspace/data", endpoint=endpoint, method=method)
    assert (report.files, report.skipped) == (len(TREE), 0)
    again = await upload(conn, src, "/workspace/data", endpoint=endpoint, method=method)
    assert (again.files, again.skipped) == (0, len(TREE))
    report = await download(conn, "/workspace/data", back, endpoint=endpoint, method=method)
    assert report.files == len(TREE)
    assert snapshot(back) == snapshot(src)
