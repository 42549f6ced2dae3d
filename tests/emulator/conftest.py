"""HTTP clients bound to the per-test emulator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpushop.emulator import EmulatorThread

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "vastai"


def fixture_json(name: str) -> Any:
    """A recorded response from shared/fixtures/vastai/ (skip when the folder is absent)."""
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"fixture {name} not available")
    return json.loads(path.read_text())


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
