"""The trainer's bar as the user sees it: how often a plain line comes (a slow run in a CI log),
a resumed run's bar, messages above a live bar. Real rich consoles writing to strings."""

from __future__ import annotations

import io
import re

from rich.console import Console

from gpushop.cli.live_progress import LiveLog
from gpushop.recipes.aitoolkit import last_progress

ESC = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def bar(step: int, total: int = 1000) -> bytes:
    return (
        f"job:  {step * 100 // total}%|#  | {step}/{total} [00:10<30:00,  1.52s/it, "
        f"lr: 1.0e-04 loss: 3.5e-01]\n"
    ).encode()


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def plain(clock: Clock) -> tuple[LiveLog, io.StringIO]:
    sink = io.StringIO()
    console = Console(file=io.StringIO(), force_terminal=False)
    parse = lambda piece: last_progress(piece, "job")  # noqa: E731
    live = LiveLog(sink, parse, cost=lambda: 1.5, console=console, now=clock)
    return live, sink


def test_a_slow_run_prints_a_line_every_30_seconds_and_a_fast_one_every_10_percent() -> None:
    clock = Clock()
    live, sink = plain(clock)
    for step in range(41):  # 4 % of the run, one step every 2 s: 80 s
        live.feed(bar(step))
        clock.t += 2.0
    steps = [int(m) for m in re.findall(r"step (\d+)/1000", sink.getvalue())]
    assert steps == [0, 15, 30]
    for step in range(41, 1001):  # then fast: 10 % steps
        live.feed(bar(step))
    live.close()
    steps = [int(m) for m in re.findall(r"step (\d+)/1000", sink.getvalue())]
    assert steps == [0, 15, 30, 130, 230, 330, 430, 530, 630, 730, 830, 930, 1000]
    assert sink.getvalue().splitlines()[-1] == (
        "job: step 1000/1000 (100%), loss 0.3500, 0.66 it/s, ETA 30:00, $1.5000 so far"
    )


def test_a_resumed_run_starts_its_bar_again() -> None:
    live, sink = plain(Clock())
    for step in (0, 500, 637, 600, 700):
        live.feed(bar(step))
    assert re.findall(r"step (\d+)/1000", sink.getvalue()) == ["0", "500", "637", "600", "700"]


def test_on_a_terminal_messages_and_lines_go_above_the_live_bar() -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120)
    sink = io.StringIO()
    live = LiveLog(sink, lambda piece: last_progress(piece, "job"), console=console)
    live.sink_is_terminal = True  # the log and the bar share the screen
    live.feed(b"Loading vae\n" + bar(1))
    assert live.message("[12:00:00] synced 1 new file(s)")
    live.feed(b"Saving at step 1\n" + bar(1000) + b"done\n")
    live.close()
    assert sink.getvalue() == "Loading vae\ndone\n"  # before and after the bar: the sink
    seen = ESC.sub("", screen.getvalue())
    assert "synced 1 new file(s)" in seen and "Saving at step 1" in seen
    assert re.search(r"job .*1000/1000 loss 0\.3500 0\.66 it/s ETA 30:00 \$\?", seen)
    assert not live.message("after the bar")  # no bar live: the caller prints it


def test_other_bars_redraw_in_place_on_a_terminal_and_are_one_line_elsewhere() -> None:
    fetch = b"\rFetching 23 files:  0%| | 0/23\rFetching 23 files: 52%|#| 12/23\r" + (
        b"Fetching 23 files: 100%|##| 23/23\nLoading t5\n"
    )
    lines = {}
    for terminal in (True, False):
        sink = io.StringIO()
        live = LiveLog(sink, lambda piece: last_progress(piece, "job"), console=Console())
        live.sink_is_terminal = terminal
        live.feed(fetch)
        live.close()
        lines[terminal] = sink.getvalue()
    assert lines[False] == "Fetching 23 files: 100%|##| 23/23\nLoading t5\n"
    assert lines[True] == (
        "\rFetching 23 files:  0%| | 0/23\x1b[K\rFetching 23 files: 52%|#| 12/23\x1b[K"
        "\rFetching 23 files: 100%|##| 23/23\x1b[K\nLoading t5\n"
    )


def test_milestones_only_then_everything_from_the_first_sign_of_trouble() -> None:
    from gpushop.recipes.aitoolkit import is_milestone

    sink = io.StringIO()
    live = LiveLog(
        sink,
        lambda piece: last_progress(piece, "job"),
        console=Console(file=io.StringIO(), force_terminal=False),
        keep=is_milestone,
    )
    log = [
        "{",
        '    "type": "sd_trainer",',
        "}",
        "Loading Flux model",
        "Loading vae",
        "  -  Found 6 images",
        "Generating Images",
        "Saved checkpoint to /o/job_000000250.safetensors",
    ]
    live.feed("\n".join(log).encode() + b"\n" + bar(250))
    assert sink.getvalue().splitlines() == [
        "Loading Flux model",
        "  -  Found 6 images",
        "Saved checkpoint to /o/job_000000250.safetensors",
        "job: step 250/1000 (25%), loss 0.3500, 0.66 it/s, ETA 30:00, $? so far",
    ]
    assert live.hidden == 5
    quiet = [f"quiet line {i}" for i in range(12)]
    crash = [
        "Traceback (most recent call last):",
        '  File "run.py", line 90, in <module>',
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
        "Loading vae",
    ]
    live.feed("\n".join(quiet + crash).encode() + b"\n")
    live.close()
    shown = sink.getvalue().splitlines()
    # the ten lines before the traceback come back for context; after it, nothing is hidden
    assert shown[4:] == quiet[2:] + crash
    assert live.hidden == 5 + 2
