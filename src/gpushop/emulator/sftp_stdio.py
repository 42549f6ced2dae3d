"""An SFTP server on stdin/stdout, for sandboxes where OpenSSH's `sftp-server` is not installed.

The emulator runs it INSIDE the instance (`python -I sftp_stdio.py`, entered like any command),
so the kernel, not a path check, keeps every path, symlinks included, in the instance: it is
asyncssh's SFTP server without a chroot, fed by the SSH channel through this process's pipes,
as sshd feeds `sftp-server`. Only the standard library and asyncssh are imported.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import asyncssh
from asyncssh.logging import logger
from asyncssh.sftp import SFTPServerHandler


class _Channel:
    """What the SFTP handler asks of an SSH channel."""

    def __init__(self) -> None:
        self.closing = False
        self.closed = asyncio.Event()
        self.logger = logger.get_child("sftp")

    def is_closing(self) -> bool:
        return self.closing

    async def wait_closed(self) -> None:
        await self.closed.wait()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def get_environment(self) -> dict[str, str]:
        return {}

    def get_connection(self) -> None:
        return None


class _Reader:
    def __init__(self, stream: asyncio.StreamReader, channel: _Channel) -> None:
        self.stream = stream
        self.channel = channel
        self.logger = channel.logger

    async def readexactly(self, n: int) -> bytes:
        return await self.stream.readexactly(n)  # IncompleteReadError is an EOFError

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class _Writer:
    def __init__(self, transport: asyncio.WriteTransport, channel: _Channel) -> None:
        self.transport = transport
        self.channel = channel

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def write_eof(self) -> None:
        self.close()

    def close(self) -> None:
        if not self.channel.closing:
            self.channel.closing = True
            self.transport.close()
            self.channel.closed.set()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


async def serve() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    transport, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(1, "wb", 0))
    channel = _Channel()
    server = asyncssh.SFTPServer(channel)  # type: ignore[arg-type]
    handler = SFTPServerHandler(
        server,
        _Reader(reader, channel),  # type: ignore[arg-type]
        _Writer(transport, channel),  # type: ignore[arg-type]
        3,  # the highest version offered: what OpenSSH's sftp-server speaks
    )
    await handler.run()


if __name__ == "__main__":
    asyncio.run(serve())
