"""``gpushop webhooks`` and ``gpushop secrets``: webhook endpoints and the service's secret key."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
