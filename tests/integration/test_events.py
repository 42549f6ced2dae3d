"""Events: every rental and job state change a team hears of, written with the change, read in
order from a cursor (`gpushop events`, GET /v1/events)."""

from __future__ import annotations

import json
from typing import Any

from cli_run import cli
from waiting import until


def events(capsys: Any, *argv: str) -> list[dict[str, Any]]:
    code, out, err = cli(capsys, "events", "--json", *argv)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def test_a_rental_and_a_job_tell_what_happened_in_order(env: Any, capsys: Any) -> None:
    code, out, err = cli(capsys, "up", "--min-vram", "24", "--ready-timeout", "20s", "--json")
    assert code == 0, err
    rental = json.loads(out)["rental_id"]
    assert cli(capsys, "down", rental)[0] == 0
    told = events(capsys, "--subject", f"rental:{rental}")
    assert [e["type"] for e in told] == ["rental.ready", "rental.released"]
    assert told[0]["id"] < told[1]["id"] and told[0]["data"]["rental_id"] == rental
    assert all(":" in e["actor"] for e in told)  # host:pid of the process that changed it
    code, _, err = cli(capsys, "run", "--min-vram", "24", "--cmd", "exit 3")
    assert code == 1, err
    kinds = [e["type"] for e in events(capsys) if e["subject"].startswith("job:")]
    assert kinds == ["job.started", "job.failed"]
    only = events(capsys, "--type", "rental.released")
    assert {e["type"] for e in only} == {"rental.released"} and len(only) == 2


def test_an_overdue_rental_released_by_reconcile_is_rental_expired(env: Any, capsys: Any) -> None:
    code, out, err = cli(
        capsys,
        "up",
        "--min-vram",
        "24",
        "--max-duration",
        "1s",
        "--watchdog-grace",
        "off",
        "--json",
    )
    assert code == 0, err
    rental = json.loads(out)["rental_id"]

    def expired() -> bool:  # reconcile releases it once its max duration has passed
        code, out, err = cli(capsys, "reconcile", "--json")
        assert code == 0, err
        return "expired" in [a["kind"] for a in json.loads(out)["actions"]]

    until(expired, "reconcile to release the overdue rental")
    told = [e["type"] for e in events(capsys, "--subject", f"rental:{rental}")]
    assert told == ["rental.ready", "rental.expired"]
