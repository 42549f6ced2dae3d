"""Connecting to an instance: a cheap banner probe for readiness, then real sessions.

Host keys are trusted on first use per rental: the first key seen is recorded by the caller and a
different key later is an error (a changed host key means a different machine, or worse).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import asyncssh

from gpushop.errors import GpushopError

BANNER_TIMEOUT = 2.0


class SshError(GpushopError):
    pass


class HostKeyChanged(SshError):
    pass


async def banner(host: str, port: int, timeout: float = BANNER_TIMEOUT) -> bool:
    """True when an SSH server answers with its banner (costs no provider API call)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
        return line.startswith(b"SSH-")
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@dataclass
class Target:
    host: str
    port: int
    user: str = "root"


class _Trust(asyncssh.SSHClient):
    def __init__(self, known: str | None, record: Callable[[str], None]) -> None:
        self.known = known
        self.record = record

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        seen = key.export_public_key().decode().strip()
        if self.known is None:
            self.record(seen)
            return True
        return seen == self.known


async def connect(
    target: Target,
    key: asyncssh.SSHKey,
    *,
    known_host_key: str | None,
    record_host_key: Callable[[str], None],
    timeout: float = 10.0,
) -> asyncssh.SSHClientConnection:
    """One connection, host key checked (TOFU). Raises SshError / HostKeyChanged."""
    try:
        conn, _ = await asyncio.wait_for(
            asyncssh.create_connection(
                lambda: _Trust(known_host_key, record_host_key),
                target.host,
                target.port,
                username=target.user,
                client_keys=[key],
                # an empty set, not None: None turns host-key checking off (and _Trust with it)
                known_hosts=asyncssh.import_known_hosts(""),
                agent_path=None,
            ),
            timeout,
        )
    except asyncssh.HostKeyNotVerifiable as exc:
        raise HostKeyChanged(
            f"the host key of {target.host}:{target.port} changed since this rental first saw it"
        ) from exc
    except (OSError, TimeoutError, asyncssh.Error) as exc:
        raise SshError(f"cannot SSH to {target.host}:{target.port}: {exc}") from exc
    return conn


async def run(
    conn: asyncssh.SSHClientConnection, command: str, timeout: float = 60.0
) -> tuple[int, str, str]:
    try:
        result = await asyncio.wait_for(conn.run(command, check=False), timeout)
    except (TimeoutError, asyncssh.Error, OSError) as exc:
        raise SshError(f"running {command.split()[0]!r} over SSH failed: {exc}") from exc
    out = result.stdout if isinstance(result.stdout, str) else ""
    err = result.stderr if isinstance(result.stderr, str) else ""
    return int(result.exit_status or 0), out, err
