"""A job's log cut into lines and the redraws of its trainer's bar, however the bytes arrive."""

from __future__ import annotations

from gpushop.recipes.aitoolkit import Progress, last_progress
from gpushop.recipes.log_stream import Event, LogStream, Redraw


def bar(step: int, total: int = 100, name: str = "my_lora") -> str:
    return (
        f"{name}:  {step * 100 // total}%|#   | {step}/{total} [00:{step % 60:02d}<01:00,  "
        f"2.00it/s, lr: 1.0e-04 loss: 4.{step:03d}e-01]"
    )


def stream(name: str = "my_lora") -> LogStream:
    return LogStream(lambda piece: last_progress(piece, name))


def shown(events: list[Event]) -> list[str | int]:
    """Lines and the bar's steps (what counts beyond the moment)."""
    return [e.step if isinstance(e, Progress) else e for e in events if not isinstance(e, Redraw)]


def feed_in_chunks(data: bytes, size: int) -> list[Event]:
    s = stream()
    events: list[Event] = []
    for i in range(0, len(data), size):
        events += s.feed(data[i : i + size])
    return events + s.flush()


def test_a_bar_printed_on_a_new_line_each_step_is_one_redraw_per_step() -> None:
    log = "Loading vae\n" + "".join(bar(i) + "\n" for i in range(4)) + "Saving at step 3\n"
    events = feed_in_chunks(log.encode(), 1000)
    assert shown(events) == ["Loading vae", 0, 1, 2, 3, "Saving at step 3"]
    last = events[4]
    assert isinstance(last, Progress) and last.loss == 0.4003 and last.total == 100


def test_tqdm_redraws_with_carriage_returns_count_as_they_come_in_any_chunking() -> None:
    # tqdm writing to a file: "\r" BEFORE each redraw, "\n" when the bar closes
    log = "start\n" + "".join("\r" + bar(i) for i in range(5)) + "\ndone\n"
    for size in (1, 3, 7, 64, 10_000):
        assert shown(feed_in_chunks(log.encode(), size)) == ["start", 0, 1, 2, 3, 4, "done"]


def test_a_whole_redraw_counts_before_the_next_one_begins() -> None:
    s = stream()
    assert shown(s.feed(("\r" + bar(7)).encode())) == [7]  # not one redraw behind
    assert shown(s.feed(("\r" + bar(8)).encode())) == [8]
    assert shown(s.feed(b"\n")) == []
    assert s.flush() == []


def test_other_bars_redrawn_in_place_are_one_line_in_their_last_state() -> None:
    fetch = [f"Fetching 23 files: {p}%|##| {n}/23" for p, n in ((0, 0), (52, 12), (100, 23))]
    log = "\r".join(fetch) + "\r\n" + "Loading t5\n"
    for size in (1, 5, 1000):
        assert shown(feed_in_chunks(log.encode(), size)) == [fetch[-1], "Loading t5"]
    # meanwhile each state is a redraw, for a terminal to show in place
    redraws = [e.text for e in feed_in_chunks(log.encode(), 5) if isinstance(e, Redraw)]
    assert redraws == fetch[:-1]  # the last state ends the line


def test_other_bars_and_bars_without_the_jobs_name_are_text() -> None:
    other = bar(3, name="Generating Images")
    assert shown(feed_in_chunks(f"{other}\n{bar(3)}\n".encode(), 9)) == [other, 3]


def test_utf8_cut_between_chunks_and_a_last_line_without_its_end() -> None:
    log = "température 25 °C ✓\nno newline at the end ✓".encode()
    assert shown(feed_in_chunks(log, 1)) == ["température 25 °C ✓", "no newline at the end ✓"]


def test_ansi_colours_in_a_bar_do_not_hide_it() -> None:
    assert shown(feed_in_chunks(f"\x1b[32m{bar(9)}\x1b[0m\n".encode(), 4)) == [9]
