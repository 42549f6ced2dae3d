"""A reconcile-lock holder whose host vanishes (no FIN, no RST: its network is cut) loses the
lock by the server's TCP keepalives alone (issue 10 §3c).

The holder runs in its own network namespace, joined to this one by a veth pair, and talks to a
private PostgreSQL listening on the veth's address; the test then takes the holder's side of the
link down, so nothing it sent or would answer gets through. `kill -9` would prove nothing: the
kernel closes the socket cleanly. The holder's keepalive timings are scaled down (1 s idle, 1 s
interval, 2 probes, 3 s user timeout) so the test takes seconds, not the production minute
(whose values test_lock_keepalive.py checks). Needs root (namespaces), `ip` and PostgreSQL's
server binaries: missing, it fails in CI and skips elsewhere.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from gpushop.store import LockBusy, Store
from waiting import until

PG_BINS = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))

HOLD = """
import sys
from gpushop.store import Store, locks
locks.LOCK_KEEPALIVES = {
    "tcp_keepalives_idle": "1",
    "tcp_keepalives_interval": "1",
    "tcp_keepalives_count": "2",
    "tcp_user_timeout": "3000",
}
store = Store.open(sys.argv[1])
with store.reconcile_lock():
    print("locked", flush=True)
    sys.stdin.readline()
"""


def _require(ok: bool, what: str) -> None:
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(what)
        pytest.skip(what)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@dataclass
class Link:
    namespace: str
    inside: str  # the holder's end of the veth pair
    host_ip: str
    inside_ip: str


@pytest.fixture
def link() -> Iterator[Link]:
    """A network namespace joined to this one by a veth pair on a random /30."""
    _require(os.geteuid() == 0, "network namespaces need root")
    _require(shutil.which("ip") is not None, "iproute2 (`ip`) is missing")
    tag = uuid.uuid4().hex[:8]
    namespace, outside, inside = f"gpushop-{tag}", f"gph{tag}", f"gpn{tag}"
    net = f"10.{random.randint(200, 250)}.{random.randint(0, 255)}"
    found = Link(namespace, inside, f"{net}.1", f"{net}.2")
    _ip("netns", "add", namespace)
    try:
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside, "netns", namespace)
        _ip("addr", "add", f"{found.host_ip}/30", "dev", outside)
        _ip("link", "set", outside, "up")
        _ip("-n", namespace, "addr", "add", f"{found.inside_ip}/30", "dev", inside)
        _ip("-n", namespace, "link", "set", inside, "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        yield found
    finally:
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", outside], capture_output=True, timeout=30)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@pytest.fixture
def private_pg(link: Link) -> Iterator[str]:
    """A throw-away PostgreSQL server listening on the veth's host address only."""
    _require(bool(PG_BINS), "PostgreSQL's server binaries are missing")
    bin_dir = PG_BINS[-1].parent
    root = Path(tempfile.mkdtemp(prefix="gpushop-pg-"))  # not under pytest's 0700 tmp
    data = root / "data"
    shutil.chown(root, "postgres", "postgres")
    as_postgres = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [
            *as_postgres,
            *(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres"),
            *("--auth=trust", "--no-sync", "-E", "UTF8"),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    with (data / "pg_hba.conf").open("a") as hba:  # initdb trusts loopback only
        hba.write(f"host all postgres {link.host_ip}/30 trust\n")
    port = _free_port(link.host_ip)
    server = subprocess.Popen(
        [
            *as_postgres,
            *(str(bin_dir / "postgres"), "-D", str(data), "-p", str(port)),
            *("-c", f"listen_addresses={link.host_ip}", "-c", f"unix_socket_directories={root}"),
            *("-c", "fsync=off"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    dsn = f"host={link.host_ip} port={port} user=postgres dbname=postgres connect_timeout=3"

    def answers() -> bool:
        try:
            psycopg.connect(dsn).close()
        except psycopg.OperationalError:
            return False
        return True

    try:
        until(answers, "the private PostgreSQL to start")
        yield f"postgresql://postgres@{link.host_ip}:{port}/postgres"
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def test_a_holder_whose_network_vanished_loses_the_lock_to_keepalives(
    link: Link, private_pg: str
) -> None:
    holder = subprocess.Popen(
        ["ip", "netns", "exec", link.namespace, sys.executable, "-c", HOLD, private_pg],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked", holder.stderr
        with Store.open(private_pg) as store:

            def taken() -> bool:
                try:
                    with store.reconcile_lock():
                        return True
                except LockBusy:
                    return False

            assert not taken()  # held, from the other namespace
            _ip("-n", link.namespace, "link", "set", link.inside, "down")  # the host vanishes
            cut = time.monotonic()
            assert until(taken, "the server to drop the vanished holder's session", 60)
            assert time.monotonic() - cut < 20  # idle 1 s + 2 probes 1 s apart, 3 s timeout
            assert holder.poll() is None  # it did not end: the server gave up on it
    finally:
        holder.kill()
        holder.communicate(timeout=30)
