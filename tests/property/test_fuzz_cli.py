"""Random arguments to `offers`, `up` and `run` never print a traceback.

The CLI runs in-process (`gpushop.cli.app.main`) against the shared emulator. Every answer is
exit 0, 2 (bad input) or another documented code (README "Exit codes"), with errors on one line;
and nothing is ever rented: GPUSHOP_BUDGET_USD=0 refuses every rental (exit 5), and the emulator
has no instance afterwards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fuzzing import examples
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from gpushop.cli.app import main

DOCUMENTED = {0, 1, 2, 3, 4, 5, 6, 130}

junk_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12
)
junk_numbers = st.one_of(
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["-1", "1e309", "nan", "inf", "-inf", "0x10", "1_000", "", " ", "½", "1,5"]),
    junk_text,
)


def _sample(*values: str) -> st.SearchStrategy[str]:
    return st.sampled_from(values)


# Each option: (values that make sense, junk). A quarter of the values drawn are junk, so most
# examples get past the parser and reach the search, the money checks and the provider.
OFFER_OPTIONS: dict[str, tuple[Any, Any] | None] = {
    "--gpu": (_sample("4090", "RTX 4090", "rtx4090", "A100", "A100 SXM4", "H100,3090"), junk_text),
    "-g": (_sample("3090", "A6000", "4090,", "RTX 4090 D", "L40S"), _sample(",", " ", "🙂")),
    "--min-vram": (_sample("0", "8", "24", "24.5", "80", "141", "1000"), junk_numbers),
    "--num-gpus": (_sample("1", "2", "4", "8", "0", "16"), junk_numbers),
    "--max-price": (_sample("0.01", "0.3", "1", "2.5", "100"), junk_numbers),
    "--min-reliability": (_sample("0", "0.5", "0.9", "0.98", "0.999", "1"), junk_numbers),
    "--disk": (_sample("1", "10", "32", "64", "500", "5000"), junk_numbers),
    "--min-cuda": (_sample("11.8", "12", "12.4", "13.0", "99"), junk_numbers),
    "--country": (_sample("US", "US,CA", "de", "FR", "JP,KR"), _sample("", ",", "USA", "ZZ")),
    "--interruptible": None,
    "--include-unverified": None,
    "--sort": (_sample("price", "value", "reliability", "perf"), junk_text),
    "--provider": (_sample("vastai", "all", "vastai"), _sample("tensordock", "runpod", "", "X")),
    "--json": None,
}
OFFERS_OPTIONS = {**OFFER_OPTIONS, "--limit": (_sample("1", "3", "10", "1000"), junk_numbers)}
durations = (_sample("90s", "30m", "2h", "1h30m", "4h"), _sample("0s", "-5m", "1d", "1x", "h"))
RENT_OPTIONS = {
    **OFFER_OPTIONS,
    "--offer": (
        _sample("vastai:1", "vastai:21262447", "tensordock:x:y:1", "1"),
        _sample("vastai:", ":", "vastai:abc", "runpod:1", "", "vastai:" + "9" * 30),
    ),
    "--image": (_sample("pytorch/pytorch", "ostris/aitoolkit", "ubuntu:22.04"), junk_text),
    "--template": (_sample("abc123"), junk_text),
    "--env": (_sample("A=1", "WANDB_MODE=offline", "A="), _sample("=1", " =x", "A", "")),
    "--max-duration": durations,
    "--attempts": (_sample("1", "3", "20"), junk_numbers),
}
UP_OPTIONS = {
    **RENT_OPTIONS,
    "--port": (_sample("8080", "22", "65535"), junk_numbers),
    "--onstart": (_sample("echo hi", "true"), junk_text),
    "--bid": (_sample("0.1", "0.5", "2"), junk_numbers),
    "--keep-interrupted": None,
    "--watchdog-grace": (_sample("10m", "off", "1h"), durations[1]),
    "--ready-timeout": durations,
    "--no-wait": None,
}
RUN_OPTIONS = {  # never --detach: it would start a background `gpushop attach`
    **RENT_OPTIONS,
    "--upload": (_sample("./data", "./data:/workspace/d", "data"), _sample(":", "/nope", "")),
    "--download": (_sample("/workspace/out:./out", "out"), _sample(":", "", "/")),
    "--workdir": (_sample("/workspace", "/app"), _sample("", "relative", " ")),
    "--timeout": durations,
    "--sync-every": (_sample("10m", "off", "30s"), durations[1]),
    "--resume-on-loss": (_sample("0", "1", "10"), junk_numbers),
}


@st.composite
def argv(draw: st.DrawFn, command: str, options: dict[str, Any]) -> list[str]:
    """The command, then random options (each with a value when it takes one: junk a quarter
    of the time), and now and then a stray word or an option nobody knows."""
    args = [command]
    if command == "run":
        args += ["--cmd", draw(st.one_of(_sample("python train.py", "true"), _sample("", " ")))]
    for _ in range(draw(st.integers(0, 6))):
        name = draw(st.sampled_from(sorted(options)))
        args.append(name)
        if options[name] is not None:
            good, bad = options[name]
            args.append(draw(bad if draw(st.integers(0, 3)) == 0 else good))
    if draw(st.integers(0, 5)) == 0:
        stray = draw(st.one_of(_sample("--nope", "-x", "--", "--json=1", "--cmd"), junk_text))
        if not stray.startswith("-d") and stray.lstrip("-")[:1] != "d":
            args.insert(draw(st.integers(1, len(args))), stray)
    return args


@pytest.fixture
def shop_env(emulator: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    monkeypatch.setenv("VASTAI_URL", emulator.url)
    monkeypatch.setenv("VASTAI_API_KEY", emulator.api_key)
    monkeypatch.setenv("GPUSHOP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GPUSHOP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GPUSHOP_DB_URL", f"sqlite:///{tmp_path / 'store.db'}")
    monkeypatch.setenv("GPUSHOP_BUDGET_USD", "0")  # every rental is refused: nothing is rented
    monkeypatch.chdir(tmp_path)  # relative --upload/--download paths land here
    (tmp_path / "data").mkdir(exist_ok=True)
    return emulator


def _check(
    capsys: pytest.CaptureFixture[str], emulator: Any, args: list[str], *, record: bool = True
) -> int:
    try:
        code = main(args)
    except BaseException as exc:  # what a user would see as a traceback
        raise AssertionError(f"{args!r} raised {type(exc).__name__}: {exc}") from exc
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, (args, err[-2000:])
    assert code in DOCUMENTED, (args, code, err[-500:])
    if code != 0:
        errors = [line for line in err.splitlines() if line.startswith("gpushop: error:")]
        assert len(errors) <= 1, (args, err)
    assert emulator.control.state()["instances"] == [], args
    if record:
        event(f"exit {code}")  # pytest --hypothesis-show-statistics: how deep the examples go
    return code


@settings(max_examples=examples(30))
@given(args=argv("offers", OFFERS_OPTIONS))
# found by make fuzz: 1e309 is inf, which the provider's JSON refused with a traceback
@example(args=["offers", "--disk", "1e309"])
@example(args=["offers", "--max-price", "inf"])
@example(args=["offers", "--min-vram", "1e999", "--min-cuda", "-inf"])
def test_random_offers_arguments(shop_env: Any, capsys: Any, args: list[str]) -> None:
    _check(capsys, shop_env, args)


@settings(max_examples=examples(20))
@given(args=argv("up", UP_OPTIONS))
def test_random_up_arguments_never_rent(shop_env: Any, capsys: Any, args: list[str]) -> None:
    assert _check(capsys, shop_env, args) != 0  # it never rents, so it never succeeds


@settings(max_examples=examples(20))
@given(args=argv("run", RUN_OPTIONS))
def test_random_run_arguments_never_rent(shop_env: Any, capsys: Any, args: list[str]) -> None:
    assert _check(capsys, shop_env, args) != 0


def test_a_plain_up_is_refused_by_the_zero_budget(shop_env: Any, capsys: Any) -> None:
    """The premise of the tests above: with GPUSHOP_BUDGET_USD=0, `up` is refused (exit 5)."""
    assert _check(capsys, shop_env, ["up", "--min-vram", "24"], record=False) == 5


@pytest.mark.parametrize("bid", ["nan", "inf", "1e309"])
def test_a_bid_that_is_no_number_is_bad_input(shop_env: Any, capsys: Any, bid: str) -> None:
    """nan passed `bid <= 0` and would have been sent to the provider as NaN."""
    code = _check(capsys, shop_env, ["up", "--interruptible", "--bid", bid], record=False)
    assert code == 2
