"""A sandbox ended while it is starting (a reset or a stop that comes while the emulator's tick
boots the machine) neither hangs its start nor is left running."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from gpushop.emulator import isolation
from gpushop.emulator.sandbox import Sandbox


@pytest.fixture
def box(tmp_path: Path) -> Sandbox:
    iso = isolation.probe()
    if iso is None:
        message = f"no sandboxes here: {isolation.reason()}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    sandbox = Sandbox(tmp_path / "C.1", iso)
    sandbox.prepare(None)
    return sandbox


async def test_an_end_during_the_start_waits_for_it_then_ends_it(box: Sandbox) -> None:
    starting = asyncio.ensure_future(box.start())
    await asyncio.sleep(0)  # the start has launched PID 1 and waits for its "ready"
    assert not starting.done()
    async with asyncio.timeout(15):  # the start gives up after 20 s: it must not come to that
        await box.end()
        await starting  # it finished (then the end ended it), no "no answer" after 20 s
    assert not box.running and box.init_pid is None
    await box.start()  # and it starts again as usual
    assert box.running
    await box.end()
