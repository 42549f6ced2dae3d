"""``gpushop up / ps / down / ssh / stop / start / reconcile / costs``."""

from __future__ import annotations

import math
import os
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gpushop.cli.common import print_json, run_async, settings, warn
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
    from gpushop.service.rentals import Listing, PowerState


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
    from gpushop.service import rentals as service
    from gpushop.service.types import UpOptions
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
    opts = UpOptions(
        query=query,
        sort=sort,
        offer_id=offer,
        image=image or (None if template else UpOptions.image),
        template_hash=template,
        env=_env_pairs(env),
        ports=list(port or []),
        onstart=onstart,
        max_duration_s=parse_duration(max_duration),
        max_attempts=attempts,
        ready_timeout_s=parse_duration(ready_timeout),
        wait=wait,
        watchdog_grace_s=None if watchdog_grace == "off" else parse_duration(watchdog_grace),
        bid_price=bid,
        keep_interrupted=keep_interrupted,
        rebid=rebid,
        budget_usd=cfg.gpushop_budget_usd,
        price_cap=max_price if max_price is not None else cfg.vastai_max_bid_per_hour,
    )
    started = time.monotonic()
    rented = run_async(service.rent(cfg, opts, provider=provider, progress=_progress()))
    rental, unguarded = rented.rental, rented.unguarded
    if unguarded and unguarded.overdue:
        warn(unguarded.overdue)
    if as_json:
        print_json(rented.summary)
        return
    print(
        f"{rental.id} ready in {time.monotonic() - started:.0f}s: {rental.num_gpus}x "
        f"{rental.gpu_name} at ${rental.price_per_hour or 0:.3f}/h on {rental.provider} "
        f"instance {rental.instance_id}; released by {rental.deadline:%Y-%m-%d %H:%M} UTC"
    )
    if rental.ssh_host:
        print(
            f"  ssh -p {rental.ssh_port} {rental.ssh_user or 'root'}@{rental.ssh_host}"
            f"   (or: gpushop ssh {rental.id})"
        )
    print(f"  release: gpushop down {rental.id}")
    if unguarded:
        print(f"  {unguarded.note}")


def ps(
    all_: Annotated[bool, typer.Option("--all", "-a", help="Also ended rentals.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Your rentals, with their cost so far."""
    from gpushop.service import rentals as service

    listing = service.list_rentals(settings(), include_ended=all_)
    if as_json:
        print_json(listing.rows)
        return
    from rich.table import Table

    from gpushop.cli.render import console

    table = Table(header_style="bold")
    for col in ("rental", "state", "provider:instance", "GPU", "$/h", "cost $", "age", "left"):
        table.add_column(col, no_wrap=True)
    now = listing.now
    for r, row in zip(listing.rentals, listing.rows, strict=True):
        age = (now - r.created_at).total_seconds()
        left = (r.deadline - now).total_seconds()
        table.add_row(
            r.id,
            str(r.state),
            f"{r.provider}:{r.instance_id or '-'}",
            f"{r.num_gpus or '?'}x {r.gpu_name or '?'}",
            f"{r.price_per_hour or 0:.3f}",
            f"{row['cost_usd']:.3f}",
            _dur(age),
            "-" if r.state.terminal else _dur(max(left, 0)),
        )
    console().print(table)
    _watchdog_notes(listing)
    if any(r.state.value == "stopped" for r in listing.rentals):
        warn("stopped rentals still bill storage: release them with `gpushop down`")


def _watchdog_notes(listing: Listing) -> None:
    """Say which live rentals only `reconcile` bounds, and warn when none has watched their
    provider lately."""
    for unguarded in listing.unguarded:
        print(f"{', '.join(unguarded.rental_ids)}: {unguarded.note}")
        if unguarded.overdue:
            warn(unguarded.overdue)


def _dur(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def down(
    rental_ids: Annotated[list[str] | None, typer.Argument(help="Rental ids.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every active rental.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Release rentals for good: destroy, then verify they are gone."""
    from gpushop.service import rentals as service

    if not rental_ids and not all_:
        raise UsageError("name the rentals to release, or --all")
    released = run_async(service.release(settings(), rental_ids or [], every_live=all_))
    if as_json:
        print_json([item.as_json() for item in released])
    else:
        for item in released:
            print(f"{item.rental_id}: {item.error or item.state}")
    if any(item.error is not None for item in released):
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
) -> None:
    """SSH to a rental (interactive with OpenSSH, or run one command)."""
    from gpushop.service import rentals as service

    access = service.ssh_access(settings(), rental_id)
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
    from gpushop.service import rentals as service

    if days is not None and days < 1:
        raise UsageError("--days must be at least 1")
    now = datetime.now(UTC)
    cfg = settings()
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
