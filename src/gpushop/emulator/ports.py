"""SSH ports of emulated instances: picked free at create time and held until destroy.

An instance advertises its `ssh_port` from creation, long before its SSH server runs, so the
port is reserved by binding (not listening) a loopback socket: nobody else can take it, and a
connection attempt is refused until the instance is running — as on a real host, where the port
opens when the container starts. When SSH is off (`EmulatorConfig.ssh = False`) ports are only
numbered, never bound.
"""

from __future__ import annotations

import logging
import socket

log = logging.getLogger("gpushop.emulator")

SSH_HOST = "127.0.0.1"
FIRST_FAKE_PORT = 41200
PORTS_PER_INSTANCE = 20


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((SSH_HOST, port))
    except OSError:
        sock.close()
        raise
    return sock


class PortPool:
    """Reserved loopback ports, one per instance."""

    def __init__(self, bind: bool) -> None:
        self.bind = bind
        self._held: dict[int, socket.socket] = {}
        self._next_fake = FIRST_FAKE_PORT

    def reserve(self) -> int:
        """A port for a new instance (bound and held when `bind`)."""
        if not self.bind:
            port = self._next_fake
            self._next_fake += PORTS_PER_INSTANCE
            return port
        sock = _bind(0)
        port = int(sock.getsockname()[1])
        self._held[port] = sock
        return port

    def take(self, port: int) -> socket.socket | None:
        """The held socket, handed over to a server that will listen on it (None: re-bind
        failed earlier or SSH is off)."""
        sock = self._held.pop(port, None)
        if sock is None and self.bind:
            try:
                sock = _bind(port)
            except OSError as exc:
                log.warning("emulator: cannot bind SSH port %d again: %s", port, exc)
                return None
        return sock

    def hold_again(self, port: int) -> None:
        """After the server on `port` closed: reserve it again for the next start."""
        if self.bind and port not in self._held:
            try:
                self._held[port] = _bind(port)
            except OSError as exc:  # someone else took it meanwhile; the next start retries
                log.warning("emulator: SSH port %d was taken while stopped: %s", port, exc)

    def release(self, port: int) -> None:
        sock = self._held.pop(port, None)
        if sock is not None:
            sock.close()

    def close(self) -> None:
        for sock in self._held.values():
            sock.close()
        self._held.clear()
