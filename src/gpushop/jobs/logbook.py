"""A job's log as the runner keeps it: a local file (the concatenation of the remote logs, whose
size says where to resume reading) and, for a job of the team service, the same bytes and
gpushop's notes in the store (store/job_log.py), so that any replica serves them and one that
takes the job over starts from what the store holds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO

from gpushop.store import Store
from gpushop.store.job_log import NOTE, OUT

log = logging.getLogger("gpushop.jobs")
FLUSH_S = 0.1  # how stale the store's copy may be while output flows (the live stream's delay)
FLUSH_BYTES = 256 * 1024


class LogBook:
    def __init__(
        self,
        path: Path,
        store: Store | None = None,
        job_id: str = "",
        on_flush: Callable[[str], None] | None = None,
    ) -> None:
        self.path = path
        self.store = store
        self.job_id = job_id
        self.on_flush = on_flush  # told after each write to the store (wakes local readers)
        self._file: BinaryIO | None = None
        self._pending: list[tuple[str, bytes]] = []
        self._pending_bytes = 0
        self._due = asyncio.Event()  # FLUSH_BYTES wait: flush before FLUSH_S is up
        self._one_at_a_time = asyncio.Lock()

    # -- writing -------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """The job's own output: to the file now, to the store within FLUSH_S (sooner when
        FLUSH_BYTES wait)."""
        if self._file is None:
            self._file = self.path.open("ab")
        self._file.write(data)
        self._file.flush()
        if self.store is not None:
            self._pending.append((OUT, data))
            self._pending_bytes += len(data)
            if self._pending_bytes >= FLUSH_BYTES:
                self._due.set()

    def note(self, text: str) -> None:
        """gpushop's own line about the job (the store only: the file is the job's output)."""
        if self.store is not None:
            self._pending.append((NOTE, text.encode()))

    async def flush(self) -> None:
        """What waits, to the store: in a thread (a transaction must not hold up the event
        loop), one flush at a time (pieces go in in order)."""
        if self.store is None:
            return
        async with self._one_at_a_time:
            if not self._pending:
                return
            pieces, self._pending, self._pending_bytes = self._pending, [], 0
            writing = asyncio.ensure_future(
                asyncio.to_thread(self.store.job_log.append, self.job_id, pieces)
            )
            try:
                # a cancel does not stop the thread: its outcome decides, or the pieces would
                # be written twice (put back, then written again by the last flush)
                await asyncio.shield(writing)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await writing
                if writing.exception() is not None:
                    self._restore(pieces)
                raise
            except BaseException:
                self._restore(pieces)  # tried again at the next flush
                raise
        if self.on_flush is not None:
            self.on_flush(self.job_id)

    def _restore(self, pieces: list[tuple[str, bytes]]) -> None:
        self._pending[:0] = pieces
        self._pending_bytes += sum(len(d) for _, d in pieces)

    @contextlib.asynccontextmanager
    async def flushing(self) -> AsyncIterator[None]:
        """Flush every FLUSH_S while the body runs, and once more at its end."""
        task = asyncio.create_task(self._flush_loop()) if self.store is not None else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            try:
                await self.flush()
            except Exception as exc:  # the store is down: the file keeps it; a takeover re-reads
                log.warning(
                    "job %s: the log's last piece did not reach the store: %s", self.job_id, exc
                )
            self.close()

    async def _flush_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._due.wait(), FLUSH_S)
            self._due.clear()
            if self._pending:
                try:
                    await self.flush()
                except Exception as exc:  # kept, and tried again
                    log.warning("job %s: writing the log to the store: %s", self.job_id, exc)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    # -- reading -------------------------------------------------------------------------------

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def text(self) -> str:
        return self.path.read_text(errors="replace") if self.path.exists() else ""

    def align(self) -> None:
        """Make the file what the store holds (a job taken over, maybe on another host): a
        longer file is cut back (its tail never reached the store, the runner reads it again
        from the instance), a shorter one completed from the store."""
        if self.store is None:
            return
        self.close()
        held = self.store.job_log.size(self.job_id)
        have = self.size()
        if have > held:
            with self.path.open("r+b") as f:
                f.truncate(held)
        elif have < held:
            with self.path.open("ab") as f:
                for offset, data in self.store.job_log.pieces(self.job_id, have):
                    f.write(data[max(0, have - offset) :])
