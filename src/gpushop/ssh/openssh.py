"""The system's OpenSSH tools (scp, rsync over ssh) with the same key and host-key check as the
asyncssh connection.

They get the rental's key only (`-i KEY -o IdentitiesOnly=yes`, no agent), a temporary
known_hosts file holding the host key recorded on first use for `[host]:port`
(`StrictHostKeyChecking=yes`), `BatchMode=yes` (never a prompt), and nothing from the user's
ssh config (`-F /dev/null`). The remote host is always named `gpushop-target` on the command line
with `-o HostName=...`, so no host (IPv6 literal, `user@`-looking name) needs escaping.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

# AES-GCM first: with AES-NI (every x86 server since 2010) it is ~1.7x faster than
# chacha20-poly1305, OpenSSH's default first choice (bench_transfer.py measures both).
CIPHERS = (
    "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,"
    "aes128-ctr,aes192-ctr,aes256-ctr"
)
HOST_ALIAS = "gpushop-target"
# No agent (the rental's key only) and a fixed locale, so tool output parses the same everywhere.
DROPPED_ENV = ("SSH_AUTH_SOCK", "SSH_AGENT_PID", "SSH_ASKPASS", "DISPLAY")


@dataclass(frozen=True)
class Endpoint:
    """What the system's scp/rsync need beside the asyncssh connection."""

    host: str
    port: int
    user: str
    key_path: Path
    host_key: str | None  # the server's OpenSSH public host key line, recorded on first use


def which(tool: str) -> str | None:
    return shutil.which(tool)


@functools.cache
def scp_has_sftp_mode() -> bool:
    """`scp -s` (SFTP protocol) exists from OpenSSH 8.7 on; older scp only speaks the legacy
    protocol, which passes remote paths through the remote shell."""
    scp = which("scp")
    if scp is None:
        return False
    usage = subprocess.run(
        [scp], capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
    ).stderr
    flags = usage.split("[", 1)[1].split("]", 1)[0] if "[" in usage else ""
    return flags.startswith("-") and "s" in flags


def known_hosts_lines(endpoint: Endpoint) -> str:
    assert endpoint.host_key is not None
    key = " ".join(endpoint.host_key.split()[:2])
    name = endpoint.host if endpoint.port == 22 else f"[{endpoint.host}]:{endpoint.port}"
    return f"{name} {key}\n"


@contextlib.contextmanager
def known_hosts_file(endpoint: Endpoint) -> Iterator[Path]:
    """A temporary known_hosts holding only the recorded host key; removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="gpushop-ssh-") as tmp:
        path = Path(tmp) / "known_hosts"
        path.write_text(known_hosts_lines(endpoint))
        yield path


def ssh_options(endpoint: Endpoint, known_hosts: Path) -> list[str]:
    """Options common to ssh and scp (scp passes `-o` through to ssh)."""
    options = {
        "HostName": endpoint.host,
        "Port": str(endpoint.port),
        "User": endpoint.user,
        "IdentitiesOnly": "yes",
        "IdentityAgent": "none",
        "UserKnownHostsFile": f'"{known_hosts}"',
        "GlobalKnownHostsFile": "/dev/null",
        "StrictHostKeyChecking": "yes",
        "BatchMode": "yes",
        "CheckHostIP": "no",
        "UpdateHostKeys": "no",
        "ConnectTimeout": "20",
        "ServerAliveInterval": "15",
        "ServerAliveCountMax": "4",
        "Ciphers": CIPHERS,
        "Compression": "no",
        "LogLevel": "ERROR",
    }
    argv = ["-F", "/dev/null", "-i", str(endpoint.key_path)]
    for name, value in options.items():
        argv += ["-o", f"{name}={value}"]
    return argv


def ssh_command(endpoint: Endpoint, known_hosts: Path) -> list[str]:
    ssh = which("ssh") or "ssh"
    return [ssh, *ssh_options(endpoint, known_hosts)]


def tool_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV}
    env["LC_ALL"] = "C"
    return env


async def run_tool(
    argv: list[str],
    *,
    stdin: bytes = b"",
    on_stdout: Callable[[bytes], None] | None = None,
) -> tuple[int, str]:
    """Run a tool to completion: stdin fed, stdout streamed to `on_stdout`, stderr collected.
    The tool runs in its own session (a Ctrl-C meant for us does not cut it mid-file); if we are
    cancelled it is killed."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=tool_env(),
        start_new_session=True,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    pipe_in, pipe_out, pipe_err = proc.stdin, proc.stdout, proc.stderr

    async def feed() -> None:
        with contextlib.suppress(ConnectionError):
            pipe_in.write(stdin)
            await pipe_in.drain()
        pipe_in.close()

    async def read_out() -> None:
        while chunk := await pipe_out.read(65536):
            if on_stdout is not None:
                on_stdout(chunk)

    try:
        _, _, err = await asyncio.gather(feed(), read_out(), pipe_err.read())
        code = await proc.wait()
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    return code, err.decode(errors="replace")
