"""``gpushop up / ps / down / ssh / stop / start / reconcile / costs``."""

from __future__ import annotations

import math
import os
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gpushop.cli.common import call_service, print_json, run_async, settings, team_service, warn
from gpushop.cli.shopping import (
    CountryOpt,
    DiskOpt,
    GpuOpt,
    InterruptibleOpt,
    JsonOpt,
    MaxPriceOpt,
    MinCudaOpt,
    MinRelOpt,
    MinVramOpt,
    NumGpusOpt,
    ProviderOpt,
    SortOpt,
    UnverifiedOpt,
)
from gpushop.config import looks_like_credential, names_a_secret
from gpushop.errors import UsageError
from gpushop.models import SortKey
from gpushop.offer_flags import build_query

if TYPE_CHECKING:
    from gpushop.service.rentals import Listing, PowerState, Unguarded


def _progress() -> Any:
    def show(message: str) -> None:
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        print(f"[{stamp}] {message}", file=sys.stderr, flush=True)

    return show


def _env_pairs(values: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--env {item!r}: use KEY=VALUE")
        if names_a_secret(key) or looks_like_credential(value):
            # the create call's env shows in every instance listing (DESIGN: secrets stay off
            # the provider); the message names the variable, never the value
            what = (
                "the value looks like a credential"
                if looks_like_credential(value)
                else ("its name says it is a secret")
            )
            raise UsageError(
                f"--env {key.strip()}: {what}, and `up` would show it "
                "in the instance's listing; pass it at run time instead "
                f"(`gpushop run --env {key.strip()}=...`, or over `gpushop ssh`)"
            )
        out[key.strip()] = value
    return out


def up(
    gpu: GpuOpt = None,
    min_vram: MinVramOpt = None,
    num_gpus: NumGpusOpt = None,
    max_price: MaxPriceOpt = None,
    min_reliability: MinRelOpt = 0.98,
    disk: DiskOpt = 32.0,
    min_cuda: MinCudaOpt = None,
    country: CountryOpt = None,
    interruptible: InterruptibleOpt = False,
    unverified: UnverifiedOpt = False,
    sort: SortOpt = SortKey.VALUE,
    provider: ProviderOpt = None,
    offer: Annotated[
        str | None,
        typer.Option("--offer", help="Rent exactly this offer: its id or a table's short id."),
    ] = None,
    image: Annotated[str | None, typer.Option("--image", help="Docker image.")] = None,
    template: Annotated[str | None, typer.Option("--template", help="Template hash.")] = None,
    env: Annotated[list[str] | None, typer.Option("--env", help="KEY=VALUE, repeatable.")] = None,
    port: Annotated[list[int] | None, typer.Option("--port", help="Port to open.")] = None,
    onstart: Annotated[str | None, typer.Option("--onstart", help="Shell run at start.")] = None,
    max_duration: Annotated[
        str, typer.Option("--max-duration", help="Released after this (e.g. 2h, 90m).")
    ] = "4h",
    bid: Annotated[float | None, typer.Option("--bid", help="Interruptible bid USD/h.")] = None,
    keep_interrupted: Annotated[
        bool, typer.Option("--keep-interrupted", help="Do not release when outbid.")
    ] = False,
    rebid: Annotated[
        bool,
        typer.Option(
            "--rebid", help="When outbid, bid what wins now up to --max-price (else release)."
        ),
    ] = False,
    attempts: Annotated[int, typer.Option("--attempts", help="Offers to try at most.")] = 3,
    watchdog_grace: Annotated[
        str,
        typer.Option(
            "--watchdog-grace",
            help="The instance stops itself this long after --max-duration ('off': never).",
        ),
    ] = "10m",
    ready_timeout: Annotated[
        str, typer.Option("--ready-timeout", help="Loading timeout per offer.")
    ] = "15m",
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait until SSH answers.")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Rent the best offer and wait until its SSH answers."""
    from gpushop.units import parse_duration

    if image and template:
        raise UsageError("give --image or --template, not both")
    if bid is not None and (not math.isfinite(bid) or bid <= 0 or not interruptible):
        raise UsageError("--bid needs --interruptible and a positive USD/h figure")
    if rebid and not interruptible:
        raise UsageError("--rebid needs --interruptible")
    if not 1 <= attempts <= 20:
        raise UsageError("--attempts must be between 1 and 20")
    cfg = settings()
    query = build_query(
        gpu=gpu,
        min_vram=min_vram,
        num_gpus=num_gpus,
        max_price=max_price,
        min_reliability=min_reliability,
        disk=disk,
        min_cuda=min_cuda,
        country=country,
        interruptible=interruptible,
        unverified=unverified,
        settings_max_price=cfg.vastai_max_bid_per_hour,
    )
    env_pairs = _env_pairs(env)
    max_duration_s = parse_duration(max_duration)
    ready_timeout_s = parse_duration(ready_timeout)
    watchdog_grace_s = None if watchdog_grace == "off" else parse_duration(watchdog_grace)
    price_cap = max_price if max_price is not None else cfg.vastai_max_bid_per_hour
    service = team_service(cfg)
    started = time.monotonic()
    unguarded: Unguarded | None = None
    if service is not None:
        from gpushop.client import remote

        not_taken = {"--bid": bid is not None, "--keep-interrupted": keep_interrupted}
        not_taken |= {"--rebid": rebid, "--onstart": onstart is not None}
        for flag, given in not_taken.items():
            if given:
                raise UsageError(
                    f"{flag}: the team service ({service.server}) cannot take it; "
                    "leave it out, or rent locally (without GPUSHOP_SERVER)"
                )
        body = {
            "gpu": gpu,
            "min_vram": min_vram,
            "num_gpus": num_gpus,
            "max_price": price_cap,
            "min_reliability": min_reliability,
            "disk": disk,
            "min_cuda": min_cuda,
            "country": country,
            "interruptible": interruptible,
            "unverified": unverified,
            "sort": sort.value,
            "provider": provider,
            "offer": _offer_shown(offer),
            "image": image,
            "template": template,
            "env": env_pairs,
            "ports": list(port or []),
            "max_duration": max_duration,
            "attempts": attempts,
            "ready_timeout": ready_timeout,
            "watchdog_grace": watchdog_grace,
        }
        view = call_service(
            service, lambda client: remote.rent(client, body, wait=wait, progress=_progress())
        )
        summary = remote.up_summary(view)
    else:
        from gpushop.service import rentals as local
        from gpushop.service.types import UpOptions

        opts = UpOptions(
            query=query,
            sort=sort,
            offer_id=offer,
            image=image or (None if template else UpOptions.image),
            template_hash=template,
            env=env_pairs,
            ports=list(port or []),
            onstart=onstart,
            max_duration_s=max_duration_s,
            max_attempts=attempts,
            ready_timeout_s=ready_timeout_s,
            wait=wait,
            watchdog_grace_s=watchdog_grace_s,
            bid_price=bid,
            keep_interrupted=keep_interrupted,
            rebid=rebid,
            budget_usd=cfg.gpushop_budget_usd,
            price_cap=price_cap,
        )
        rented = run_async(local.rent(cfg, opts, provider=provider, progress=_progress()))
        summary, unguarded = rented.summary, rented.unguarded
    if unguarded and unguarded.overdue:
        warn(unguarded.overdue)
    if as_json:
        print_json(summary)
        return
    deadline = datetime.fromisoformat(summary["deadline"])
    print(
        f"{summary['rental_id']} ready in {time.monotonic() - started:.0f}s: "
        f"{summary['num_gpus']}x {summary['gpu_name']} at ${summary['price_per_hour'] or 0:.3f}/h"
        f" on {summary['provider']} instance {summary['instance_id']}; "
        f"released by {deadline:%Y-%m-%d %H:%M} UTC"
    )
    if summary["ssh_host"]:
        print(
            f"  ssh -p {summary['ssh_port']} {summary['ssh_user'] or 'root'}@{summary['ssh_host']}"
            f"   (or: gpushop ssh {summary['rental_id']})"
        )
    print(f"  release: gpushop down {summary['rental_id']}")
    if unguarded:
        print(f"  {unguarded.note}")


def _offer_shown(token: str | None) -> str | None:
    """``--offer``: the full id of the offer a table of this machine showed as ``token``; the
    service resolves any other id or prefix among its current offers."""
    if token is None:
        return None
    from gpushop import offer_ids
    from gpushop.config import cache_dir

    return offer_ids.recall(cache_dir(), token) or token.strip()


def ps(
    all_: Annotated[bool, typer.Option("--all", "-a", help="Also ended rentals.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Your rentals, with their cost so far."""
    cfg = settings()
    service = team_service(cfg)
    listing: Listing | None = None
    if service is not None:
        from gpushop.client import remote

        rows = call_service(service, lambda c: remote.rentals(c, include_ended=all_))
        now = datetime.now(UTC)
    else:
        from gpushop.service import rentals as local

        listing = local.list_rentals(cfg, include_ended=all_)
        rows, now = listing.rows, listing.now
    if as_json:
        print_json(rows)
        return
    from gpushop.cli.render import rentals_table

    rentals_table(rows, now)
    if listing is not None:  # the service reconciles its own rentals
        _watchdog_notes(listing)
    if any(row["state"] == "stopped" for row in rows):
        warn("stopped rentals still bill storage: release them with `gpushop down`")


def _watchdog_notes(listing: Listing) -> None:
    """Say which live rentals only `reconcile` bounds, and warn when none has watched their
    provider lately."""
    for unguarded in listing.unguarded:
        print(f"{', '.join(unguarded.rental_ids)}: {unguarded.note}")
        if unguarded.overdue:
            warn(unguarded.overdue)


def _dur(seconds: float) -> str:
    from gpushop.cli.render import duration

    return duration(seconds)


def down(
    rental_ids: Annotated[list[str] | None, typer.Argument(help="Rental ids.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every active rental.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Release rentals for good: destroy, then verify they are gone."""
    if not rental_ids and not all_:
        raise UsageError("name the rentals to release, or --all")
    cfg = settings()
    service = team_service(cfg)
    if service is not None:
        from gpushop.client import remote

        names = rental_ids or []
        released = call_service(service, lambda c: remote.release(c, names, every_live=all_))
    else:
        from gpushop.service import rentals as local

        done = run_async(local.release(cfg, rental_ids or [], every_live=all_))
        released = [item.as_json() for item in done]
    if as_json:
        print_json(released)
    else:
        for item in released:
            print(f"{item['rental_id']}: {item.get('error') or item['state']}")
    if any(item.get("error") is not None for item in released):
        raise typer.Exit(1)


def reconcile_cmd(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say, do nothing.")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Run as a loop.")] = False,
    interval: Annotated[str, typer.Option("--interval", help="Loop period.")] = "60s",
    as_json: JsonOpt = False,
) -> None:
    """Destroy orphans, mark ghosts, release expired rentals. Safe at any time."""
    from gpushop.service import rentals as service
    from gpushop.units import parse_duration

    period = parse_duration(interval)  # checked even without --watch
    every_s = period if watch else None
    cfg = settings()

    async def go() -> int:
        code = 0  # the last pass's: only a single pass (no --watch) ends
        async for report in service.reconcile_passes(cfg, dry_run=dry_run, every_s=every_s):
            _show_report(report, as_json)
            code = 1 if report["errors"] else 0
        return code

    code = run_async(go())
    if code:
        raise typer.Exit(code)


def _show_report(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(report)
        return
    if report["skipped"]:
        print(f"reconcile skipped: {report['skipped']}")
        return
    verb = "would" if report["dry_run"] else "did"
    print(
        f"reconcile: {report['listed']} labelled instance(s) listed, "
        f"{len(report['actions'])} action(s)"
    )
    for a in report["actions"]:
        target = a["rental_id"] or "-"
        print(
            f"  {verb} {a['kind']}: rental {target}, instance {a['instance_id'] or '-'}"
            f" ({a['reason']}){' ERROR: ' + a['error'] if a.get('error') else ''}"
        )
        if a.get("result"):
            print(f"    {a['result']}")


def _set_state(rental_id: str, state: PowerState) -> None:
    from gpushop.service import rentals as service

    change = run_async(service.set_power(settings(), rental_id, state))
    if state == "stopped" and change.gpu_released:
        warn(
            "stopped with its GPU released (a stopped VM that keeps its GPU bills the full "
            "rate): only storage bills now, and a restart may find no GPU free on that host"
        )
    elif state == "stopped":
        warn("a stopped instance still bills storage; `gpushop down` releases it for good")
    elif not change.done:
        warn("the host's GPUs are busy: the start is queued by the provider")


def stop(rental_id: Annotated[str, typer.Argument(help="Rental id.")]) -> None:
    """Stop a rental's instance (GPU billing stops; storage still bills)."""
    _set_state(rental_id, "stopped")


def start(rental_id: Annotated[str, typer.Argument(help="Rental id.")]) -> None:
    """Start a stopped rental again (the GPUs may be taken meanwhile)."""
    _set_state(rental_id, "running")


def extend(
    rental_id: Annotated[str, typer.Argument(help="Rental id.")],
    max_duration: Annotated[
        str, typer.Option("--max-duration", help="The new max duration, from the rental's start.")
    ],
    as_json: JsonOpt = False,
) -> None:
    """Give a live rental more time: the limit reconcile enforces and its watchdog's deadline."""
    from gpushop.service import rentals as service
    from gpushop.units import parse_duration

    limit = parse_duration(max_duration)
    done = run_async(service.extend(settings(), rental_id, limit))
    result = {
        "rental_id": done.rental_id,
        "max_duration_s": done.max_duration_s,
        "watchdog_deadline": done.watchdog_deadline,
    }
    if as_json:
        print_json(result)
        return
    until = (
        datetime.fromtimestamp(done.watchdog_deadline, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        if done.watchdog_deadline is not None
        else "no watchdog on this provider"
    )
    print(f"{done.rental_id}: max duration {_dur(done.max_duration_s)}; watchdog: {until}")


def ssh_cmd(
    rental_id: Annotated[str, typer.Argument(help="Rental id.")],
    command: Annotated[list[str] | None, typer.Argument(help="Command to run (after --).")] = None,
    identity: Annotated[
        str | None,
        typer.Option(
            "--identity",
            "-i",
            help="A team service's rentals: your private key (default: OpenSSH's choice).",
        ),
    ] = None,
) -> None:
    """SSH to a rental (interactive with OpenSSH, or run one command)."""
    cfg = settings()
    server = team_service(cfg)
    if server is not None:
        # the service's rental, reached with the user's own key (registered with
        # POST /v1/me/ssh-keys and installed on it by the service), never the service's
        from gpushop.client import remote

        view = call_service(server, lambda c: remote.rental(c, rental_id))
        argv = remote.openssh_argv(view, identity, list(command or []))
        sys.stdout.flush()
        os.execv(argv[0], argv)
    if identity is not None:
        raise UsageError(
            "--identity is for a team service's rentals (GPUSHOP_SERVER): "
            "gpushop reaches its own rentals with its own key"
        )
    from gpushop.service import rentals as service

    access = service.ssh_access(cfg, rental_id)
    if command:
        code, out, err = run_async(service.run_over_ssh(access, command))
        sys.stdout.write(out)
        sys.stderr.write(err)
        raise typer.Exit(code)
    argv = service.openssh_argv(access)
    os.execv(argv[0], argv)


def costs(
    days: Annotated[
        int | None, typer.Option("--days", help="The last N days (default: this month).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """What your rentals cost, by day, GPU model and provider, against what was billed."""
    if days is not None and days < 1:
        raise UsageError("--days must be at least 1")
    now = datetime.now(UTC)
    cfg = settings()
    server = team_service(cfg)
    if server is not None:
        from gpushop.client import remote

        data, warnings = call_service(server, lambda c: remote.costs(c, days))
        for message in warnings:
            warn(message)
    else:
        from gpushop.service import rentals as service

        data = run_async(service.cost_report(cfg, days=days, now=now, warn=warn))
    if as_json:
        print_json(data)
        return
    print(f"Costs {data['start'][:10]} .. {data['end'][:16]}: ${data['total_usd']:.2f}")
    for title, key in (("by day", "by_day"), ("by GPU", "by_gpu"), ("by provider", "by_provider")):
        if data[key]:
            print(f"  {title}: " + ", ".join(f"{k} ${v:.2f}" for k, v in data[key].items()))
    if data["billed_by_provider"]:
        for name, billed in data["billed_by_provider"].items():
            ours = data["by_provider"].get(name, 0.0)
            print(f"  {name} billed ${billed:.2f} for our instances (we count ${ours:.2f})")


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(ps)
    app.command()(down)
    app.command("ssh")(ssh_cmd)
    app.command()(extend)
    app.command()(stop)
    app.command()(start)
    app.command("reconcile")(reconcile_cmd)
    app.command()(costs)
