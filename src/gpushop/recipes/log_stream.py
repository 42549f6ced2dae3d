"""A job's log as it streams in: whole lines, and the redraws of its progress bar apart.

A trainer redraws its bar with ``\\r`` (tqdm writing to a file or a pipe) or prints it again on a
new line each step: either way one step is one redraw. `LogStream` cuts the stream at ``\\r`` and
``\\n``; a piece the ``bar`` parser recognises is a `Progress`, anything else is text. Pieces of
one line that were overwritten with ``\\r`` (another bar: "Fetching 23 files: 40%|...") count
once, as their last state, when the line ends (each is a `Redraw` meanwhile). Bytes are decoded
as UTF-8 across chunk boundaries.

>>> from gpushop.recipes.aitoolkit import last_progress
>>> stream = LogStream(lambda piece: last_progress(piece, "a"))
>>> bar = b"a:  50%|#  | 1/2 [00:01<00:01, 1.00it/s, loss: 0.5]"
>>> [type(x).__name__ for x in stream.feed(b"start\\n" + bar + b"\\r")]
['str', 'Progress']
>>> stream.feed(b"Fetch: 50%|#  | 1/2\\rFetch: 100%|##| 2/2\\ndone")
[Redraw(text='Fetch: 50%|#  | 1/2'), 'Fetch: 100%|##| 2/2']
>>> stream.flush()
['done']
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable
from dataclasses import dataclass

from gpushop.recipes.aitoolkit import Progress

_CUT = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class Redraw:
    """A piece of a line that the next piece overwrites (another bar's state): worth showing
    in place on a terminal, not worth a line anywhere."""

    text: str


Event = str | Progress | Redraw


class LogStream:
    def __init__(self, bar: Callable[[str], Progress | None]) -> None:
        self.bar = bar
        self._decode = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""  # the piece being written: no \r or \n after it yet
        self._overwritten: str | None = None  # this line's last piece cut by \r (not a bar)
        self._shown: Progress | None = None  # the pending piece's bar, already counted

    def feed(self, data: bytes) -> list[Event]:
        """What ``data`` completes, in order: lines (without their end) and bar redraws. A bar
        written whole but not yet ended (tqdm writes ``\\r`` before each redraw, not after)
        counts at once."""
        text = self._pending + self._decode.decode(data)
        events: list[Event] = []
        pos = 0
        for cut in _CUT.finditer(text):
            if cut.group() == "\r" and cut.end() == len(text):
                break  # a \r\n may be cut in two: wait for what follows
            piece = text[pos : cut.start()]
            if pos == 0 and self._shown is not None and self.bar(piece) == self._shown:
                if cut.group() != "\r":  # the same redraw, maybe ended by a colour reset
                    self._overwritten = None
            else:
                self._piece(piece, cut.group() == "\r", events)
            self._shown = None
            pos = cut.end()
        self._pending = text[pos:]
        candidate = self._pending.removesuffix("\r")
        if self._shown is None and not _CUT.search(candidate) and candidate.strip():
            progress = self.bar(candidate)
            if progress is not None:
                events.append(progress)
                self._shown = progress
        return events

    def flush(self) -> list[Event]:
        """The end of the stream: what is left, as a last line."""
        text = self._pending + self._decode.decode(b"", final=True)
        shown, self._pending, self._shown = self._shown, "", None
        events: list[Event] = []
        if text.endswith("\r"):
            text = text[:-1]
        if shown is not None and text.strip() and self.bar(text) == shown:
            text = ""
        if text or self._overwritten is not None:
            self._piece(text, False, events)
        return events

    def _piece(self, piece: str, redrawn: bool, events: list[Event]) -> None:
        progress = self.bar(piece) if piece.strip() else None
        if progress is not None:
            events.append(progress)
            if not redrawn:
                self._overwritten = None
            return
        if redrawn:
            if piece.strip():
                self._overwritten = piece
                events.append(Redraw(piece))
            return
        if not piece.strip() and self._overwritten is not None:
            piece = self._overwritten  # "...\r\n": the line ends on its last redraw
        self._overwritten = None
        events.append(piece)
