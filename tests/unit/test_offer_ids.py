"""Short offer ids (offer_ids.py): what tables show and what `--offer` accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpushop import offer_ids
from gpushop.errors import NoMatchError, UsageError

VAST = ["vastai:21262447", "vastai:21262448", "vastai:21300000", "vastai:19000001"]
TD = ["tensordock:0f3a9c1e-77aa:geforcertx4090-pcie-24gb:1", "tensordock:0f3a9c1e-77aa:h100:2"]


def test_a_short_id_is_the_shortest_unique_prefix_of_at_least_four_characters() -> None:
    short = offer_ids.short_ids(VAST, VAST)
    assert short == {
        "vastai:21262447": "21262447",  # its neighbour shares 7 digits
        "vastai:21262448": "21262448",
        "vastai:21300000": "2130",
        "vastai:19000001": "1900",
    }
    for full, s in short.items():
        assert offer_ids.resolve(s, VAST) == full


def test_short_ids_are_unique_among_every_current_offer_not_only_those_shown() -> None:
    market = [*VAST, "vastai:21309999"]
    assert offer_ids.short_ids(["vastai:21300000"], market) == {"vastai:21300000": "21300"}


def test_several_providers_keep_the_provider_in_front() -> None:
    everything = VAST + TD
    short = offer_ids.short_ids(everything, everything)
    assert short["vastai:21300000"] == "vastai:2130"
    assert short[TD[0]] == "tensordock:0f3a9c1e-77aa:g"  # the same hostnode: up to the GPU
    assert short[TD[1]] == "tensordock:0f3a9c1e-77aa:h"
    for full, s in short.items():
        assert offer_ids.resolve(s, everything) == full


def test_resolve_takes_full_ids_provider_ids_and_unique_prefixes() -> None:
    assert offer_ids.resolve("vastai:21262447", VAST) == "vastai:21262447"
    assert offer_ids.resolve(" 19000001 ", VAST) == "vastai:19000001"
    assert offer_ids.resolve("190", VAST) == "vastai:19000001"  # any unique prefix will do
    assert offer_ids.resolve("vastai:213", VAST) == "vastai:21300000"


def test_an_ambiguous_prefix_is_bad_input_and_names_the_candidates() -> None:
    with pytest.raises(UsageError) as err:
        offer_ids.resolve("2126", VAST)
    assert str(err.value) == (
        "offer 2126 is ambiguous: it matches vastai:21262447, vastai:21262448; give more of the id"
    )
    assert err.value.exit_code == 2


def test_an_unknown_or_empty_offer() -> None:
    with pytest.raises(NoMatchError) as err:
        offer_ids.resolve("31415", VAST)
    assert err.value.exit_code == 6 and "31415" in str(err.value)
    with pytest.raises(UsageError):
        offer_ids.resolve("  ", VAST)


def test_what_a_table_showed_is_remembered_for_a_day(tmp_path: Path) -> None:
    offer_ids.remember(tmp_path, {"vastai:21300000": "2130"}, now=1000.0)
    assert offer_ids.recall(tmp_path, "2130", now=1000.0 + 3600) == "vastai:21300000"
    assert offer_ids.recall(tmp_path, "2130", now=1000.0 + 25 * 3600) is None
    assert offer_ids.recall(tmp_path, "9999", now=1000.0) is None
    (tmp_path / offer_ids.SHOWN_FILE).write_text("not json")
    assert offer_ids.recall(tmp_path, "2130") is None  # a damaged file is no memory
