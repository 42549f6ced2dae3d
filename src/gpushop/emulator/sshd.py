"""A real SSH endpoint per running instance (asyncssh), on the port the instance advertises.

- Host key: one ed25519 key per instance, made when it first runs, kept for its life.
- Auth: public keys only, checked at each attempt against the instance's keys as they are NOW
  (account keys copied at create / POST /ssh/, keys attached with POST /instances/{id}/ssh/), so
  attach and detach take effect at once. Any username is accepted; use `root`, as on Vast.ai.
- Sessions: exec and shell run `/bin/sh -c CMD` (or `/bin/sh -i`) INSIDE the instance's sandbox
  (sandbox.py: its namespaces, no capabilities, the current user's uid), stdin/stdout/stderr
  streamed, exit status (or signal) returned; a pty when the client asks for one. The `sftp`
  subsystem is OpenSSH's `sftp-server` run inside the same way (or, where it is not installed,
  asyncssh's SFTP server in a process inside: sftp_stdio.py); scp is the client's business
  (SFTP mode, or `scp -t/-f` run as a command). So a path means the same file to all of them,
  and the kernel keeps every one of them, symlinks included, in the instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import inspect
import logging
import os
import signal
import struct
import sys
import termios
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncssh
from asyncssh.constants import EXTENDED_DATA_STDERR
from asyncssh.stream import SSHReader, SSHWriter

from gpushop.emulator.sandbox import Sandbox, SandboxError

log = logging.getLogger("gpushop.emulator")

CHUNK = 65536
SFTP_STDIO = Path(__file__).with_name("sftp_stdio.py")
ACCEPTED_CLIENT_ENV = ("LANG", "LC_")  # as OpenSSH's default AcceptEnv


class _Process(asyncssh.SSHServerProcess[bytes]):
    """A session whose `sftp` subsystem is a program inside the sandbox, like any command:
    asyncssh would serve SFTP itself (on the host's files), so the routing is ours."""

    def subsystem_requested(self, subsystem: str) -> bool:
        return True  # unknown ones are refused by `_session`, with a message

    def session_started(self) -> None:
        chan = self._chan
        stdin = SSHReader[bytes](self, chan)
        stdout = SSHWriter[bytes](self, chan)
        stderr = SSHWriter[bytes](self, chan, EXTENDED_DATA_STDERR)
        factory = self._session_factory  # SSHServerProcess's own: it calls our _session
        assert factory is not None
        handler = factory(stdin, stdout, stderr)
        if inspect.isawaitable(handler):
            assert self._conn is not None
            self._conn.create_task(handler, stdin.logger)


class _Server(asyncssh.SSHServer):
    def __init__(self, endpoint: SshEndpoint) -> None:
        self._endpoint = endpoint
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._endpoint.connections.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._endpoint.connections.discard(self._conn)

    def begin_auth(self, username: str) -> bool:
        return True  # authentication is always required

    def session_requested(self) -> _Process:
        return _Process(self._endpoint._session, None, 0, False)

    def public_key_auth_supported(self) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        if self._endpoint.users is not None and username not in self._endpoint.users:
            return False
        wanted = key.public_data
        for text in self._endpoint.authorized_keys():
            try:
                if asyncssh.import_public_key(text).public_data == wanted:
                    return True
            except (asyncssh.KeyImportError, ValueError):
                continue
        return False


class SshEndpoint:
    """The SSH server of one instance; `start` listens on the reserved socket, `close` ends the
    server and every connection (processes are the sandbox's to kill)."""

    def __init__(
        self,
        sandbox: Sandbox,
        host_key: asyncssh.SSHKey,
        authorized_keys: Callable[[], list[str]],
        environment: Callable[[], dict[str, str]],
        users: frozenset[str] | None = None,  # the only login names accepted (None: any)
    ) -> None:
        self.users = users
        self.sandbox = sandbox
        self.host_key = host_key
        self.authorized_keys = authorized_keys
        self.environment = environment
        self.connections: set[asyncssh.SSHServerConnection] = set()
        self._acceptor: asyncssh.SSHAcceptor | None = None

    @property
    def serving(self) -> bool:
        return self._acceptor is not None

    async def start(self, sock: Any) -> None:
        self._acceptor = await asyncssh.listen(
            sock=sock,
            server_factory=lambda: _Server(self),
            server_host_keys=[self.host_key],
            encoding=None,  # sessions come from _Server.session_requested (subsystems too)
            agent_forwarding=False,
            x11_forwarding=False,
            allow_pty=True,
            keepalive_interval=0,
        )

    def close(self) -> None:
        if self._acceptor is not None:
            self._acceptor.close()
            self._acceptor = None
        self.drop_connections()

    def drop_connections(self) -> int:
        """Abort every open connection (a network drop); the server keeps accepting."""
        dropped = list(self.connections)
        for conn in dropped:
            conn.abort()
        self.connections.clear()
        return len(dropped)

    # -- sessions ----------------------------------------------------------------------------
    def sftp_argv(self) -> list[str]:
        server = self.sandbox.isolation.sftp_server
        return [server] if server else [sys.executable, "-I", str(SFTP_STDIO)]

    async def _session(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        command = process.command
        if process.subsystem is not None:
            if process.subsystem != "sftp":
                process.stderr.write(f"subsystem {process.subsystem} not served\n".encode())
                process.exit(1)
                return
            argv = self.sftp_argv()
        elif command is not None:
            argv = ["/bin/sh", "-c", command]
        else:
            argv = ["/bin/sh", "-i"]
        env = self.environment()
        for name, value in (process.env or {}).items():
            key = name.decode() if isinstance(name, bytes) else str(name)
            if key.startswith(ACCEPTED_CLIENT_ENV):
                env[key] = value.decode() if isinstance(value, bytes) else str(value)
        peer = process.get_extra_info("peername") or ("127.0.0.1", 0)
        env["SSH_CLIENT"] = f"{peer[0]} {peer[1]} 22"
        term = process.term_type
        try:
            # an instance's PID 1 starts with its first session (or its onstart): an instance
            # nobody logs into costs no process
            await self.sandbox.start()
        except SandboxError as exc:
            process.stderr.write(f"emulator: {exc}\n".encode())
            process.exit(127)
            return
        try:
            if term and process.subsystem is None:
                env["TERM"] = term
                status = await self._run_pty(process, argv, env)
            else:
                status = await self._run_pipes(process, argv, env)
        except (asyncssh.Error, ConnectionError):  # first: a ConnectionError is an OSError
            return  # the client went away; writing to its channel would fail the connection
        except OSError as exc:
            process.stderr.write(f"emulator: cannot run command: {exc}\n".encode())
            status = 127
        _exit(process, status)

    async def _run_pipes(
        self, process: asyncssh.SSHServerProcess[bytes], argv: list[str], env: dict[str, str]
    ) -> int:
        proc = await self.sandbox.spawn(argv, env)
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        feed = asyncio.ensure_future(_feed(process.stdin, proc.stdin))
        drains = [
            asyncio.ensure_future(_drain(proc.stdout, process.stdout)),
            asyncio.ensure_future(_drain(proc.stderr, process.stderr)),
        ]
        output: asyncio.Future[Any] = asyncio.gather(*drains)
        gone: asyncio.Future[Any] = asyncio.ensure_future(process.channel.wait_closed())
        try:
            await asyncio.wait([output, gone], return_when=asyncio.FIRST_COMPLETED)
            if not output.done() or output.exception() is not None:
                # the client closed the channel (seen, or a write to it failed first): as sshd
                # does, close the command's pipes (its next write gets SIGPIPE) rather than
                # leave it blocked on a pipe nobody reads, for ever
                for drain in drains:
                    drain.cancel()
                await asyncio.wait(drains)
                _close_pipes(proc)
                raise ConnectionError("the client closed the channel")
            return await proc.wait()
        finally:
            feed.cancel()
            gone.cancel()

    async def _run_pty(
        self, process: asyncssh.SSHServerProcess[bytes], argv: list[str], env: dict[str, str]
    ) -> int:
        master, slave = self.sandbox.open_pty()
        cols, rows, _, _ = process.term_size
        with contextlib.suppress(OSError):
            fcntl.ioctl(
                slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows or 24, cols or 80, 0, 0)
            )
        try:
            proc = await self.sandbox.spawn(argv, env, stdin=slave, stdout=slave, stderr=slave)
        finally:
            os.close(slave)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            try:
                data = os.read(master, CHUNK)
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(master)
                if not done.done():
                    done.set_result(None)
                return
            process.stdout.write(data)

        loop.add_reader(master, readable)

        async def feed() -> None:
            while data := await process.stdin.read(CHUNK):
                os.write(master, data)

        feeder = asyncio.ensure_future(feed())
        try:
            await done
            return await proc.wait()
        finally:
            feeder.cancel()
            loop.remove_reader(master)
            os.close(master)


def _close_pipes(proc: asyncio.subprocess.Process) -> None:
    transport = getattr(proc, "_transport", None)  # asyncio keeps the pipes' transports there
    for fd in (0, 1, 2):
        pipe = transport.get_pipe_transport(fd) if transport is not None else None
        if pipe is not None:
            pipe.close()


async def _feed(source: asyncssh.SSHReader[bytes], sink: asyncio.StreamWriter) -> None:
    """Client stdin -> process stdin, then EOF."""
    try:
        while data := await source.read(CHUNK):
            sink.write(data)
            await sink.drain()
    except (ConnectionError, asyncssh.Error):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError):
            sink.close()


async def _drain(source: asyncio.StreamReader, sink: asyncssh.SSHWriter[bytes]) -> None:
    """Process output -> the channel, until the process closes it."""
    while data := await source.read(CHUNK):
        sink.write(data)
        await sink.drain()


def _exit(process: asyncssh.SSHServerProcess[bytes], status: int) -> None:
    if status < 0:  # killed by a signal: report it as OpenSSH does (exit-signal)
        try:
            name = signal.Signals(-status).name.removeprefix("SIG")
        except ValueError:
            name = "KILL"
        process.exit_with_signal(name)
    else:
        process.exit(status)


def new_host_key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519")
