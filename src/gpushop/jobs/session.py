"""One job's folder on an instance, over one SSH connection: launch, status, follow, kill.

The runner drives these; they hold no state but the connection and the folder, so a new
connection (after a drop, or in another process) picks up exactly where the last one was."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from collections.abc import Callable

import asyncssh

from gpushop.jobs import remote
from gpushop.ssh.client import SshError

LAUNCH_TIMEOUT_S = 60.0
CLOSE_TIMEOUT_S = 2.0


class RemoteJob:
    def __init__(self, conn: asyncssh.SSHClientConnection, directory: str) -> None:
        self.conn = conn
        self.directory = directory

    async def launch(
        self, workdir: str, command: str, timeout_s: float | None, env: dict[str, str]
    ) -> bool:
        """Start the job; False when it had been started already (a retried launch)."""
        await self._run(f"mkdir -p {shlex.quote(self.directory)} {shlex.quote(workdir)}")
        async with self.conn.start_sftp_client() as sftp:
            for name, text in (
                ("cmd.sh", remote.command_script(workdir, command)),
                ("wrap.sh", remote.wrapper(self.directory, timeout_s)),
            ):
                async with sftp.open(f"{self.directory}/{name}", "w") as fh:
                    await fh.write(text)
        # the values go through stdin: not in any command line, file or log (and never empty:
        # asyncssh sends no EOF after an empty input, and `read` would wait for ever)
        stdin = "".join(f"{k}={v}\n" for k, v in env.items()) + "\n"
        result = await asyncio.wait_for(
            self.conn.run(remote.launch(self.directory), input=stdin, check=False),
            LAUNCH_TIMEOUT_S,
        )
        if result.exit_status != 0:
            raise SshError(f"could not start the job: {str(result.stderr or '').strip()[:300]}")
        return "launched" in str(result.stdout or "")

    async def prepare(self, workdir: str) -> None:
        await self._run(remote.prepare(workdir))

    async def status(self) -> remote.Status:
        return remote.parse_status(await self._run(remote.status(self.directory)))

    async def follow(self, offset: int, on_chunk: Callable[[bytes], None]) -> int:
        """Stream the log from ``offset`` until the job's wrapper ends (or the connection
        breaks); returns the offset reached."""
        command = remote.follow(self.directory, offset)
        proc = await self.conn.create_process(command, encoding=None)
        try:
            while chunk := await proc.stdout.read(65536):
                on_chunk(chunk)
                offset += len(chunk)
        finally:
            # Interrupted (Ctrl-C, SIGTERM) while the job still runs, the follower is still
            # running too: close its channel, but do not wait for ever for the host to agree,
            # or the cleanup (outputs, release) would never start.
            proc.close()
            with contextlib.suppress(TimeoutError, asyncssh.Error, OSError):
                await asyncio.wait_for(proc.wait_closed(), CLOSE_TIMEOUT_S)
        return offset

    async def kill(self) -> None:
        await self._run(remote.kill(self.directory))

    async def _run(self, command: str) -> str:
        result = await self.conn.run(command, check=False)
        if result.exit_status not in (0, None):
            raise SshError(
                f"{command.split()[0]!r} failed on the instance: {str(result.stderr or '')[:200]}"
            )
        return str(result.stdout or "")
