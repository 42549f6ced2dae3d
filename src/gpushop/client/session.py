"""Which team service the CLI talks to, and with which token.

``GPUSHOP_SERVER`` and ``GPUSHOP_TOKEN`` (the environment, or a profile) override what
``gpushop login URL`` saved in ``<config dir>/login.json`` (mode 0600). The saved token is only
ever sent to the server it was saved for. Nothing configured: the CLI works locally.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import orjson
from pydantic import SecretStr

from gpushop.config import Settings, config_dir, server_url
from gpushop.errors import ConfigError

LOGIN_FILE = "login.json"


@dataclass(frozen=True)
class Remote:
    """A team service's root URL and the user's token (never shown: SecretStr)."""

    server: str
    token: SecretStr


def login_path() -> Path:
    return config_dir() / LOGIN_FILE


def saved() -> Remote | None:
    """What `gpushop login` saved, if anything readable."""
    path = login_path()
    try:
        raw = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError):
        raise ConfigError(f"cannot read {path}: run `gpushop login URL` again") from None
    server, token = (raw.get("server"), raw.get("token")) if isinstance(raw, dict) else (None, None)
    if not isinstance(server, str) or not isinstance(token, str) or not token:
        raise ConfigError(f"{path} is not a gpushop login: run `gpushop login URL` again")
    try:
        return Remote(server_url(server), SecretStr(token))
    except ValueError as exc:
        raise ConfigError(f"{path}: server {exc}") from None


def remote(cfg: Settings) -> Remote | None:
    """The service this command talks to; None: work locally (no server configured)."""
    server = cfg.gpushop_server
    token = cfg.gpushop_token
    if server is None and token is None:
        return saved()
    login = saved()
    if server is None:
        if login is None:
            raise ConfigError(
                "GPUSHOP_TOKEN is set without a server: set GPUSHOP_SERVER too, "
                "or run `gpushop login URL`"
            )
        server = login.server
    if token is None:
        if login is None or login.server != server:  # a token goes only where it was issued
            raise ConfigError(
                f"GPUSHOP_SERVER is set without a token: set GPUSHOP_TOKEN, "
                f"or run `gpushop login {server}`"
            )
        token = login.token
    return Remote(server, token)


def save(login: Remote) -> Path:
    """Write the login for the next commands: owner-only (0600) from its first byte."""
    path = login_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = orjson.dumps({"server": login.server, "token": login.token.get_secret_value()})
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".login-", suffix=".tmp")  # 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def forget() -> bool:
    """Remove the saved login; False: there was none."""
    try:
        login_path().unlink()
    except FileNotFoundError:
        return False
    return True
