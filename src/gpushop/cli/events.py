"""``gpushop events``: what happened to the rentals and jobs of this store, in order."""

from __future__ import annotations

import time
from typing import Annotated

import orjson
import typer

from gpushop.cli.common import settings

POLL_S = 1.0


def events(
    type_: Annotated[
        list[str] | None, typer.Option("--type", help="Only this type (rental.ready...).")
    ] = None,
    subject: Annotated[
        str | None, typer.Option("--subject", help="Only this subject (rental:ID, job:ID).")
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Rental and job events (rental.ready, job.failed...), oldest first."""
    from gpushop.service import events as service
    from gpushop.service.users import open_store

    after = 0
    with open_store(settings()) as store:
        while True:
            page = service.page(store, after=after, types=type_, subject=subject, limit=1000)
            for event in page["events"]:
                if as_json:
                    print(orjson.dumps(event).decode(), flush=True)
                else:
                    print(
                        f"{event['at'][:19]}  {event['type']:<18} {event['subject']:<22} "
                        f"{event['reason']}",
                        flush=True,
                    )
            after = page["next"]
            if page["events"]:
                continue  # more may follow at once
            if not follow:
                return
            time.sleep(POLL_S)


def register(app: typer.Typer) -> None:
    app.command()(events)
