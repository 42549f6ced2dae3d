"""``gpushop users``: who may use the team service (`gpushop serve`), with what limits."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from gpushop.cli.common import print_json, settings

users_app = typer.Typer(
    help="Users of the team service: tokens, admins, quotas.", no_args_is_help=True
)

QUOTA_KEYS = ("max_rentals", "max_usd_per_hour", "monthly_budget_usd")
NameArg = Annotated[str, typer.Argument(help="User name (lower case, digits, . _ -).")]
MaxRentalsOpt = Annotated[
    int | None, typer.Option("--max-rentals", help="Concurrent rentals at most.", min=0)
]
MaxRateOpt = Annotated[
    float | None,
    typer.Option("--max-usd-per-hour", help="Total $/h of active rentals at most.", min=0),
]
BudgetOpt = Annotated[
    float | None, typer.Option("--monthly-budget", help="USD per calendar month at most.", min=0)
]


def _token(name: str, token: str, what: str) -> None:
    print(token)
    print(
        f"gpushop: {what} {name}'s token, shown once: the service keeps only its hash. "
        f"Use it as: Authorization: Bearer {token[:8]}…",
        file=sys.stderr,
    )


@users_app.command("add")
def add(
    name: NameArg,
    admin: Annotated[bool, typer.Option("--admin", help="Sees and manages everything.")] = False,
    max_rentals: MaxRentalsOpt = None,
    max_usd_per_hour: MaxRateOpt = None,
    monthly_budget: BudgetOpt = None,
) -> None:
    """Add a user and print their token (once)."""
    from gpushop.service import users

    with users.open_store(settings()) as store:
        _, token = users.add(
            store,
            name,
            is_admin=admin,
            max_rentals=max_rentals,
            max_usd_per_hour=max_usd_per_hour,
            monthly_budget_usd=monthly_budget,
        )
    _token(name, token, "added")


@users_app.command("set")
def set_(
    name: NameArg,
    max_rentals: MaxRentalsOpt = None,
    max_usd_per_hour: MaxRateOpt = None,
    monthly_budget: BudgetOpt = None,
) -> None:
    """Change a user's quotas (only those given)."""
    from gpushop.service import users

    given = {
        "max_rentals": max_rentals,
        "max_usd_per_hour": max_usd_per_hour,
        "monthly_budget_usd": monthly_budget,
    }
    with users.open_store(settings()) as store:
        users.set_quotas(store, name, **{k: v for k, v in given.items() if v is not None})


@users_app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="JSON for programs.")] = False,
) -> None:
    """Every user: admin or not, quotas, their token's first characters, revoked or not."""
    from gpushop.service import users

    with users.open_store(settings()) as store:
        found = [users.public(u) for u in store.users.list()]
    if as_json:
        print_json(found)
        return
    if not found:
        print("no users yet: gpushop users add NAME [--admin]")
        return
    from rich.table import Table

    from gpushop.cli.render import console

    table = Table(header_style="bold")
    for col in ("user", "admin", "token", "max rentals", "max $/h", "budget $/month", "state"):
        table.add_column(col, no_wrap=True)
    for u in found:
        table.add_row(
            u["name"],
            "yes" if u["is_admin"] else "",
            u["hint"],
            *(
                "-" if u[k] is None else f"{u[k]:g}"
                for k in ("max_rentals", "max_usd_per_hour", "monthly_budget_usd")
            ),
            "revoked" if u["revoked_at"] else "active",
        )
    console().print(table)


@users_app.command("revoke")
def revoke(name: NameArg) -> None:
    """Revoke a user's token at once (their rentals stay, as do the limits on them)."""
    from gpushop.service import users

    with users.open_store(settings()) as store:
        users.revoke(store, name)
    print(f"revoked {name}", file=sys.stderr)


@users_app.command("rotate")
def rotate(name: NameArg) -> None:
    """A new token for a user; the old one stops working at once."""
    from gpushop.service import users

    with users.open_store(settings()) as store:
        _, token = users.rotate(store, name)
    _token(name, token, "rotated")


def register(app: typer.Typer) -> None:
    app.add_typer(users_app, name="users")
