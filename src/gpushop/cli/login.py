"""``gpushop login URL`` and ``gpushop logout``: the team service the CLI talks to."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from gpushop.cli.common import call_service, warn
from gpushop.errors import UsageError

TOKEN_PREFIX = "gps_"  # the service's tokens (service/users.py)


def _read_token(server: str, from_stdin: bool) -> str:
    if from_stdin:
        token = sys.stdin.readline().strip()
    elif not sys.stdin.isatty():
        raise UsageError("no terminal to ask for the token on: pipe it in with --token-stdin")
    else:
        import getpass

        token = getpass.getpass(f"token for {server} (not shown): ").strip()
    if not token:
        raise UsageError("no token given")
    if not token.startswith(TOKEN_PREFIX) or any(c.isspace() for c in token):
        # the message never shows what was typed: it may be some other secret
        raise UsageError(
            f"that is not a gpushop token (they start with {TOKEN_PREFIX}): "
            "`gpushop users add NAME` prints one on the service's host"
        )
    return token


def _environment_overrides() -> None:
    named = [name for name in ("GPUSHOP_SERVER", "GPUSHOP_TOKEN") if os.environ.get(name)]
    if named:
        warn(f"{' and '.join(named)} in the environment still override the saved login")


def login(
    server: Annotated[
        str, typer.Argument(help="The service's URL, e.g. https://gpushop.example.com")
    ],
    token_stdin: Annotated[
        bool,
        typer.Option("--token-stdin", help="Read the token from stdin instead of asking for it."),
    ] = False,
) -> None:
    """Log in to a team service (`gpushop serve`): offers, market, up, ps, down, ssh, costs and
    the job commands (run, jobs, logs, attach, train) then go through it. The token is checked,
    then saved for your user only (mode 0600)."""
    from pydantic import SecretStr

    from gpushop.client import session
    from gpushop.config import mask_url, server_url

    try:
        url = server_url(server)
    except ValueError as exc:
        raise UsageError(f"{mask_url(server)}: {exc}") from None
    token = _read_token(url, token_stdin)
    remote = session.Remote(url, SecretStr(token))
    me = call_service(remote, lambda client: client.get("/v1/me"))
    path = session.save(remote)
    admin = " (admin)" if me.get("is_admin") else ""
    print(f"logged in to {url} as {me.get('name', '?')}{admin}; saved in {path}")
    _environment_overrides()


def logout() -> None:
    """Forget the saved login: the CLI works locally again (unless GPUSHOP_SERVER is set)."""
    from gpushop.client import session
    from gpushop.errors import ConfigError

    try:
        login = session.saved()
    except ConfigError:
        login = None  # unreadable: removed all the same
    if session.forget():
        print(f"logged out of {login.server}" if login else "logged out")
    else:
        print("not logged in")
    _environment_overrides()


def register(app: typer.Typer) -> None:
    app.command()(login)
    app.command()(logout)
