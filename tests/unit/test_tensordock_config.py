"""TensorDock settings: TENSORDOCK_API_TOKEN (a secret), TENSORDOCK_URL, per-GPU sizing."""

from __future__ import annotations

import pytest

from gpushop.config import describe, load_settings
from gpushop.errors import ConfigError


def test_defaults() -> None:
    s = load_settings()
    assert s.tensordock_api_token is None
    assert s.tensordock_url == "https://dashboard.tensordock.com/api/v2"
    assert (s.tensordock_vcpu_per_gpu, s.tensordock_ram_gb_per_gpu) == (8, 32)


def test_the_token_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENSORDOCK_API_TOKEN", "td-supersecret-token-9876")
    s = load_settings()
    assert s.tensordock_api_token is not None
    assert "supersecret" not in repr(s)
    rows = {name: (value, source) for name, value, source in describe(s)}
    assert rows["TENSORDOCK_API_TOKEN"] == ("****9876", "env")
    assert rows["TENSORDOCK_URL"] == ("https://dashboard.tensordock.com/api/v2", "default")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:8766/api/v2/", "http://127.0.0.1:8766/api/v2"),
        ("http://127.0.0.1:8766", "http://127.0.0.1:8766/api/v2"),
        ("https://dashboard.tensordock.com/", "https://dashboard.tensordock.com/api/v2"),
    ],
)
def test_url(monkeypatch: pytest.MonkeyPatch, given: str, expected: str) -> None:
    monkeypatch.setenv("TENSORDOCK_URL", given)
    assert load_settings().tensordock_url == expected


def test_sizing_overrides_and_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENSORDOCK_VCPU_PER_GPU", "12")
    monkeypatch.setenv("TENSORDOCK_RAM_GB_PER_GPU", "64")
    s = load_settings()
    assert (s.tensordock_vcpu_per_gpu, s.tensordock_ram_gb_per_gpu) == (12, 64)
    monkeypatch.setenv("TENSORDOCK_RAM_GB_PER_GPU", "0")
    with pytest.raises(ConfigError, match="TENSORDOCK_RAM_GB_PER_GPU"):
        load_settings()
    monkeypatch.delenv("TENSORDOCK_RAM_GB_PER_GPU")
    monkeypatch.setenv("TENSORDOCK_URL", "dashboard.tensordock.com")
    with pytest.raises(ConfigError, match="TENSORDOCK_URL"):
        load_settings()
