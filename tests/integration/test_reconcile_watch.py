"""A TensorDock rental has no on-instance watchdog: only `gpushop reconcile` ends it at its max
duration. `up` and `ps` say so, and warn while no reconcile has watched TensorDock lately
(issue 10 §3e), against the emulator's TensorDock."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cli_run import cli
from gpushop.fleet.enforcement import RECONCILE_RECENT
from gpushop.store import Store

ONLY_RECONCILE = "only `gpushop reconcile` enforces the max duration"
NOT_WATCHED = "no `gpushop reconcile` has watched tensordock"


@pytest.fixture
def env(emulator: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    monkeypatch.setenv("VASTAI_URL", emulator.url)
    monkeypatch.setenv("VASTAI_API_KEY", emulator.api_key)
    monkeypatch.setenv("TENSORDOCK_URL", emulator.tensordock_url)
    monkeypatch.setenv("TENSORDOCK_API_TOKEN", emulator.tensordock_token)
    monkeypatch.setenv("GPUSHOP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GPUSHOP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GPUSHOP_DB_URL", f"sqlite:///{tmp_path / 'store.db'}")
    return emulator


def up_tensordock(capsys: Any) -> tuple[str, str, str]:
    code, out, err = cli(
        capsys, "up", "--provider", "tensordock", "--min-vram", "24", "--ready-timeout", "60s"
    )
    assert code == 0, err
    return out.split()[0], out, err


def test_up_and_ps_say_only_reconcile_bounds_a_tensordock_rental_and_warn_until_one_runs(
    env: Any, capsys: Any
) -> None:
    first, out, err = up_tensordock(capsys)
    assert ONLY_RECONCILE in out  # up's summary
    assert NOT_WATCHED in err and "has never run" in err

    code, out, err = cli(capsys, "ps")
    assert code == 0, err
    assert f"{first}: no on-instance watchdog" in out and ONLY_RECONCILE in out
    assert NOT_WATCHED in err
    code, out, _ = cli(capsys, "ps", "--json")
    assert [r["watchdog"] for r in json.loads(out)] == [False]

    # a dry run changes nothing, so it watches nothing
    assert cli(capsys, "reconcile", "--dry-run")[0] == 0
    assert NOT_WATCHED in cli(capsys, "ps")[2]

    code, _, err = cli(capsys, "reconcile")
    assert code == 0, err
    code, out, err = cli(capsys, "ps")
    assert ONLY_RECONCILE in out  # still true, but now someone watches
    assert NOT_WATCHED not in err

    second, out, err = up_tensordock(capsys)
    assert ONLY_RECONCILE in out
    assert NOT_WATCHED not in err
    assert cli(capsys, "down", first, second)[0] == 0


def test_a_reconcile_long_ago_no_longer_counts(env: Any, capsys: Any) -> None:
    with Store.open(os.environ["GPUSHOP_DB_URL"]) as store:
        store.record_reconcile("tensordock", datetime.now(UTC) - RECONCILE_RECENT * 3)
        store.record_reconcile("vastai", datetime.now(UTC))  # another provider's does not count
    rental, _, err = up_tensordock(capsys)
    assert NOT_WATCHED in err and "last ran 30m ago" in err
    assert cli(capsys, "down", rental)[0] == 0


def test_the_last_reconcile_is_kept_per_provider_on_postgresql(pg_url: str) -> None:
    at = datetime(2026, 12, 4, 18, 0, tzinfo=UTC)
    with Store.open(pg_url) as store:
        assert store.last_reconcile("tensordock") is None
        store.record_reconcile("tensordock", at)
        store.record_reconcile("tensordock", at + timedelta(minutes=1))
        assert store.last_reconcile("tensordock") == at + timedelta(minutes=1)
        assert store.last_reconcile("vastai") is None
