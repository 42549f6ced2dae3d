"""A job's log on the screen: the trainer's progress bar as ONE live bar on a terminal (step/total,
loss, it/s, ETA, cost so far) with the other log lines printed above it; on a pipe or a CI log,
plain lines, the bar's now and then (every `PLAIN_EVERY_FRACTION` of the run or `PLAIN_EVERY_S`
seconds, and its last step), never an escape code.

With ``keep`` (a recipe's choice of the lines worth attention), only those lines of the log are
shown, and the others counted; from the first line that looks like trouble (a traceback, an
error) on, everything is shown, with the hidden lines just before it.

The live bar goes to stderr, as progress does; the log goes to its sink (stdout, or stderr with
``--json``). Where both are the terminal, log lines are printed through the bar's console so that
the bar stays below them. The local job log keeps every byte either way (`gpushop logs`).
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable
from typing import IO, Any

from gpushop.service.types import LogStream, Progress, Redraw

PLAIN_EVERY_S = 30.0
PLAIN_EVERY_FRACTION = 0.1
REFRESH_S = 0.2  # the live bar is redrawn at most this often (and on its first and last step)
COST_EVERY_S = 1.0  # the cost so far is read from the store at most this often
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
# a line after which nothing of the log is hidden any more: what went wrong must show
_TROUBLE = re.compile(r"Traceback|Error\b|Exception\b|error:|out of memory|\bKilled\b|FAILED")
CONTEXT_LINES = 10  # hidden lines shown again before the first sign of trouble


def clock(seconds: float | None) -> str:
    """tqdm's clock: 03:30, 1:02:03; ? when unknown."""
    if seconds is None:
        return "?"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def rate(bar: Progress) -> str:
    per_step = bar.seconds_per_step
    return "? it/s" if not per_step else f"{1.0 / per_step:.2f} it/s"


def loss(bar: Progress) -> str:
    return "?" if bar.loss is None else f"{bar.loss:.4f}"


def money(cost: float | None) -> str:
    return "$?" if cost is None else f"${cost:.4f}"


def plain_line(bar: Progress, cost: float | None) -> str:
    """e.g. ``mylora: step 250/1000 (25%), loss 0.4123, 0.38 it/s, ETA 32:30, $0.0123 so far``."""
    return (
        f"{bar.name}: step {bar.step}/{bar.total} ({bar.fraction:.0%}), loss {loss(bar)}, "
        f"{rate(bar)}, ETA {clock(bar.remaining_s)}, {money(cost)} so far"
    )


def _is_terminal(stream: IO[str]) -> bool:
    from rich.console import Console

    return bool(Console(file=stream).is_terminal)


class LiveLog:
    """Feeds a job's log (bytes as they stream in) to the screen."""

    def __init__(
        self,
        sink: IO[str],
        bar: Callable[[str], Progress | None],
        *,
        cost: Callable[[], float | None] | None = None,
        console: Any = None,
        now: Callable[[], float] = time.monotonic,
        keep: Callable[[str], bool] | None = None,
    ) -> None:
        from rich.console import Console

        self.sink = sink
        self.keep = keep
        self.hidden = 0  # lines of the log not shown (`keep` said no)
        self._hidden_tail: deque[str] = deque(maxlen=CONTEXT_LINES)
        self.stream = LogStream(bar)
        self.cost_of = cost
        self.console = console if console is not None else Console(stderr=True)
        self.now = now
        self.live = bool(self.console.is_terminal)  # a live bar; else plain lines only
        self.sink_is_terminal = _is_terminal(sink)
        self._progress: Any = None  # the rich Progress while a bar is live
        self._task: Any = None
        self._drawn = float("-inf")
        self._cost: float | None = None
        self._cost_at = float("-inf")
        self._plain: tuple[float, float, int] | None = None  # (when, fraction, step) last printed
        self._in_place = False  # a redrawn line is on the screen, not ended yet

    # -- input -----------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        for event in self.stream.feed(data):
            self._event(event)

    def close(self) -> None:
        """The end of the log (or of this session): the last line, and the bar stops where it
        is (its last frame stays on the screen)."""
        for event in self.stream.flush():
            self._event(event)
        self._end_in_place()
        self.stop_bar()

    def message(self, text: str) -> bool:
        """Print ``text`` above the live bar; False when no bar is live (print it yourself)."""
        self._end_in_place()
        if self._progress is None:
            return False
        self._progress.console.print(text, markup=False, highlight=False, emoji=False)
        return True

    # -- output ----------------------------------------------------------------------------------

    def _event(self, event: str | Progress | Redraw) -> None:
        if isinstance(event, Redraw):
            self._redraw(event.text)
        elif isinstance(event, str):
            self._line(event)
        else:
            self._end_in_place()
            self._bar(event)

    def _redraw(self, text: str) -> None:
        """Another bar (a download, latents cached) redrawn in place on a terminal, as the
        trainer drew it; elsewhere only its last state counts, as a line."""
        if self.sink_is_terminal and self._progress is None:
            self.sink.write(f"\r{text}\x1b[K")
            self.sink.flush()
            self._in_place = True

    def _end_in_place(self) -> None:
        if self._in_place:
            self._in_place = False
            self.sink.write("\n")
            self.sink.flush()

    def _line(self, text: str) -> None:
        if self.keep is not None:
            if _TROUBLE.search(_ANSI.sub("", text)):
                self.keep = None  # from here on, all of it
                context = list(self._hidden_tail)
                self.hidden -= len(context)
                for earlier in context:
                    self._show(earlier)
            elif not self.keep(_ANSI.sub("", text)):
                self.hidden += 1
                self._hidden_tail.append(text)
                if self._in_place:  # a bar drawn in place ended on a line not worth keeping
                    self._in_place = False
                    self.sink.write("\r\x1b[K")
                    self.sink.flush()
                return
        self._show(text)

    def _show(self, text: str) -> None:
        if self._in_place:
            self._in_place = False
            self.sink.write(f"\r{text}\x1b[K\n")
            self.sink.flush()
            return
        if self._progress is not None and self.sink_is_terminal:
            from rich.text import Text

            self._progress.console.print(Text.from_ansi(text), soft_wrap=True)
            return
        if not self.sink_is_terminal:
            text = _ANSI.sub("", text)
        self.sink.write(text + "\n")
        self.sink.flush()

    def _bar(self, bar: Progress) -> None:
        cost = self._current_cost()
        if not self.sink_is_terminal or not self.live:
            self._plain_bar(bar, cost)
        if self.live:
            self._live_bar(bar, cost)

    def _plain_bar(self, bar: Progress, cost: float | None) -> None:
        now = self.now()
        last = self._plain
        due = (
            last is None
            or bar.step < last[2]  # a new run of the bar (a resumed trainer)
            or (bar.step >= bar.total and last[2] < bar.total)
            or (bar.step != last[2] and now - last[0] >= PLAIN_EVERY_S)
            or bar.fraction - last[1] >= PLAIN_EVERY_FRACTION - 1e-9
        )
        if due:
            self._plain = (now, bar.fraction, bar.step)
            self.sink.write(plain_line(bar, cost) + "\n")
            self.sink.flush()

    def _live_bar(self, bar: Progress, cost: float | None) -> None:
        if self._progress is not None and self._task is not None:
            task = self._progress.tasks[0]
            if bar.step < task.completed or bar.total != task.total:
                self.stop_bar()  # another run of the bar: the old one stays as it ended
        fields = {
            "loss": loss(bar),
            "rate": rate(bar),
            "eta": clock(bar.remaining_s),
            "cost": money(cost),
        }
        if self._progress is None:
            self._start(bar, fields)
        done = bar.step >= bar.total
        now = self.now()
        refresh = done or now - self._drawn >= REFRESH_S
        self._progress.update(self._task, completed=bar.step, refresh=refresh, **fields)
        if refresh:
            self._drawn = now
        if done:
            self.stop_bar()

    def _start(self, bar: Progress, fields: dict[str, str]) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
        from rich.progress import Progress as Bars

        self._progress = Bars(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[rate]}"),
            TextColumn("ETA {task.fields[eta]}"),
            TextColumn("{task.fields[cost]}"),
            console=self.console,
            auto_refresh=False,  # redrawn as the trainer reports (see REFRESH_S)
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._task = self._progress.add_task(bar.name, total=bar.total, **fields)
        self._progress.start()
        self._drawn = float("-inf")

    def stop_bar(self) -> None:
        """The live bar stops where it is (its last frame stays); the next redraw starts another."""
        progress, self._progress, self._task = self._progress, None, None
        if progress is not None:
            progress.refresh()
            progress.stop()

    def _current_cost(self) -> float | None:
        if self.cost_of is None:
            return None
        now = self.now()
        if now - self._cost_at >= COST_EVERY_S:
            self._cost_at = now
            try:
                self._cost = self.cost_of()
            except Exception:  # the figure is a courtesy: never fail a job for it
                self._cost = None
        return self._cost
