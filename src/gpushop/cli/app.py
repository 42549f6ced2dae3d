"""``gpushop``: the entry point. Heavy modules are imported inside commands so that a cold
``gpushop offers --json`` starts fast."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import typer
from click import exceptions as click_exc

from gpushop.errors import GpushopError

app = typer.Typer(
    name="gpushop",
    help="Cloud GPU Shopper: find the best reliable GPU offer, rent it, use it, release it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def fail(message: str, code: int = 2) -> None:
    """One line on stderr and an exit code: the only way errors leave the CLI."""
    raise typer.Exit(_print_error(message, code))


def _print_error(message: str, code: int) -> int:
    print(f"gpushop: error: {message}", file=sys.stderr)
    return code


_registered = False


def _register() -> None:
    """Add the commands, once per process (tests call ``main`` many times)."""
    global _registered
    if _registered:
        return
    _registered = True
    from gpushop.cli import (
        events,
        jobs,
        login,
        misc,
        rentals,
        serve,
        shopping,
        templates,
        training,
        users,
        webhooks,
    )

    shopping.register(app)
    templates.register(app)
    rentals.register(app)
    jobs.register(app)
    training.register(app)
    serve.register(app)
    users.register(app)
    login.register(app)
    events.register(app)
    webhooks.register(app)
    misc.register(app)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (and exits with it when called as a script)."""
    level = os.environ.get("GPUSHOP_LOG_LEVEL", "WARNING").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.WARNING),
        stream=sys.stderr,
        format="gpushop: %(levelname)s: %(message)s",
    )
    # httpx logs every request URL at INFO; keep it quiet unless asked.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)  # nor its connection details
    _register()
    code = run(argv)
    if argv is None:
        sys.exit(code)
    return code


_command: tuple[int, Any] | None = None


def _click_command() -> Any:
    """The click command typer builds from ``app`` (what ``app(...)`` would build on every call:
    160 ms of signatures), built once per process and again only when commands were added.
    Tests call ``main`` thousands of times in one process."""
    global _command
    count = len(app.registered_commands) + len(app.registered_groups)
    if _command is None or _command[0] != count:
        _command = (count, typer.main.get_command(app))
    return _command[1]


def run(argv: list[str] | None) -> int:
    try:
        result = _click_command()(args=argv, standalone_mode=False, prog_name="gpushop")
    except click_exc.NoArgsIsHelpError:
        return 2  # typer has printed the help already
    except click_exc.UsageError as exc:
        message = exc.format_message().splitlines()[0].replace("Value error, ", "")
        return _print_error(message, 2)
    except typer.Abort:
        return _print_error("interrupted", 130)
    except KeyboardInterrupt:
        return _print_error("interrupted", 130)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except GpushopError as exc:
        return _print_error(str(exc), exc.exit_code)
    except BrokenPipeError:
        return 0
    return result if isinstance(result, int) else 0
