"""What a user watches while `gpushop train flux-lora` trains: on a terminal ONE live bar
(step/total, loss, it/s, ETA, cost so far) with the trainer's other lines above it, not a line per
step; on a pipe or a CI log a plain line now and then, never an escape code; with --json nothing
but JSON on stdout. Driven through the CLI against the emulator's simulated ai-toolkit."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from gpushop.cli.app import main
from gpushop.recipes.sample_data import write_sample_dataset

STEPS = 200
ESC = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
TRAINER_BAR = re.compile(r"mylora:\s+\d+%\|")  # the trainer's own tqdm line
PLAIN = re.compile(r"^mylora: step (\d+)/200 \(\d+%\), loss ([0-9.]+|\?), ([0-9.]+|\?) it/s, ETA ")


@pytest.fixture
def env(emulator: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    monkeypatch.setenv("VASTAI_URL", emulator.url)
    monkeypatch.setenv("VASTAI_API_KEY", emulator.api_key)
    monkeypatch.setenv("GPUSHOP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GPUSHOP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GPUSHOP_DB_URL", f"sqlite:///{tmp_path / 'store.db'}")
    monkeypatch.setenv("HF_TOKEN", "hf_" + "t0ken" * 8)
    monkeypatch.setenv("GPUSHOP_RATE_LIMIT", "false")
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.chdir(tmp_path)
    return emulator


def train(capsys: pytest.CaptureFixture[str], tmp_path: Path, *extra: str) -> tuple[str, str]:
    data = write_sample_dataset(tmp_path / "ds", count=2)
    code = main(
        [
            "train",
            "flux-lora",
            "--dataset",
            str(data),
            "--name",
            "mylora",
            "--steps",
            str(STEPS),
            "--save-every",
            "100",
            "--out",
            str(tmp_path / "lora"),
            "--yes",
            *extra,
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    return out, err


def screen_lines(text: str) -> list[str]:
    """What stays on a terminal, line by line: each line as its last redraw left it (a live
    display redraws its line in place with \\r and erase-line)."""
    return [ESC.sub("", line.rsplit("\r", 1)[-1]) for line in text.split("\n")]


def frames(text: str) -> list[str]:
    """Every redraw that was drawn, stale or not."""
    return [ESC.sub("", piece) for piece in re.split(r"[\r\n]", text)]


@pytest.mark.slow
def test_on_a_terminal_training_shows_one_live_bar_not_a_line_per_step(
    env: Any, capsys: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich's "this is a terminal"
    out, err = train(capsys, tmp_path)
    drawn = [f for f in frames(err) if "/200" in f]
    last = next(f for f in reversed(drawn) if "200/200" in f)
    # the bar: name, step/total, loss, it/s, ETA, the cost so far
    assert re.search(r"mylora .*200/200 loss 0\.\d{4} [0-9.]+ it/s ETA 00:00 \$\d+\.\d{4}", last)
    assert any(re.search(r"\b0/200 loss \? \? it/s ETA \?", f) for f in drawn), drawn[:3]
    # on the screen: the bar's last frame once, none of the trainer's per-step lines
    screen = screen_lines(out + err)
    assert [line.rstrip() for line in screen if "/200" in line] == [last.rstrip()]
    assert not [line for line in screen if TRAINER_BAR.search(line)]
    # the trainer's milestones are still there, above the bar; the rest is in the job's log
    assert "Saved checkpoint to" in err + out and '"sd_trainer"' not in err + out
    assert screen.index(next(s for s in screen if "Caching latents for" in s)) < next(
        i for i, s in enumerate(screen) if "200/200" in s
    )
    assert re.search(r"\(\d+ more lines of the job's log: gpushop logs j\w+;", err)
    assert len(screen) < STEPS  # a few screens, not a line a step


@pytest.mark.slow
def test_not_on_a_terminal_plain_progress_lines_now_and_then_and_no_escape_codes(
    env: Any, capsys: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "0")
    out, err = train(capsys, tmp_path)
    assert "\x1b" not in out and "\x1b" not in err
    assert "\r" not in out
    lines = out.splitlines()
    progress = [m for m in map(PLAIN.match, lines) if m]
    steps = [int(m.group(1)) for m in progress]
    # the first, about every 10 %, and the last: far fewer lines than steps
    assert steps[0] == 0 and steps[-1] == STEPS, steps
    assert 5 <= len(steps) <= 15, steps
    assert steps == sorted(steps)
    assert re.search(r"ETA 00:00, \$\d+\.\d{4} so far$", lines[lines.index(progress[-1].string)])
    assert not [line for line in lines if TRAINER_BAR.search(line)]
    assert "Saved checkpoint to" in out and '"sd_trainer"' not in out
    assert len(lines) < 45  # the plan, milestones and progress: a screen


def test_full_log_shows_the_trainers_whole_log(
    env: Any, capsys: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "0")
    out, err = train(capsys, tmp_path, "--full-log")
    assert '"sd_trainer"' in out and "Generating Images" in out and "Saving at step 100" in out
    assert "more lines of the job's log" not in err


def test_json_keeps_stdout_to_its_json_even_on_a_terminal(
    env: Any, capsys: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    out, err = train(capsys, tmp_path, "--json")
    decoder, docs, pos = json.JSONDecoder(), [], 0
    while out[pos:].strip():
        pos += len(out[pos:]) - len(out[pos:].lstrip())
        doc, pos = decoder.raw_decode(out, pos)
        docs.append(doc)
    assert [sorted(d)[:1] for d in docs] == [["plan"], ["cost_usd"]]  # the plan, the summary
    assert docs[-1]["state"] == "succeeded" and docs[-1]["cost_usd"] > 0
    assert "200/200" in err  # the bar went to stderr
