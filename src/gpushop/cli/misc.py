"""``gpushop config`` and ``gpushop emulator``."""

from __future__ import annotations

from typing import Annotated

import typer

from gpushop.cli.common import print_json, settings
from gpushop.errors import GpushopError, UsageError


def config(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Show the effective configuration (secrets masked) and where each value comes from."""
    from gpushop.config import describe

    rows = describe(settings())
    if as_json:
        print_json({name: {"value": value, "source": source} for name, value, source in rows})
        return
    from rich.table import Table

    from gpushop.cli.render import console

    table = Table(header_style="bold")
    table.add_column("variable")
    table.add_column("value")
    table.add_column("source")
    for row in rows:
        table.add_row(*row)
    console().print(table)


def emulator(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: a free one).")] = 0,
    offers: Annotated[int, typer.Option(help="Offers in the synthetic market (max 20000).")] = 600,
    seed: Annotated[int, typer.Option(help="Market seed.")] = 0,
    api_key: Annotated[str, typer.Option("--api-key", help="The accepted API key.")] = "emulator",
    tensordock_token: Annotated[
        str, typer.Option("--tensordock-token", help="The accepted TensorDock API token.")
    ] = "tensordock-emulator",
    no_rate_limit: Annotated[
        bool, typer.Option("--no-rate-limit", help="Turn the real rate limits off.")
    ] = False,
    speed: Annotated[float, typer.Option(help="Divide every simulated delay by this.")] = 1.0,
    sftp: Annotated[
        str,
        typer.Option(
            help="SFTP inside instances: auto (OpenSSH's sftp-server where installed) or builtin."
        ),
    ] = "auto",
) -> None:
    """Run the Vast.ai and TensorDock emulator (prints VASTAI_URL, VASTAI_API_KEY, TENSORDOCK_URL
    and TENSORDOCK_API_TOKEN, then serves)."""
    if not 1 <= offers <= 20000:
        raise UsageError("--offers must be between 1 and 20000")
    if speed <= 0:
        raise UsageError("--speed must be positive")
    if not 0 <= port <= 65535:
        raise UsageError("--port must be between 0 and 65535")
    from gpushop.emulator.config import EmulatorConfig
    from gpushop.emulator.server import serve

    try:
        cfg = EmulatorConfig(
            host=host,
            port=port,
            offers=offers,
            seed=seed,
            api_key=api_key,
            tensordock_token=tensordock_token,
            rate_limit=not no_rate_limit,
            speed=speed,
            sftp=sftp,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        serve(cfg)
    except OSError as exc:  # the port is taken, or the address cannot be bound
        raise GpushopError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None


def register(app: typer.Typer) -> None:
    app.command()(config)
    app.command()(emulator)
