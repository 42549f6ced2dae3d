"""What the CLI tests against the shared emulator need."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def env(emulator: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """The gpushop CLI pointed at the shared emulator, with its own store, cache and data dir
    (a module may define its own `env` for more)."""
    monkeypatch.setenv("VASTAI_URL", emulator.url)
    monkeypatch.setenv("VASTAI_API_KEY", emulator.api_key)
    monkeypatch.setenv("GPUSHOP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GPUSHOP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GPUSHOP_DB_URL", f"sqlite:///{tmp_path / 'store.db'}")
    return emulator
