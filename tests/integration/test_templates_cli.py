"""`gpushop templates` end to end against the emulator's GET /api/v0/template/ over real HTTP."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from gpushop.cli import app as cli_app
from gpushop.cli import templates as templates_cli
from gpushop.cli.app import main

TEMPLATE_KEYS = {
    "hash_id",
    "id",
    "name",
    "image",
    "tag",
    "desc",
    "recommended_disk_gb",
    "runtype",
    "use_ssh",
    "ssh_direct",
    "min_cuda",
    "min_gpu_ram_gb",
    "count_created",
    "recommended",
    "private",
    "href",
}


@pytest.fixture
def env(emulator: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Any:
    monkeypatch.setenv("VASTAI_URL", emulator.url)
    monkeypatch.setenv("VASTAI_API_KEY", emulator.api_key)
    monkeypatch.setenv("GPUSHOP_CACHE_DIR", str(tmp_path / "cache"))
    # until cli/app.py registers the command itself
    original = cli_app._register

    def register() -> None:
        original()
        callbacks = [c.callback for c in cli_app.app.registered_commands]
        if templates_cli.templates not in callbacks:
            templates_cli.register(cli_app.app)

    monkeypatch.setattr(cli_app, "_register", register)
    return emulator


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def template_searches(emulator: Any) -> list[dict[str, Any]]:
    return [
        r
        for r in emulator.control.requests()
        if r["method"] == "GET" and r["path"].rstrip("/").endswith("/template")
    ]


def test_json_lists_the_catalogue_most_created_first(env: Any, capsys: Any) -> None:
    code, out, err = run(capsys, "templates", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) >= 3
    for row in rows:
        assert set(row) == TEMPLATE_KEYS
        assert len(row["hash_id"]) == 32
        assert "env" not in row and "onstart" not in row  # may hold secrets
    counts = [r["count_created"] for r in rows]
    assert counts == sorted(counts, reverse=True)
    # the seeded fixture template, field by field where we map it
    pytorch = next(r for r in rows if r["hash_id"] == "661d064bbda1f2a133816b6d55da07c3")
    assert (pytorch["image"], pytorch["min_cuda"], pytorch["recommended_disk_gb"]) == (
        "vastai/pytorch",
        12.4,
        32.0,
    )
    assert pytorch["runtype"] == "jupyter+ssh (direct)"


def test_query_matches_name_image_or_description_case_insensitively(env: Any, capsys: Any) -> None:
    code, out, _ = run(capsys, "templates", "--query", "AI TOOLKIT", "--json")
    assert code == 0
    rows = json.loads(out)
    assert rows and all(
        "ai toolkit" in (r["name"] + " " + r["desc"]).lower() or "aitoolkit" in r["image"].lower()
        for r in rows
    )
    assert any(r["image"] == "ostris/aitoolkit" for r in rows)
    assert all(
        "image" not in json.loads(s["query"].get("select_filters", "{}"))
        for s in template_searches(env)
    )  # plain text: no server filter


def test_an_image_query_is_sent_as_an_exact_image_filter(env: Any, capsys: Any) -> None:
    code, out, _ = run(capsys, "templates", "-q", "ostris/aitoolkit", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [r["image"] for r in rows] == ["ostris/aitoolkit"] * len(rows) and rows
    (search,) = template_searches(env)
    assert json.loads(search["query"]["select_filters"]) == {"image": {"eq": "ostris/aitoolkit"}}
    assert search["auth"] is not None


def test_table_shows_hash_image_disk_run_cuda_vram_and_count(env: Any, capsys: Any) -> None:
    code, out, _ = run(capsys, "templates", "--query", "aitoolkit")
    assert code == 0
    for column in ("hash_id", "image:tag", "disk", "run", "CUDA", "VRAM", "created"):
        assert column in out
    assert "ostris/aitoolkit:latest" in out and ">=24GB" in out


def test_limit_caps_the_rows(env: Any, capsys: Any) -> None:
    code, out, _ = run(capsys, "templates", "--limit", "2", "--json")
    assert code == 0 and len(json.loads(out)) == 2


def test_no_match_is_one_line_and_exit_6(env: Any, capsys: Any) -> None:
    code, out, err = run(capsys, "templates", "--query", "no-such-template-anywhere")
    assert code == 6 and out == ""
    assert err == "gpushop: error: no template matches 'no-such-template-anywhere'\n"


def test_without_a_key_public_templates_are_shown_with_a_warning(
    env: Any, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = httpx.post(
        f"{env.url}/api/v0/template/",
        json={
            "name": "my private trainer",
            "image": "ostris/aitoolkit",
            "tag": "latest",
            "runtype": "ssh",
            "use_ssh": True,
            "private": True,
            "recommended_disk_space": 64,
        },
        headers={"Authorization": f"Bearer {env.api_key}"},
        timeout=10,
    )
    assert mine.status_code == 200, mine.text
    code, out, _ = run(capsys, "templates", "--json")
    assert code == 0 and any(r["name"] == "my private trainer" for r in json.loads(out))

    monkeypatch.delenv("VASTAI_API_KEY")
    code, out, err = run(capsys, "templates", "--json")
    assert code == 0
    names = [r["name"] for r in json.loads(out)]
    assert names and "my private trainer" not in names
    assert "VASTAI_API_KEY is not set: showing public Vast.ai templates only" in err


def test_a_wrong_key_is_refused_with_exit_4(
    env: Any, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VASTAI_API_KEY", "not-a-valid-key")
    code, out, err = run(capsys, "templates")
    assert code == 4 and out == ""
    assert err.startswith("gpushop: error: ") and err.count("\n") == 1
    assert "not-a-valid-key" not in err


@pytest.mark.parametrize(
    ("argv", "needle"), [(["--limit", "0"], "--limit"), (["--query", "  "], "--query")]
)
def test_bad_input_exits_2_before_any_request(
    env: Any, capsys: Any, argv: list[str], needle: str
) -> None:
    code, _, err = run(capsys, "templates", *argv)
    assert code == 2 and needle in err
    assert template_searches(env) == []
