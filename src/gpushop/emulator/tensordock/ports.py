"""Hostnode ports: advertised in `available_ports` before anyone rents them, so (unlike the Vast
side, which picks a free port at create time) they are fixed numbers that must really be free on
this machine when a VM's SSH forward listens there.

A VM's SSH external port is held (bound on 127.0.0.1, not listening) from create to delete, so a
connection is refused until the VM runs. Ports used by any emulator in this process are kept in a
registry, and a listing leaves out ports another program listens on; with SSH off (`ssh=False`)
ports are only numbers.
"""

from __future__ import annotations

import socket
import threading

from gpushop.emulator.ports import SSH_HOST, PortPool

_registry: set[int] = set()  # external ports assigned by any TensorDock emulator of this process
_registry_lock = threading.Lock()


def _bind(port: int, *, shared: bool = False) -> socket.socket:
    """Bound, not listening. Exclusive unless `shared`: a bind without SO_REUSEADDR fails while
    any other socket holds the port (two that both set it may share a port neither listens
    on), so it tells whether another emulator process (a parallel test worker) holds it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((SSH_HOST, port))
    except OSError:
        sock.close()
        raise
    return sock


def bindable(port: int) -> bool:
    """Nobody holds or listens on 127.0.0.1:port (a cheap exclusive bind-and-close probe)."""
    try:
        _bind(port).close()
    except OSError:
        return False
    return True


class FixedPortPool(PortPool):
    """PortPool for ports chosen in advance: `claim` them for a VM, `hold` the SSH one."""

    def __init__(self, bind: bool) -> None:
        super().__init__(bind)
        self.claimed: set[int] = set()

    def in_use(self, port: int) -> bool:
        """Taken by one of our VMs, by another emulator of this process, or (SSH on) by
        another program."""
        if port in self.claimed:
            return True
        with _registry_lock:
            if port in _registry:
                return True
        return self.bind and not bindable(port)

    def claim(self, ports: list[int], ssh_port: int | None) -> bool:
        """Reserve `ports` for a VM and hold `ssh_port` bound; False (nothing reserved) if one
        is taken meanwhile."""
        if any(self.in_use(p) for p in ports):
            return False
        if self.bind and ssh_port is not None:
            try:
                # exclusive first: nobody else holds it; then held as the server will want it
                # (SO_REUSEADDR, or its TIME_WAITs would keep a restart from binding it again)
                _bind(ssh_port).close()
                self._held[ssh_port] = _bind(ssh_port, shared=True)
            except OSError:
                return False
        self.claimed.update(ports)
        with _registry_lock:
            _registry.update(ports)
        return True

    def unclaim(self, ports: list[int]) -> None:
        for port in ports:
            self.release(port)
            self.claimed.discard(port)
        with _registry_lock:
            _registry.difference_update(ports)

    def close(self) -> None:
        super().close()
        with _registry_lock:
            _registry.difference_update(self.claimed)
        self.claimed.clear()
