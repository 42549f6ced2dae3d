"""What `offers`, `market`, `up`, `ps`, `down`, `ssh` and `costs` ask a team service, answering
with the data the local commands render: the same JSON keys, so one renderer serves both.

The service's rental (``GET /v1/rentals/{id}``) has no ``label`` and no ``watchdog`` (they are the
service's business): in client mode those keys are ``null``.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from gpushop.client.http import ApiClient
from gpushop.errors import GpushopError, NotFound, UsageError
from gpushop.models import TERMINAL, RentalState

Notify = Callable[[str], None]

# a rental that will not become ready (outbid while loading counts)
ENDED = frozenset({s.value for s in TERMINAL} | {RentalState.INTERRUPTED.value})
# a failed host is followed by the next offer's rental, named on it as `replaced_by` a moment
# later (the service releases the failed one first): waited for this long at most
REPLACEMENT_GRACE_S = 20.0
POLL_MAX_S = 1.0
RELEASE_TIMEOUT_S = 600.0  # destroy, then verify it is gone: the provider takes its time
INTERRUPT_WATCH_S = 10.0


def _path(rental_id: str, action: str = "") -> str:
    return f"/v1/rentals/{quote(rental_id, safe='')}" + (f"/{action}" if action else "")


# --- offers, market ---------------------------------------------------------------------------


async def offers(client: ApiClient, params: dict[str, Any]) -> dict[str, Any]:
    """``{"query": its description, "offers": [offer JSON], "warnings": [...]}``."""
    found: dict[str, Any] = await client.get("/v1/offers", params)
    return found


async def market(client: ApiClient, params: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The market's JSON (as `market --json` prints it) and the warnings."""
    summary: dict[str, Any] = await client.get("/v1/market", params)
    warnings = summary.pop("warnings", [])
    return summary, list(warnings)


# --- rentals ----------------------------------------------------------------------------------


def ps_row(view: dict[str, Any]) -> dict[str, Any]:
    """The service's rental as a `ps --json` row."""
    ssh = view.get("ssh") or {}
    return {
        "rental_id": view["rental_id"],
        "provider": view["provider"],
        "instance_id": view["instance_id"],
        "state": view["state"],
        "gpu_name": view["gpu_name"],
        "num_gpus": view["num_gpus"],
        "price_per_hour": view["price_per_hour"],
        "cost_usd": round(float(view["cost_usd"]), 4),
        "created_at": view["created_at"],
        "deadline": view["deadline"],
        "ssh_host": ssh.get("host"),
        "ssh_port": ssh.get("port"),
        "label": None,  # the service does not show it
        "watchdog": None,  # nor whether the instance stops itself (the service reconciles)
    }


def up_summary(view: dict[str, Any]) -> dict[str, Any]:
    """The service's rental as `up --json` prints it."""
    ssh = view.get("ssh") or {}
    return {
        "rental_id": view["rental_id"],
        "provider": view["provider"],
        "instance_id": view["instance_id"],
        "state": view["state"],
        "gpu_name": view["gpu_name"],
        "num_gpus": view["num_gpus"],
        "price_per_hour": view["price_per_hour"],
        "ssh_host": ssh.get("host"),
        "ssh_port": ssh.get("port"),
        "ssh_user": ssh.get("user"),
        "label": None,
        "deadline": view["deadline"],
    }


async def rental(client: ApiClient, rental_id: str) -> dict[str, Any]:
    """One of the user's rentals; not theirs or not there: the usage error the local command
    gives for an unknown rental."""
    try:
        view: dict[str, Any] = await client.get(_path(rental_id))
    except NotFound:
        raise UsageError(f"no rental {rental_id!r} (see `gpushop ps --all`)") from None
    return view


async def rentals(client: ApiClient, *, include_ended: bool) -> list[dict[str, Any]]:
    """The user's rentals, newest first, as `ps --json` rows."""
    views = await client.get("/v1/rentals", {"ended": "true" if include_ended else None})
    return [ps_row(v) for v in views]


async def rent(
    client: ApiClient, body: dict[str, Any], *, wait: bool, progress: Notify
) -> dict[str, Any]:
    """Ask the service for a rental and follow it until it is ready (``wait``: else until it
    has an instance); its final view. A host that fails is replaced by the service with the
    next offer: followed. Cancelled (Ctrl-C): the rental is released before this returns."""
    # the same key on a retry after an unclear failure: the service answers with the first
    # request's rental, never a second one
    key = f"gpushop-cli-{uuid.uuid4().hex}"
    view: dict[str, Any] = await client.call(
        "POST",
        "/v1/rentals",
        json=body,
        headers={"Idempotency-Key": key},
        read_timeout=300.0,
        unclear_retry=True,
    )
    current = [view["rental_id"]]
    progress(
        f"renting {view['provider']}:{view['offer_id']}: {view['num_gpus']}x {view['gpu_name']} "
        f"at ${view['price_per_hour'] or 0:.3f}/h as {view['rental_id']} "
        f"(the service at {client.remote.server} provisions it)"
    )
    try:
        return await _follow(
            client,
            view,
            wait=wait,
            exact=body.get("offer") is not None,
            progress=progress,
            current=current,
        )
    except (asyncio.CancelledError, KeyboardInterrupt):
        await _release_interrupted(client, current[-1], progress)
        raise


async def _release_interrupted(client: ApiClient, rental_id: str, progress: Notify) -> None:
    """Release what an interrupted `up` was waiting for. The service takes a rental released
    while it provisions it for a failed host and may rent the next offer in its place: watched
    for a while, and released too."""
    while True:
        progress(f"interrupted: releasing {rental_id}")
        with contextlib.suppress(GpushopError):
            await client.call("POST", _path(rental_id, "release"), read_timeout=RELEASE_TIMEOUT_S)
        progress(
            f"watching {INTERRUPT_WATCH_S:g} s that the service rents nothing in its place "
            "(Ctrl-C again: stop watching)"
        )
        loop = asyncio.get_running_loop()
        until = loop.time() + INTERRUPT_WATCH_S
        replacement = None
        while replacement is None and loop.time() < until:
            await asyncio.sleep(0.5)
            with contextlib.suppress(GpushopError):
                replacement = (await client.get(_path(rental_id))).get("replaced_by")
        if replacement is None:
            return
        rental_id = replacement


async def _follow(
    client: ApiClient,
    view: dict[str, Any],
    *,
    wait: bool,
    exact: bool,
    progress: Notify,
    current: list[str],
) -> dict[str, Any]:
    shown = ""
    delay = 0.1
    ended_at: float | None = None
    loop = asyncio.get_running_loop()
    while True:
        state = view["state"]
        line = f"{view['rental_id']}: {state}"
        if view.get("instance_id"):
            line += f" ({view['provider']} instance {view['instance_id']})"
        if line != shown:
            progress(line + (f": {view['error']}" if view.get("error") else ""))
            shown = line
        if state == "ready" or (not wait and view.get("instance_id") and state not in ENDED):
            return view
        if view.get("replaced_by"):
            progress(
                f"{view['rental_id']} {state}; the next offer is rented as {view['replaced_by']}"
            )
            current.append(view["replaced_by"])
            ended_at = None
        elif state in ENDED:
            # the service may be renting the next offer: it names it here in a moment
            ended_at = ended_at if ended_at is not None else loop.time()
            if exact or loop.time() - ended_at > REPLACEMENT_GRACE_S:
                raise GpushopError(
                    f"{view['rental_id']} {state}: {view.get('error') or 'no reason given'}"
                )
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, POLL_MAX_S)
        view = await client.get(_path(current[-1]))


async def release(
    client: ApiClient, rental_ids: list[str], *, every_live: bool
) -> list[dict[str, str]]:
    """Release the named rentals (and ``every_live`` one of the user's), each as `down --json`
    shows it; every name is looked up before anything is released."""
    targets = [v["rental_id"] for v in await client.get("/v1/rentals")] if every_live else []
    for rental_id in rental_ids:
        await rental(client, rental_id)
    targets += rental_ids
    done = []
    for rental_id in targets:
        answer: dict[str, str] = await client.call(
            "POST", _path(rental_id, "release"), read_timeout=RELEASE_TIMEOUT_S
        )
        done.append(answer)
    return done


def openssh_argv(view: dict[str, Any], identity: str | None, command: list[str]) -> list[str]:
    """The OpenSSH command line (its binary first) that logs in to a service's rental with the
    user's own key: ``identity``, else whatever OpenSSH picks (the agent, ~/.ssh/id_*, the
    user's ssh config). The service does not show the host key: trusted at first contact, kept
    in a known-hosts file of its own."""
    ssh = view.get("ssh")
    if not ssh or not ssh.get("host") or not ssh.get("port"):
        raise UsageError(f"rental {view['rental_id']!r} has no SSH address (is it ready?)")
    binary = shutil.which("ssh")
    if binary is None:
        raise GpushopError("SSH to a service's rental needs the OpenSSH client (openssh-client)")
    with tempfile.NamedTemporaryFile("w", delete=False, prefix="gpushop-known-") as file:
        known = file.name
    argv = [binary, "-p", str(ssh["port"])]
    if identity:
        argv += ["-i", identity, "-o", "IdentitiesOnly=yes"]
    argv += [
        "-o",
        f"UserKnownHostsFile={known}",
        "-o",
        "StrictHostKeyChecking=accept-new",
        "--",
        f"{ssh.get('user') or 'root'}@{ssh['host']}",
    ]
    return argv + command


# --- costs ------------------------------------------------------------------------------------


async def costs(client: ApiClient, days: int | None) -> tuple[dict[str, Any], list[str]]:
    """The cost report (as `costs --json` prints it) and the warnings."""
    report: dict[str, Any] = await client.get("/v1/costs", {"days": days})
    warnings = report.pop("warnings", [])
    return report, list(warnings)
