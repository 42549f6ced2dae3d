"""``gpushop serve``: the team service (HTTP API) on this machine."""

from __future__ import annotations

from typing import Annotated

import typer

from gpushop.cli.common import settings
from gpushop.errors import UsageError


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8080,
) -> None:
    """Serve the HTTP API (OpenAPI at /openapi.json, docs at /docs); SQLite by default,
    GPUSHOP_DB_URL=postgresql://... for a team."""
    import uvicorn

    from gpushop.api.app import create_app
    from gpushop.service.health import check_deployment

    if not 0 < port < 65536:
        raise UsageError(f"--port {port}: a port is 1-65535")
    cfg = settings()
    check_deployment(cfg)
    uvicorn.run(create_app(cfg), host=host, port=port, log_level="warning", access_log=False)


def register(app: typer.Typer) -> None:
    app.command()(serve)
