"""A throwaway OpenSSH server (Debian's openssh-server) on a free loopback port.

Used by the SSH transfer tests (fixture `openssh_server` in tests/conftest.py) and by
benchmarks/bench_transfer.py. Everything lives in one temporary directory: a fresh ed25519 host
key, an authorized_keys file holding a fresh client key, and a config that touches nothing of the
system's sshd (`PidFile none`, `UsePAM no`, `StrictModes no`, SFTP served by `internal-sftp`).
The server runs in the foreground (`sshd -D -e -f CONFIG`) and is killed by `stop()`.
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

from gpushop.ssh.transfer import Endpoint

SSHD = Path(os.environ.get("GPUSHOP_TEST_SSHD", "/usr/sbin/sshd"))
SSH_KEYGEN = "ssh-keygen"
START_TIMEOUT = 10.0


class SshdUnavailable(RuntimeError):
    """sshd is not installed here (`apt-get install openssh-server`)."""


@dataclass
class OpenSshServer:
    root: Path
    port: int
    user: str
    host_key: str  # the server's public host key line, "ssh-ed25519 AAAA..."
    key_path: Path  # the client's private key, in authorized_keys
    process: subprocess.Popen[bytes]
    host: str = "127.0.0.1"
    _log: Path = field(default=Path("/dev/null"), repr=False)

    @property
    def client_key(self) -> asyncssh.SSHKey:
        return asyncssh.read_private_key(self.key_path)

    def endpoint(self, *, host_key: str | bool | None = True) -> Endpoint:
        """What scp/rsync need; `host_key=False`/None: unknown host key, any str: that key."""
        known = self.host_key if host_key is True else (host_key or None)
        return Endpoint(self.host, self.port, self.user, self.key_path, known)

    async def connect(self, **options: object) -> asyncssh.SSHClientConnection:
        """An asyncssh connection that checks the host key (and uses the test's client key)."""
        known = asyncssh.import_known_hosts(f"[{self.host}]:{self.port} {self.host_key}\n")
        return await asyncssh.connect(
            self.host,
            self.port,
            username=self.user,
            client_keys=[self.key_path],
            known_hosts=known,
            agent_path=None,
            config=None,
            **options,  # type: ignore[arg-type]
        )

    def log(self) -> str:
        try:
            return self._log.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def available() -> bool:
    return SSHD.is_file() and os.access(SSHD, os.X_OK)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path, comment: str) -> None:
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".pub").unlink(missing_ok=True)
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )


def _banner(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.settimeout(0.5)
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def _config(root: Path, port: int, extra: dict[str, str]) -> str:
    options = {
        "Port": str(port),
        "ListenAddress": "127.0.0.1",
        "HostKey": str(root / "ssh_host_ed25519_key"),
        "AuthorizedKeysFile": str(root / "authorized_keys"),
        "PidFile": "none",
        "StrictModes": "no",
        "UsePAM": "no",
        "PermitRootLogin": "prohibit-password",
        "PubkeyAuthentication": "yes",
        "PasswordAuthentication": "no",
        "KbdInteractiveAuthentication": "no",
        "UseDNS": "no",
        "PrintMotd": "no",
        "AcceptEnv": "LANG LC_*",
        "MaxStartups": "100",
        "MaxSessions": "32",
        "LogLevel": "INFO",
        "Subsystem": "sftp internal-sftp",
        **extra,
    }
    return "".join(f"{name} {value}\n" for name, value in options.items())


def start(root: Path, **extra: str) -> OpenSshServer:
    """Start sshd under `root` (created); `extra` adds or overrides sshd_config options, e.g.
    `Ciphers="aes128-gcm@openssh.com"`. Raises SshdUnavailable when sshd is not installed."""
    if not available():
        raise SshdUnavailable(f"{SSHD} not found: apt-get install openssh-server")
    root.mkdir(parents=True, exist_ok=True)
    _keygen(root / "ssh_host_ed25519_key", "gpushop-test-host")
    _keygen(root / "client_ed25519", "gpushop-test-client")
    (root / "authorized_keys").write_text((root / "client_ed25519.pub").read_text())
    if os.geteuid() == 0:  # as root sshd insists on its privilege separation directory
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
    host_key = " ".join((root / "ssh_host_ed25519_key.pub").read_text().split()[:2])
    last_error = ""
    for _attempt in range(5):  # the free port may be taken between the probe and sshd's bind
        port = _free_port()
        config = root / "sshd_config"
        config.write_text(_config(root, port, extra))
        log = root / "sshd.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,  # same process group: a Ctrl-C stops it too
            )
        server = OpenSshServer(
            root=root,
            port=port,
            user=getpass.getuser(),
            host_key=host_key,
            key_path=root / "client_ed25519",
            process=process,
            _log=log,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            if _banner(port):
                return server
            time.sleep(0.02)
        server.stop()
        last_error = server.log().strip()
    raise RuntimeError(f"sshd did not start: {last_error[-2000:]}")


@contextmanager
def running(root: Path, **extra: str) -> Iterator[OpenSshServer]:
    server = start(root, **extra)
    try:
        yield server
    finally:
        server.stop()
