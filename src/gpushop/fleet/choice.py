"""Which offer to rent: the best, but spread among near-equal ones so that concurrent ``up``s do
not all buy the same offer (anchors, pain point 4)."""

from __future__ import annotations

import random
from collections.abc import Sequence

from gpushop.market import ranking
from gpushop.models import Offer

NEAR_EQUAL = 0.03  # value within 3 % of the best counts as equally good


def near_equal_top(ranked: Sequence[Offer], tolerance: float = NEAR_EQUAL) -> list[Offer]:
    if not ranked:
        return []
    best = ranking.value_price(ranked[0])
    return [o for o in ranked if ranking.value_price(o) <= best * (1 + tolerance)]


def order_of_attempts(
    ranked: Sequence[Offer], rng: random.Random | None = None, tolerance: float = NEAR_EQUAL
) -> list[Offer]:
    """All offers in the order to try them: the near-equal top shuffled, then the rest ranked."""
    rng = rng or random.Random()
    top = near_equal_top(ranked, tolerance)
    rng.shuffle(top)
    chosen = {o.id for o in top}
    return top + [o for o in ranked if o.id not in chosen]
