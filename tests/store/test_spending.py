"""Budgets and quotas are checked in the transaction that writes the rental they allow: of
concurrent rentals a limit allows N of, exactly N are written (each claimant its own Store, as
separate processes or hosts would be), on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from gpushop.errors import MoneyLimitError
from gpushop.models import RentalState
from gpushop.store import SpendingLimits, Store, UserQuotaExceeded


def rent(store: Store, limits: SpendingLimits, offer: int, price: float = 0.5) -> str:
    return store.new_rental(
        provider="vastai",
        max_duration_s=3600,
        owner_host="h",
        owner_pid=1,
        offer_id=str(offer),
        price_per_hour=price,
        user_id=limits.user_id,
        exclusive=True,
        limits=limits,
    ).id


def race(store_url: str, limits: SpendingLimits, n: int = 20) -> tuple[list[str], list[str]]:
    stores = [Store.open(store_url) for _ in range(n)]
    barrier = threading.Barrier(n)
    won: list[str] = []
    refused: list[str] = []
    failed: list[BaseException] = []

    def one(i: int, store: Store) -> None:
        barrier.wait()
        try:
            won.append(rent(store, limits, 9000 + i))
        except MoneyLimitError as exc:
            refused.append(str(exc))
        except BaseException as exc:  # a thread's error would otherwise vanish
            failed.append(exc)

    threads = [threading.Thread(target=one, args=(i, s)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for s in stores:
        s.close()
    assert not failed, failed
    return won, refused


def test_twenty_concurrent_rentals_against_a_quota_of_three(store_url: str) -> None:
    limits = SpendingLimits(hours=1.0, user_id="u1", user_name="bob", max_rentals=3)
    won, refused = race(store_url, limits)
    assert len(won) == 3 and len(refused) == 17
    assert all("bob's quota: 3 concurrent rentals at most" in r for r in refused)


def test_the_account_budget_holds_over_concurrent_rentals(store_url: str) -> None:
    # $0.50/h for 1 h each: a $2 budget allows four
    won, refused = race(store_url, SpendingLimits(hours=1.0, account_budget_usd=2.0))
    assert len(won) == 4 and all("GPUSHOP_BUDGET_USD=2" in r for r in refused)


def test_a_users_rate_and_monthly_budget_and_ended_rentals_free_the_quota(
    store: Store, clock: Any
) -> None:
    rate = SpendingLimits(hours=1.0, user_id="u2", user_name="eve", max_usd_per_hour=1.0)
    first = rent(store, rate, 1, price=0.6)
    with pytest.raises(UserQuotaExceeded, match=r"\$1/h at most"):
        rent(store, rate, 2, price=0.6)
    store.transition(first, RentalState.FAILED, "create refused")
    assert rent(store, rate, 3, price=0.6)  # an ended rental counts no more
    other = SpendingLimits(hours=1.0, user_id="u3", max_usd_per_hour=1.0)
    assert rent(store, other, 4, price=0.9)  # another user's quota is their own
    monthly = SpendingLimits(hours=10.0, user_id="u4", user_name="zoe", monthly_budget_usd=4.0)
    with pytest.raises(UserQuotaExceeded, match=r"\$4 a month at most"):
        rent(store, monthly, 5, price=0.5)  # 10 h x $0.50 = $5 > $4


def test_a_budget_warns_once_at_80_percent_and_tells_when_it_refuses(store: Store) -> None:
    account = SpendingLimits(hours=1.0, account_budget_usd=2.0)  # $0.50 each: four fit
    for offer in range(3):
        rent(store, account, 100 + offer)  # 25, 50, 75 %
    assert store.feed.after(types=["budget.warning"]) == []
    rent(store, account, 103)  # 100 %: warned
    with pytest.raises(MoneyLimitError):
        rent(store, account, 104)
    warned = store.feed.after(types=["budget.warning"])
    exceeded = store.feed.after(types=["budget.exceeded"])
    assert [(e.subject, e.data["share"]) for e in warned] == [("budget:account", 1.0)]
    assert [e.subject for e in exceeded] == ["budget:account"]
    assert "GPUSHOP_BUDGET_USD=2" in exceeded[0].reason
    mine = SpendingLimits(hours=1.0, user_id="u9", user_name="ivy", monthly_budget_usd=1.0)
    rent(store, mine, 200)  # 50 %
    rent(store, mine, 201)  # 100 %
    with pytest.raises(UserQuotaExceeded):
        rent(store, mine, 202)
    theirs = store.feed.after(types=["budget.warning", "budget.exceeded"], user_id="u9")
    assert [(e.type, e.subject) for e in theirs] == [
        ("budget.warning", "budget:user:u9"),
        ("budget.exceeded", "budget:user:u9"),
    ]
