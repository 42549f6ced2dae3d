"""``gpushop webhooks`` and ``gpushop secrets``: webhook endpoints and the service's secret key.

Both act on this machine's store directly, as ``gpushop users`` does: whoever runs them on the
box is the service's operator. ``--user NAME`` acts as that user (their endpoints only, unless
they are an admin); without it, ``list`` shows everyone's, ``add`` registers the endpoint for the
first admin, and a command on one endpoint acts as its owner. A running ``gpushop serve`` sends
what these commands queue (pings, redeliveries, held deliveries on enable)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gpushop.cli.common import print_json, run_async, settings
from gpushop.errors import NotFound, UsageError

if TYPE_CHECKING:
    from gpushop.service.types import Store, User

webhooks_app = typer.Typer(
    help="Webhook endpoints of the team service's users: add, list, ping, delivery log.",
    no_args_is_help=True,
)
secrets_app = typer.Typer(
    help="GPUSHOP_SECRET_KEY, which encrypts the secrets the service keeps.",
    no_args_is_help=True,
)

STATUSES = ("pending", "delivered", "failed", "held")
IdArg = Annotated[
    str, typer.Argument(help="The endpoint's id (wh_...).", metavar="ID", show_default=False)
]
UserOpt = Annotated[
    str | None,
    typer.Option(
        "--user",
        help="Act as this user (default: everyone / the endpoint's owner).",
        metavar="NAME",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON for programs.")]


@contextmanager
def _store() -> Iterator[Store]:
    """The store, with a wrong id or a refused URL told as bad input (exit 2)."""
    from gpushop.service import users, webhooks

    try:
        with users.open_store(settings()) as store:
            yield store
    except (NotFound, webhooks.AddressRefused, webhooks.Unresolvable) as exc:
        raise UsageError(str(exc)) from None


def _user(store: Store, name: str) -> User:
    found = store.users.by_name(name)
    if found is None:
        raise UsageError(f"no user {name!r} (see `gpushop users list`)")
    return found


def _first_admin(store: Store) -> User:
    admins = [u for u in store.users.list() if u.is_admin and u.active]
    if not admins:
        raise UsageError(
            "no admin to own the webhook: pass --user NAME, or add one with"
            " `gpushop users add NAME --admin`"
        )
    return min(admins, key=lambda u: u.created_at)


def _everyone(store: Store) -> list[dict[str, Any]]:
    """Every user's endpoints, oldest first (each endpoint has exactly one owner)."""
    from gpushop.service import webhooks

    found = [e for u in store.users.list() for e in webhooks.listing(store, u)]
    return sorted(found, key=lambda e: (e["created_at"], e["id"]))


def _acting(store: Store, name: str | None, endpoint_id: str) -> User:
    """``--user``'s user, else the endpoint's owner (the operator acts for anyone)."""
    from gpushop.service import webhooks

    if name is not None:
        return _user(store, name)
    for user in store.users.list():
        if any(e["id"] == endpoint_id for e in webhooks.listing(store, user)):
            return user
    raise NotFound(f"no webhook {endpoint_id!r} (see `gpushop webhooks list`)")


def _types(types: list[str]) -> str:
    return ", ".join(types) if types else "all"


def _secret(secret: str, told: str) -> None:
    print(secret)
    print(
        f"gpushop: {told}. The signing secret is printed above, ONCE: the service keeps it"
        " encrypted and never shows it again",
        file=sys.stderr,
    )


@webhooks_app.command("list")
def list_(user: UserOpt = None, as_json: JsonOpt = False) -> None:
    """Webhook endpoints (everyone's, or --user's): URL, event types, enabled or not."""
    from gpushop.service import webhooks

    with _store() as store:
        found = webhooks.listing(store, _user(store, user)) if user else _everyone(store)
        names = {u.id: u.name for u in store.users.list()}
    if as_json:
        print_json(found)
        return
    if not found:
        print("no webhooks yet: gpushop webhooks add URL [--type rental.ready ...]")
        return
    from rich.table import Table

    from gpushop.cli.render import console

    table = Table(header_style="bold")
    for col in ("id", "user", "url", "event types", "state", "description"):
        table.add_column(col, no_wrap=col in ("id", "user", "state"), overflow="fold")
    for e in found:
        state = "enabled" if e["enabled"] else f"disabled: {e['disabled_reason'] or '?'}"
        if e["rotating_until"]:
            state += f" (rotating until {e['rotating_until'][:16]})"
        table.add_row(
            e["id"],
            names.get(e["user_id"], e["user_id"]),
            e["url"],
            _types(e["event_types"]),
            state,
            e["description"],
        )
    console().print(table)


@webhooks_app.command("add")
def add(
    url: Annotated[str, typer.Argument(help="http(s) URL that receives the events.")],
    type_: Annotated[
        list[str] | None,
        typer.Option(
            "--type", "-t", help="Only this event type (repeatable; rental.* for a family)."
        ),
    ] = None,
    description: Annotated[str, typer.Option("--description", "-d", help="A note.")] = "",
    user: Annotated[
        str | None,
        typer.Option("--user", help="Its owner (default: the first admin).", metavar="NAME"),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="The endpoint, secret included, as JSON.")
    ] = False,
) -> None:
    """Register an endpoint and print its signing secret (whsec_..., shown once)."""
    from gpushop.service import webhooks

    cfg = settings()
    with _store() as store:
        owner = _first_admin(store) if user is None else _user(store, user)
        made = run_async(webhooks.create(cfg, store, owner, url, type_ or [], description))
    if as_json:
        print_json(made)
    else:
        _secret(
            made["secret"],
            f"added webhook {made['id']} for {owner.name} ({made['url']}),"
            f" events: {_types(made['event_types'])}",
        )


@webhooks_app.command("rm")
def rm(endpoint_id: IdArg, user: UserOpt = None) -> None:
    """Remove an endpoint (what it still had to receive ends as failed; the log stays)."""
    from gpushop.service import webhooks

    with _store() as store:
        webhooks.delete(store, _acting(store, user, endpoint_id), endpoint_id)
    print(f"removed webhook {endpoint_id}", file=sys.stderr)


def _delivery_line(d: dict[str, Any], what: str) -> None:
    print(f"delivery {d['id']} {what}: {d['event_type']}, webhook-id {d['webhook_id']}")
    print("gpushop: a running `gpushop serve` sends it", file=sys.stderr)


@webhooks_app.command("ping")
def ping(endpoint_id: IdArg, user: UserOpt = None, as_json: JsonOpt = False) -> None:
    """Queue a webhook.ping to this endpoint alone (even a disabled one)."""
    from gpushop.service import webhooks

    with _store() as store:
        delivery = webhooks.ping(store, _acting(store, user, endpoint_id), endpoint_id)
    if as_json:
        print_json(delivery)
    else:
        _delivery_line(delivery, "queued")


@webhooks_app.command("enable")
def enable(endpoint_id: IdArg, user: UserOpt = None, as_json: JsonOpt = False) -> None:
    """Enable a disabled endpoint again; the deliveries held meanwhile are sent."""
    from gpushop.service import webhooks

    with _store() as store:
        shown = webhooks.enable(store, _acting(store, user, endpoint_id), endpoint_id)
    if as_json:
        print_json(shown)
    else:
        print(
            f"enabled webhook {endpoint_id}: {shown['resumed_deliveries']} held deliveries resumed"
        )


@webhooks_app.command("rotate")
def rotate(endpoint_id: IdArg, user: UserOpt = None, as_json: JsonOpt = False) -> None:
    """A new signing secret (printed once); the old one also signs for 24 hours."""
    from gpushop.service import webhooks

    cfg = settings()
    with _store() as store:
        shown = webhooks.rotate(cfg, store, _acting(store, user, endpoint_id), endpoint_id)
    if as_json:
        print_json(shown)
    else:
        _secret(
            shown["secret"],
            f"new secret for webhook {endpoint_id}; the old one signs too until"
            f" {shown['rotating_until']}, while receivers switch over",
        )


@webhooks_app.command("deliveries")
def deliveries(
    endpoint_id: IdArg,
    status: Annotated[
        str | None, typer.Option("--status", help=f"Only these: {', '.join(STATUSES)}.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many.", min=1)] = 50,
    user: UserOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """An endpoint's deliveries, newest first, with their attempts."""
    from gpushop.service import webhooks

    if status is not None and status not in STATUSES:
        raise UsageError(f"--status: {status!r} is not one of {', '.join(STATUSES)}")
    with _store() as store:
        acting = _acting(store, user, endpoint_id)
        found = webhooks.deliveries(store, acting, endpoint_id, status=status, limit=limit)
    if as_json:
        print_json(found)
        return
    if not found:
        print(f"no deliveries to {endpoint_id}" + (f" {status}" if status else ""))
        return
    from rich.table import Table

    from gpushop.cli.render import console

    table = Table(header_style="bold")
    for col in ("id", "type", "status", "attempts", "last status", "last error", "created"):
        table.add_column(col, no_wrap=col != "last error", overflow="fold")
    for d in found:
        table.add_row(
            str(d["id"]),
            d["event_type"],
            d["status"],
            str(d["attempts"]),
            "-" if d["last_status"] is None else str(d["last_status"]),
            d["last_error"] or "",
            d["created_at"][:19],
        )
    console().print(table)


@webhooks_app.command("redeliver")
def redeliver(
    endpoint_id: IdArg,
    delivery_id: Annotated[int, typer.Argument(help="The delivery's id (see deliveries).")],
    user: UserOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send a delivery again, with the same webhook-id."""
    from gpushop.service import webhooks

    with _store() as store:
        acting = _acting(store, user, endpoint_id)
        delivery = webhooks.redeliver(store, acting, endpoint_id, delivery_id)
    if as_json:
        print_json(delivery)
    else:
        _delivery_line(delivery, "queued again")


@secrets_app.command("keygen")
def keygen() -> None:
    """Print a new key for GPUSHOP_SECRET_KEY (a Fernet key)."""
    from gpushop.service import webhooks

    print(webhooks.keygen())
    print(
        "gpushop: set it as GPUSHOP_SECRET_KEY (keep it secret, and backed up: the webhook"
        " secrets in the store open only with it). To rotate: put the new key first,"
        " comma-separated, then `gpushop secrets rotate`, then drop the old one",
        file=sys.stderr,
    )


@secrets_app.command("rotate")
def rotate_key() -> None:
    """Re-encrypt every stored secret under the first key of GPUSHOP_SECRET_KEY."""
    from gpushop.service import team_jobs, users, webhooks

    cfg = settings()
    with users.open_store(cfg) as store:
        count = webhooks.reseal_all(cfg, store)
        jobs = team_jobs.reseal(cfg, store)
    print(
        f"re-encrypted the secrets of {count} webhook endpoint(s) and {jobs} unfinished job(s)"
        " under the first key"
    )
    if count or jobs:
        print(
            "gpushop: the keys after the first in GPUSHOP_SECRET_KEY may be dropped now",
            file=sys.stderr,
        )


def register(app: typer.Typer) -> None:
    app.add_typer(webhooks_app, name="webhooks")
    app.add_typer(secrets_app, name="secrets")
