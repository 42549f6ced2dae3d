"""HTTP clients bound to the per-test emulator."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from gpushop.emulator import EmulatorThread


@pytest.fixture
def client(emulator: EmulatorThread) -> Iterator[httpx.Client]:
    """Authenticated with the emulator's key (Bearer, as the official CLI)."""
    headers = {"Authorization": f"Bearer {emulator.api_key}"}
    with httpx.Client(base_url=emulator.url, headers=headers, timeout=10) as c:
        yield c


@pytest.fixture
def anon(emulator: EmulatorThread) -> Iterator[httpx.Client]:
    """No credentials at all."""
    with httpx.Client(base_url=emulator.url, timeout=10) as c:
        yield c
