"""The control API: reset, state, request log (without keys)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

import httpx
import pytest

from gpushop.emulator import EmulatorThread
from gpushop.emulator.control import EmulatorControl, EmulatorControlError


def test_reset_restores_the_seeded_state(emulator: EmulatorThread, client: httpx.Client) -> None:
    before = client.post("/api/v0/bundles/", json={"limit": 5}).json()["offers"]
    offer_id = before[0]["id"]
    client.put(f"/api/v0/asks/{offer_id}/", json={"image": "x"})
    client.post("/api/v0/ssh/", json={"ssh_key": "ssh-ed25519 AAAA x"})
    state = emulator.control.state()
    assert len(state["instances"]) == 1 and len(state["ssh_keys"]) == 1
    assert state["offers_available"] == state["offers"] - 1
    emulator.control.reset()
    state = emulator.control.state()
    assert state["instances"] == [] and state["ssh_keys"] == []
    assert state["offers"] == state["offers_available"] == 600
    assert state["request_counts"] == {}
    after = client.post("/api/v0/bundles/", json={"limit": 5}).json()["offers"]
    assert [o["id"] for o in after] == [o["id"] for o in before]


def test_reset_overrides_are_not_cumulative(emulator: EmulatorThread) -> None:
    emulator.control.reset(seed=99, offers=40, speed=2.0)
    config = emulator.control.state()["config"]
    assert (config["seed"], config["offers"], config["speed"]) == (99, 40, 2.0)
    assert emulator.control.state()["offers"] == 40
    emulator.control.reset()
    config = emulator.control.state()["config"]
    assert (config["seed"], config["offers"], config["speed"]) == (1234, 600, 1000.0)
    assert "api_key" not in config


def test_bad_overrides_are_refused(emulator: EmulatorThread) -> None:
    with pytest.raises(EmulatorControlError, match="port"):
        emulator.control.reset(port=1)
    with pytest.raises(EmulatorControlError, match="offers"):
        emulator.control.reset(offers=20_001)


def test_request_log_never_holds_the_key(make_emulator: Callable[..., EmulatorThread]) -> None:
    emu = make_emulator(api_key="k3y-9f8e7d6c", rate_limit=False, offers=20)
    key = emu.api_key
    with httpx.Client(base_url=emu.url) as anon:
        anon.get("/api/v0/users/current", headers={"Authorization": f"Bearer {key}"})
        anon.get("/api/v0/users/current/", params={"api_key": key, "x": "1"})
        anon.post("/api/v0/bundles/", json={"limit": 1})
    log = emu.control.requests()
    assert [(r["endpoint"], r["auth"], r["status"]) for r in log] == [
        ("GET /api/v0/users/current/", "bearer", 200),
        ("GET /api/v0/users/current/", "param", 200),
        ("POST /api/v0/bundles/", None, 200),
    ]
    assert log[1]["query"] == {"x": "1"}
    assert log[2]["json"] == {"limit": 1}
    assert log[0]["path"] == "/api/v0/users/current"
    assert emu.control.request_count("GET /api/v0/users/current/") == 2
    for control_path in ("requests", "state"):
        assert key not in httpx.get(f"{emu.url}/_emulator/{control_path}").text


def _server_closing_idle_connections() -> tuple[socket.socket, threading.Thread]:
    """A server that answers the first request of each connection and closes the connection
    when a second one arrives on it, unanswered: an idle-timeout close crossing that request."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 2\r\n\r\n{}"
                )
                conn.recv(65536)  # the next request on this connection: closed unanswered

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


def test_control_calls_survive_a_server_closing_idle_connections() -> None:
    listener, thread = _server_closing_idle_connections()
    control = EmulatorControl(f"http://127.0.0.1:{listener.getsockname()[1]}")
    try:
        assert control.state() == {}
        assert control.state() == {}  # a kept-alive connection got no answer here
    finally:
        control.close()
        listener.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        listener.close()
        thread.join(timeout=5)
