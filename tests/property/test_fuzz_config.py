"""Random profile TOML never crashes `gpushop config`: exit 0, or exit 2 with one line.

GPUSHOP_PROFILE=production loads `<config dir>/gpushop/production.toml` (README,
"Configuration"); the file here is random: the settings' own keys with values of every TOML type,
unknown keys, tables, broken syntax and bytes that are not UTF-8.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fuzzing import examples
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gpushop.cli.app import main

KEYS = [
    "VASTAI_API_KEY",
    "VASTAI_URL",
    "VASTAI_PREFERRED_GPUS",
    "VASTAI_MAX_BID_PER_HOUR",
    "VASTAI_SSH_KEY_PATH",
    "TENSORDOCK_API_TOKEN",
    "TENSORDOCK_URL",
    "TENSORDOCK_VCPU_PER_GPU",
    "TENSORDOCK_RAM_GB_PER_GPU",
    "GPUSHOP_DB_URL",
    "GPUSHOP_BUDGET_USD",
    "GPUSHOP_REDIS_URL",
    "GPUSHOP_PROFILE",
    "GPUSHOP_MARKET_TTL",
    "GPUSHOP_RATE_LIMIT",
]
KEY_NAMES = st.one_of(
    st.sampled_from(KEYS),
    st.sampled_from(KEYS).map(str.lower),
    st.sampled_from(["nope", "VASTAI", "a.b", '"quoted key"', "GPUSHOP_LOG_LEVEL", "x-y"]),
)
text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20
)  # json.dumps escapes it into a valid TOML basic string
toml_values = st.one_of(
    text.map(json.dumps),
    st.integers(-(2**63), 2**63 - 1).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(
        lambda f: {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(f), repr(f))
    ),
    st.sampled_from(["true", "false", "1979-05-27T07:32:00Z", "07:32:00", "1979-05-27"]),
    st.sampled_from(['"http://127.0.0.1:1"', '"https://x/api/v0/"', '"ftp://x"', '"4090,3090"']),
    st.sampled_from(['["RTX 4090", "A100"]', "[1, 2]", "[]", "{ a = 1 }", "[[1], [2]]"]),
    st.sampled_from(['"postgresql://u:p@h/db"', '"sqlite:///x.db"', '"-1"', '"0"', '"1e999"']),
)
line = st.one_of(
    st.tuples(KEY_NAMES, toml_values).map(lambda kv: f"{kv[0]} = {kv[1]}"),
    st.sampled_from(["[table]", "[[array]]", "# comment", "", "=", "KEY =", "= 1", "[VASTAI_URL]"]),
    text,  # junk
)


@st.composite
def profiles(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=60))
    return "\n".join(draw(st.lists(line, max_size=6))).encode()


@pytest.fixture
def profile_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    monkeypatch.setenv("GPUSHOP_CONFIG_DIR", str(config_dir))
    monkeypatch.setenv("GPUSHOP_PROFILE", "production")
    return config_dir / "production.toml"


@settings(max_examples=examples(60))
@given(content=profiles(), as_json=st.booleans())
@example(content=b"VASTAI_URL = '\xff'", as_json=False)  # not UTF-8
def test_random_profiles_never_crash_config(
    profile_file: Path, capsys: Any, content: bytes, as_json: bool
) -> None:
    profile_file.write_bytes(content)
    try:
        code = main(["config", *(["--json"] if as_json else [])])
    except BaseException as exc:
        raise AssertionError(f"{content!r}: {type(exc).__name__}: {exc}") from exc
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, (content, err)
    assert code in (0, 2), (content, code, err)
    if code == 0:
        assert err == "", (content, err)
        if as_json:
            assert "VASTAI_URL" in json.loads(out)
    else:
        assert len(err.splitlines()) == 1 and err.startswith("gpushop: error: "), (content, err)
        assert out == ""


def test_a_good_profile_is_shown_with_its_source(profile_file: Path, capsys: Any) -> None:
    profile_file.write_text('VASTAI_URL = "http://127.0.0.1:1"\nGPUSHOP_BUDGET_USD = 5\n')
    assert main(["config", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["VASTAI_URL"]["value"] == "http://127.0.0.1:1"
    assert "production.toml" in shown["VASTAI_URL"]["source"]
