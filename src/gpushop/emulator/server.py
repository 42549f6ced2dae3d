"""Serving the emulator: in the foreground (`serve`, for `gpushop emulator`) or in a background
thread (`EmulatorThread`, for tests and the embedded demo).

Both bind the socket first, so the port is known (and connections queue) before anything is
printed or returned; `serve` then prints the KEY=VALUE start-up lines on stdout and logs to stderr
only.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Generator
from types import FrameType, TracebackType

import uvicorn

from gpushop.emulator.app import Emulator, install_log_filter
from gpushop.emulator.config import EmulatorConfig
from gpushop.emulator.control import EmulatorControl
from gpushop.emulator.tensordock.api import PREFIX as TENSORDOCK_PREFIX

log = logging.getLogger("gpushop.emulator")


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets whose proto says TCP,
    # and without it keep-alive responses (head, then body) stall ~40 ms on delayed ACKs.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def public_url(host: str, sock: socket.socket) -> str:
    """The URL clients use: a wildcard bind is reached through loopback."""
    port = sock.getsockname()[1]
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _uvicorn_config(app: Emulator, log_level: str) -> uvicorn.Config:
    install_log_filter()
    return uvicorn.Config(
        app,
        log_config=None,  # keep the caller's logging; uvicorn's default sends access logs to stdout
        log_level=log_level,
        access_log=False,
        lifespan="off",
        http="h11",
        ws="none",
        loop="asyncio",
        timeout_graceful_shutdown=2,
        # idle keep-alive connections live 75 s, as nginx's default (uvicorn's 5 s raced clients
        # that paused between calls: the close crossed their next request)
        timeout_keep_alive=75,
    )


class _EmulatorServer(uvicorn.Server):
    """uvicorn's server that, on shutdown, first ends every instance process and SSH server
    (on the loop that owns them)."""

    def __init__(self, app: Emulator, log_level: str) -> None:
        super().__init__(_uvicorn_config(app, log_level))
        self.emulator = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.emulator.release_holds()
        await self.emulator.runtime.aclose()
        await self.emulator.tensordock.runtime.aclose()
        await super().shutdown(sockets)


class _ForegroundServer(_EmulatorServer):
    """uvicorn re-raises the captured SIGINT after shutdown (a KeyboardInterrupt traceback);
    we only want a clean exit."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        def handle(sig: int, frame: FrameType | None) -> None:
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True

        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def serve(config: EmulatorConfig) -> None:
    """Run the emulator until SIGINT/SIGTERM. Prints VASTAI_URL, VASTAI_API_KEY, TENSORDOCK_URL
    and TENSORDOCK_API_TOKEN first."""
    config.validate()
    if not logging.getLogger().handlers:
        logging.basicConfig(
            stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
        )
    app = Emulator(config)  # builds the market before binding: the URL means "ready"
    sock = bind_socket(config.host, config.port)
    try:
        url = public_url(config.host, sock)
        print(f"VASTAI_URL={url}", flush=True)
        print(f"VASTAI_API_KEY={config.api_key}", flush=True)
        print(f"TENSORDOCK_URL={url}{TENSORDOCK_PREFIX}", flush=True)
        print(f"TENSORDOCK_API_TOKEN={config.tensordock_token}", flush=True)
        log.info(
            "emulator serving %d offers (seed %d, rate limits %s, speed %g)",
            config.offers,
            config.seed,
            "on" if config.rate_limit else "off",
            config.speed,
        )
        server = _ForegroundServer(app, "warning")
        with contextlib.suppress(KeyboardInterrupt):
            server.run(sockets=[sock])
    finally:
        app.runtime.close_all()  # in case the loop died before its shutdown ran
        app.tensordock.close()
        app.state.close()
        sock.close()


class EmulatorThread:
    """The same server on a background thread, on a real port of 127.0.0.1.

    Usage: `with EmulatorThread(EmulatorConfig(rate_limit=False)) as emu: httpx.get(emu.url + ...)`;
    `tensordock_url` (base URL of TensorDock API v2) and `tensordock_token` for the TensorDock side.
    """

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.app = Emulator(config)
        self._sock = bind_socket(config.host, config.port)
        self.url = public_url(config.host, self._sock)
        self.api_key = config.api_key
        self.tensordock_url = self.url + TENSORDOCK_PREFIX
        self.tensordock_token = config.tensordock_token
        self.control = EmulatorControl(self.url)
        self._server = _EmulatorServer(self.app, "warning")
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._sock]},
            name=f"vastai-emulator-{self.url}",
            daemon=True,
        )

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def start(self) -> EmulatorThread:
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the Vast.ai emulator did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        # Normally done by the server's shutdown on its loop; this catches a dead loop.
        self.app.runtime.close_all()
        self.app.tensordock.close()
        self.app.state.close()
        self.control.close()
        self._sock.close()

    def __enter__(self) -> EmulatorThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
