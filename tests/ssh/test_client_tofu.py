"""Trust on first use in gpushop.ssh.client against OpenSSH's sshd. The transfers' system tools
(scp, rsync) run only with the host key that `connect` records, so it has to record one."""

from __future__ import annotations

from typing import Any

import asyncssh
import pytest

from gpushop.ssh import client


async def test_connect_records_then_checks_the_host_key(openssh_server: Any) -> None:
    target = client.Target(openssh_server.host, openssh_server.port, openssh_server.user)
    key = openssh_server.client_key
    seen: list[str] = []
    conn = await client.connect(target, key, known_host_key=None, record_host_key=seen.append)
    conn.close()
    assert seen == [openssh_server.host_key]

    conn = await client.connect(
        target, key, known_host_key=openssh_server.host_key, record_host_key=seen.append
    )
    conn.close()
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    with pytest.raises(client.HostKeyChanged):
        await client.connect(target, key, known_host_key=other, record_host_key=seen.append)
