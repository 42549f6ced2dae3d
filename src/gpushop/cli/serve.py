"""``gpushop serve``: the team service (HTTP API) on this machine."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from gpushop.cli.common import settings
from gpushop.errors import UsageError


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8080,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            help="Worker processes (each a replica of its own; /metrics adds them all up).",
        ),
    ] = 1,
) -> None:
    """Serve the HTTP API (OpenAPI at /openapi.json, docs at /docs); SQLite by default,
    GPUSHOP_DB_URL=postgresql://... for a team."""
    import uvicorn

    from gpushop.api.app import create_app
    from gpushop.service.health import check_deployment

    if not 0 < port < 65536:
        raise UsageError(f"--port {port}: a port is 1-65535")
    if not 1 <= workers <= 64:
        raise UsageError(f"--workers {workers}: between 1 and 64")
    cfg = settings()
    check_deployment(cfg)
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": "warning",
        "access_log": False,
    }
    if workers == 1:
        uvicorn.run(create_app(cfg), **options)
        return
    with _metrics_dir():
        uvicorn.run("gpushop.api.app:from_environment", factory=True, workers=workers, **options)


@contextlib.contextmanager
def _metrics_dir() -> Iterator[None]:
    """Workers keep their metrics in PROMETHEUS_MULTIPROC_DIR (prometheus-client's
    multiprocess mode), so that a scrape answered by any one of them counts all: a fresh
    folder of our own unless one is given, emptied as the library requires."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="gpushop-metrics-") as folder:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
        try:
            yield
        finally:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)


def register(app: typer.Typer) -> None:
    app.command()(serve)
