"""Short offer ids end to end: `gpushop offers` and `market` tables show a short id (a unique
prefix among the current offers), `--offer` takes it, JSON keeps the whole id."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from cli_run import cli


def table_ids(out: str) -> list[str]:
    """The `offer` column of an offers table, top to bottom."""
    return re.findall(r"^│\s*\d+\s*│\s*(\S+)\s*│", out, flags=re.MULTILINE)


def whole_market(url: str, **filters: Any) -> Any:
    """Every rentable on-demand offer: ids, or with filters the offers themselves."""
    body = {"rentable": {"eq": True}, "limit": 20000, "type": "on-demand", **filters}
    offers = httpx.post(f"{url}/api/v0/bundles/", json=body, timeout=30).json()["offers"]
    return offers if filters else [str(o["id"]) for o in offers]


def test_tables_show_short_unique_prefixes_and_json_keeps_the_whole_id(
    env: Any, capsys: Any
) -> None:
    code, out, err = cli(capsys, "offers", "--limit", "10", "--json")
    assert code == 0, err
    full = [o["id"] for o in json.loads(out)]
    assert all(re.fullmatch(r"vastai:\d+", i) for i in full)  # JSON: the whole id
    code, out, err = cli(capsys, "offers", "--limit", "10")
    assert code == 0, err
    shown = table_ids(out)
    assert len(shown) == len(full) == 10
    market = whole_market(env.url)
    for short, whole in zip(shown, full, strict=True):
        local = whole.removeprefix("vastai:")
        assert local.startswith(short) and 4 <= len(short) < len(whole), (short, whole)
        # unique among every offer on the market, not only the ten shown
        assert [m for m in market if m.startswith(short)] == [local], short


def test_up_with_a_short_id_from_the_table_rents_exactly_that_offer(env: Any, capsys: Any) -> None:
    code, out, _ = cli(capsys, "offers", "--gpu", "4090", "--limit", "3")
    assert code == 0
    short = table_ids(out)[2]
    code, out, err = cli(capsys, "up", "--offer", short, "--no-wait", "--json")
    assert code == 0, err
    [instance] = env.control.state()["instances"]
    assert str(instance["offer_id"]).startswith(short)
    assert f"renting vastai:{instance['offer_id']}" in err  # the whole id, said once
    assert cli(capsys, "down", json.loads(out)["rental_id"])[0] == 0


def test_any_unique_prefix_works_without_a_table(env: Any, capsys: Any) -> None:
    """No table was shown (JSON only): a prefix is resolved against the current offers."""
    market = whole_market(env.url)
    code, out, _ = cli(capsys, "offers", "--sort", "price", "--limit", "30", "--json")
    target = json.loads(out)[-1]["offer_id"]
    prefix = next(
        target[:n]
        for n in range(4, 9)
        if [m for m in market if m.startswith(target[:n])] == [target]
    )
    code, out, err = cli(capsys, "up", "--offer", prefix, "--no-wait", "--json")
    assert code == 0, err
    [instance] = env.control.state()["instances"]
    assert str(instance["offer_id"]) == target
    assert cli(capsys, "down", json.loads(out)["rental_id"])[0] == 0


def test_an_ambiguous_prefix_is_one_line_and_exit_2(env: Any, capsys: Any) -> None:
    market = whole_market(env.url)
    prefix = market[0][:4]
    matches = sorted(f"vastai:{m}" for m in market if m.startswith(prefix))
    assert len(matches) > 1
    code, _, err = cli(capsys, "up", "--offer", prefix, "--min-reliability", "0")
    assert code == 2
    assert err.splitlines() == [
        f"gpushop: error: offer {prefix} is ambiguous: it matches {', '.join(matches[:3])}"
        f"{f' and {len(matches) - 3} more' if len(matches) > 3 else ''}; give more of the id"
    ]
    assert env.control.state()["instances"] == []


@pytest.mark.parametrize(
    ("offer", "code"), [("99999999999", 6), ("vastai:1", 6), (" ", 2), ("", 2)]
)
def test_an_unknown_or_empty_offer_rents_nothing(
    env: Any, capsys: Any, offer: str, code: int
) -> None:
    got, _, err = cli(capsys, "up", "--offer", offer)
    assert got == code and len(err.splitlines()) == 1 and err.startswith("gpushop: error: ")
    assert env.control.state()["instances"] == []


def test_a_shown_offer_that_is_gone_is_never_swapped_for_another(env: Any, capsys: Any) -> None:
    """The short id of a table means the offer shown: once someone else rents it, `--offer`
    says so (exit 6), even when the prefix now names one other offer."""
    code, out, _ = cli(capsys, "offers", "--limit", "1", "--sort", "price")
    short = table_ids(out)[0]
    full = json.loads(cli(capsys, "offers", "--limit", "1", "--sort", "price", "--json")[1])[0]
    someone = httpx.Client(
        base_url=env.url, headers={"Authorization": f"Bearer {env.api_key}"}, timeout=10
    )
    with someone:
        taken = someone.put(f"/api/v0/asks/{full['offer_id']}/", json={"image": "ubuntu"})
        assert taken.status_code == 200, taken.text
    code, _, err = cli(capsys, "up", "--offer", short)
    assert code == 6
    assert err.splitlines() == [
        f"gpushop: error: offer {full['id']} is not available or does not fit"
    ]
    assert len(env.control.state()["instances"]) == 1  # only the other renter's


def test_a_dear_offer_shown_for_its_model_is_rented_without_repeating_the_filters(
    env: Any, capsys: Any
) -> None:
    """`offers --gpu H100` shows an offer far from the cheapest of the market; `up --offer
    SHORT` (no --gpu) finds it all the same."""
    code, out, _ = cli(capsys, "offers", "--gpu", "H100", "--limit", "1")
    assert code == 0
    short = table_ids(out)[0]
    by_price = sorted(
        whole_market(env.url, verified={"eq": True}, reliability2={"gte": 0.98}),
        key=lambda o: o["dph_total"],
    )
    [target] = [str(o["id"]) for o in by_price if str(o["id"]).startswith(short)]
    assert target not in [str(o["id"]) for o in by_price[:250]]  # past any first search
    code, out, err = cli(capsys, "up", "--offer", short, "--no-wait", "--json")
    assert code == 0, err
    [instance] = env.control.state()["instances"]
    assert str(instance["offer_id"]) == target
    assert cli(capsys, "down", json.loads(out)["rental_id"])[0] == 0
