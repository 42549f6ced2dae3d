"""Fixtures of the property tests; importing `fuzzing` loads the hypothesis profile."""

from __future__ import annotations

from collections.abc import Iterator

import fuzzing  # noqa: F401  (registers and loads the profile before any test is collected)
import httpx
import pytest

from gpushop.emulator import EmulatorThread


@pytest.fixture
def client(emulator: EmulatorThread) -> Iterator[httpx.Client]:
    """An HTTP client with the emulator's key (Bearer, as the official CLI)."""
    headers = {"Authorization": f"Bearer {emulator.api_key}"}
    with httpx.Client(base_url=emulator.url, headers=headers, timeout=10) as c:
        yield c
