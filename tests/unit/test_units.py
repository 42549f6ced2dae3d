import pytest

from gpushop.errors import UsageError
from gpushop.units import mb_to_gb, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("45", 45)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "1x", "-5", "0", "5m3"])
def test_bad_durations_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_duration(text)


def test_vram_units_follow_vast_cli() -> None:
    # 24564 MB is 24.6 GB and passes --min-vram 24 (DESIGN.md, Units)
    assert round(mb_to_gb(24564), 1) == 24.6
