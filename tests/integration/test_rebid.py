"""`--rebid`: an outbid interruptible rental bids what wins now (the offer's current min_bid plus
the create path's margin) up to the cap, instead of being released; above the cap it is released
as before and no bid is sent. Against the emulator over HTTP; outbids are its own faults."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from cli_run import cli
from gpushop.errors import NotFound, Unsupported
from gpushop.providers.tensordock.provider import TensorDockProvider
from gpushop.providers.vastai.provider import VastAIProvider
from gpushop.store import Store

BID = "PUT /api/v0/instances/bid_price/{id}/"


@pytest.fixture
def env(emulator: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    monkeypatch.setenv("VASTAI_URL", emulator.url)
    monkeypatch.setenv("VASTAI_API_KEY", emulator.api_key)
    monkeypatch.setenv("GPUSHOP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GPUSHOP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GPUSHOP_DB_URL", f"sqlite:///{tmp_path / 'store.db'}")
    monkeypatch.delenv("VASTAI_MAX_BID_PER_HOUR", raising=False)
    monkeypatch.delenv("GPUSHOP_BUDGET_USD", raising=False)
    monkeypatch.chdir(tmp_path)
    return emulator


def an_offer(capsys: Any) -> dict[str, Any]:
    code, out, err = cli(capsys, "offers", "--interruptible", "--min-vram", "24", "--json")
    assert code == 0, err
    return dict(json.loads(out)[0])


def up(capsys: Any, offer: dict[str, Any], *extra: str) -> dict[str, Any]:
    code, out, err = cli(
        capsys,
        "up",
        "--interruptible",
        "--offer",
        offer["id"],
        "--min-vram",
        "24",
        "--ready-timeout",
        "20s",
        "--json",
        *extra,
    )
    assert code == 0, err
    return dict(json.loads(out))


def bids_sent(emu: Any) -> list[float]:
    return [float(r["json"]["price"]) for r in emu.control.requests() if r["endpoint"] == BID]


def rental_row(rental_id: str) -> Any:
    with Store.open(os.environ["GPUSHOP_DB_URL"]) as s:
        return s.get(rental_id)


def winning(offer: dict[str, Any]) -> float:
    return round(offer["min_bid"] * 1.05 + 0.0005, 4)


def test_an_outbid_rental_with_rebid_bids_again_and_runs_again(env: Any, capsys: Any) -> None:
    offer = an_offer(capsys)
    high = round(offer["min_bid"] * 1.4, 4)  # a generous first bid: the re-bid is what wins now
    rental = up(capsys, offer, "--bid", str(high), "--rebid")
    assert rental["price_per_hour"] == pytest.approx(
        high + offer["storage_price_per_hour"], abs=1e-3
    )
    iid = int(rental["instance_id"])
    env.control.outbid(instance_id=iid)
    code, out, err = cli(capsys, "reconcile")
    assert code == 0, err
    new_price = winning(offer) + offer["storage_price_per_hour"]
    assert "was outbid: bid raised to $" in out
    assert bids_sent(env) == [pytest.approx(winning(offer), abs=1e-3)]
    row = rental_row(rental["rental_id"])
    assert str(row.state) == "ready" and row.price_per_hour == pytest.approx(new_price, abs=1e-3)
    shown_inst = env.control.instance(iid)
    assert shown_inst["actual_status"] == "running" and shown_inst["billing"]["gpu_rate"] == (
        pytest.approx(winning(offer), abs=1e-3)
    )
    # it really runs again: SSH answers on it
    code, out, err = cli(capsys, "ssh", rental["rental_id"], "--", "echo", "back")
    assert code == 0 and "back" in out, err
    code, out, _ = cli(capsys, "ps", "--json")
    [shown] = json.loads(out)
    assert shown["price_per_hour"] == pytest.approx(new_price, abs=1e-3)
    cli(capsys, "down", rental["rental_id"])


def test_a_winning_bid_above_the_cap_is_refused_and_the_rental_released(
    env: Any, capsys: Any
) -> None:
    offer = an_offer(capsys)
    # a cap the first bid fits under (clamped to it) but what wins now (+5 %) does not
    cap = round(offer["min_bid"] * 1.02 + offer["storage_price_per_hour"], 4)
    rental = up(capsys, offer, "--max-price", str(cap), "--rebid")
    assert rental["price_per_hour"] <= cap + 1e-6
    env.control.outbid(instance_id=int(rental["instance_id"]))
    code, out, err = cli(capsys, "reconcile")
    assert code == 0, err
    assert "not re-bid" in out and "above the max price" in out and "released" in out
    assert bids_sent(env) == []  # nothing above the cap was ever sent
    assert str(rental_row(rental["rental_id"]).state) == "released"
    assert env.control.state()["instances"] == []


def test_the_cap_from_the_environment_holds_too(
    env: Any, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    offer = an_offer(capsys)
    cap = round(offer["min_bid"] * 1.02 + offer["storage_price_per_hour"], 4)
    monkeypatch.setenv("VASTAI_MAX_BID_PER_HOUR", str(cap))
    rental = up(capsys, offer, "--rebid")
    env.control.outbid(instance_id=int(rental["instance_id"]))
    code, out, _ = cli(capsys, "reconcile", "--json")
    [action] = json.loads(out)["actions"]
    assert code == 0 and action["kind"] == "outbid" and "not re-bid" in action["result"]
    assert all(b + offer["storage_price_per_hour"] <= cap for b in bids_sent(env))
    assert str(rental_row(rental["rental_id"]).state) == "released"


def test_outbid_while_starting_is_rebid_by_up(env: Any, capsys: Any) -> None:
    offer = an_offer(capsys)
    env.control.outbid(offer_id=int(offer["id"].split(":")[1]), after_s=0.5)
    rental = up(capsys, offer, "--rebid")
    assert rental["state"] == "ready"
    assert bids_sent(env) == [pytest.approx(winning(offer), abs=1e-3)]
    with Store.open(os.environ["GPUSHOP_DB_URL"]) as s:
        reasons = [e.reason for e in s.events(rental["rental_id"])]
    assert any(r.startswith("re-bid") for r in reasons), reasons
    cli(capsys, "down", rental["rental_id"])


def test_rebid_needs_interruptible(env: Any, capsys: Any) -> None:
    code, _, err = cli(capsys, "up", "--rebid")
    assert code == 2 and "--rebid needs --interruptible" in err
    code, _, err = cli(capsys, "run", "--rebid", "--cmd", "true")
    assert code == 2 and "--rebid needs --interruptible" in err
    assert env.control.state()["instances"] == []


async def test_the_adapter_maps_bid_errors_and_tensordock_has_none(env: Any) -> None:
    provider = VastAIProvider(url=env.url, api_key=env.api_key, rate_limit=False)
    try:
        with pytest.raises(NotFound, match="does not exist"):
            await provider.change_bid("31415926", 0.2)  # 404 no_such_instance
    finally:
        await provider.aclose()
    td = TensorDockProvider(url=env.url + "/tensordock/api/v2", api_token="x", rate_limit=False)
    try:
        with pytest.raises(Unsupported, match="no bids") as refused:
            await td.change_bid("vm", 0.2)
        assert refused.value.exit_code == 2
    finally:
        await td.aclose()


def test_a_job_whose_rental_is_outbid_is_rebid_and_runs_again_on_it(
    env: Any, capsys: Any, tmp_path: Path
) -> None:
    import threading

    db_url = os.environ["GPUSHOP_DB_URL"]  # read now: the thread may outlive monkeypatch
    data_dir = Path(os.environ["GPUSHOP_DATA_DIR"])
    done = threading.Event()
    outbid_iid: list[int] = []

    def outbid_mid_run() -> None:
        while not done.wait(0.05):
            with Store.open(db_url) as s:
                jobs = s.list_jobs()
                rental = s.get(jobs[0].rental_id or "") if jobs else None
            log = data_dir / "jobs" / jobs[0].id / "job.log" if jobs else None
            if log is not None and log.exists() and "first run" in log.read_text(errors="replace"):
                assert rental is not None and rental.instance_id
                outbid_iid.append(int(rental.instance_id))
                env.control.outbid(instance_id=outbid_iid[0])
                return

    offer = an_offer(capsys)
    thread = threading.Thread(target=outbid_mid_run, daemon=True)
    thread.start()
    try:
        code, out, err = cli(
            capsys,
            "run",
            "--interruptible",
            "--rebid",
            "--offer",
            offer["id"],
            "--resume-on-loss",
            "0",
            "--cmd",
            "if [ -e ran ]; then echo second run; exit 0; fi; touch ran; echo first run; sleep 600",
        )
    finally:
        done.set()
        thread.join()
    assert code == 0, err
    assert "was outbid: bid raised to $" in err
    assert "first run" in out and "second run" in out
    assert bids_sent(env) == [pytest.approx(winning(offer), abs=1e-3)]
    # one rental all along, now released, billed at the new price after the re-bid
    with Store.open(db_url) as s:
        [rental] = s.list()
    assert rental.instance_id == str(outbid_iid[0]) and str(rental.state) == "released"
    assert rental.price_per_hour == pytest.approx(
        winning(offer) + offer["storage_price_per_hour"], abs=1e-3
    )
    assert env.control.state()["instances"] == []


def test_a_job_whose_winning_bid_is_above_the_cap_is_released_as_before(
    env: Any, capsys: Any
) -> None:
    import threading

    db_url = os.environ["GPUSHOP_DB_URL"]
    data_dir = Path(os.environ["GPUSHOP_DATA_DIR"])
    done = threading.Event()

    def outbid_mid_run() -> None:
        while not done.wait(0.05):
            with Store.open(db_url) as s:
                jobs = s.list_jobs()
                rental = s.get(jobs[0].rental_id or "") if jobs else None
            log = data_dir / "jobs" / jobs[0].id / "job.log" if jobs else None
            if log is not None and log.exists() and "first run" in log.read_text(errors="replace"):
                assert rental is not None and rental.instance_id
                env.control.outbid(instance_id=int(rental.instance_id))
                return

    offer = an_offer(capsys)
    cap = round(offer["min_bid"] * 1.02 + offer["storage_price_per_hour"], 4)
    thread = threading.Thread(target=outbid_mid_run, daemon=True)
    thread.start()
    try:
        code, _, err = cli(
            capsys,
            "run",
            "--interruptible",
            "--rebid",
            "--offer",
            offer["id"],
            "--max-price",
            str(cap),
            "--resume-on-loss",
            "0",
            "--cmd",
            "echo first run; sleep 600",
        )
    finally:
        done.set()
        thread.join()
    assert code == 1
    assert "not re-bid" in err and "above the max price" in err and "released" in err
    assert bids_sent(env) == []
    assert env.control.state()["instances"] == []
