"""A download interrupted at the worst moment leaves no local file open.

An in-process SSH server runs commands with the host's shell and serves SFTP from the host's
filesystem, except that it never answers the close of a file: the download is cancelled (as a
Ctrl-C or a sibling copy's failure would) while it waits for that answer. asyncssh's own copier
(``SFTPClient.get``) then skips closing the local file, which only the garbage collector closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from gpushop.ssh import transfer


class _Open(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return False  # no authentication: a loopback test server


async def _shell(process: asyncssh.SSHServerProcess[bytes]) -> None:
    """The command, run by the host's shell (its input read to the end first)."""
    given = await process.stdin.read()
    local = await asyncio.create_subprocess_shell(
        str(process.command),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await local.communicate(given)
    process.stdout.write(out)
    process.stderr.write(err)
    process.exit(local.returncode or 0)


@pytest.fixture
async def closing() -> AsyncIterator[
    tuple[asyncssh.SSHClientConnection, asyncio.Event, asyncio.Event]
]:
    """A connection to the server; an event set when a file's close waits for its answer, and
    one that lets the server answer it."""
    asked, answer = asyncio.Event(), asyncio.Event()

    class NoCloseAnswer(asyncssh.SFTPServer):
        async def close(self, file_obj: Any) -> None:  # type: ignore[override]
            super().close(file_obj)
            asked.set()
            await answer.wait()

    server = await asyncssh.create_server(
        _Open,
        "127.0.0.1",
        0,
        server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
        process_factory=_shell,
        sftp_factory=NoCloseAnswer,
        encoding=None,
    )
    port = server.sockets[0].getsockname()[1]
    conn = await asyncssh.connect(
        "127.0.0.1", port, username="me", known_hosts=None, agent_path=None, config=None
    )
    try:
        yield conn, asked, answer
    finally:
        answer.set()
        conn.close()
        await conn.wait_closed()
        server.close()
        await server.wait_closed()


async def test_a_download_cancelled_while_closing_a_file_leaves_no_file_open(
    closing: tuple[asyncssh.SSHClientConnection, asyncio.Event, asyncio.Event], tmp_path: Path
) -> None:
    conn, asked, answer = closing
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "weights.bin").write_bytes(b"w" * 100_000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        download = asyncio.ensure_future(
            transfer.download(conn, str(remote), tmp_path / "local", method="sftp")
        )
        await asked.wait()  # the file is read; its close waits for an answer
        download.cancel()
        await asyncio.sleep(0)  # the cancellation lands in the wait for the answer
        answer.set()
        with contextlib.suppress(asyncio.CancelledError):
            await download
        del download
        gc.collect()
    leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaked == []
