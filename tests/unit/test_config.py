import pytest

from gpushop.config import describe, load_settings, mask
from gpushop.errors import ConfigError


def test_defaults() -> None:
    s = load_settings()
    assert s.vastai_url == "https://console.vast.ai"
    assert s.vastai_api_key is None
    assert s.db_url.startswith("sqlite:///")


def test_environment_overrides_the_profile_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GPUSHOP_CONFIG_DIR", str(tmp_path))
    (tmp_path / "staging.toml").write_text(
        'VASTAI_URL = "http://file.example"\nvastai_max_bid_per_hour = 0.9\n'
    )
    monkeypatch.setenv("GPUSHOP_PROFILE", "staging")
    s = load_settings()
    assert s.vastai_url == "http://file.example"
    assert s.vastai_max_bid_per_hour == 0.9
    monkeypatch.setenv("VASTAI_URL", "http://env.example/")
    s = load_settings()
    assert s.vastai_url == "http://env.example"
    sources = {name: source for name, _, source in describe(s)}
    assert sources["VASTAI_URL"] == "env"
    assert sources["VASTAI_MAX_BID_PER_HOUR"].startswith("profile")


def test_bad_profile_and_bad_values_are_config_errors(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GPUSHOP_PROFILE", "prod")
    with pytest.raises(ConfigError, match="GPUSHOP_PROFILE"):
        load_settings()
    monkeypatch.setenv("GPUSHOP_PROFILE", "production")
    monkeypatch.setenv("GPUSHOP_CONFIG_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()
    monkeypatch.delenv("GPUSHOP_PROFILE")
    monkeypatch.setenv("VASTAI_MAX_BID_PER_HOUR", "-1")
    with pytest.raises(ConfigError, match="VASTAI_MAX_BID_PER_HOUR"):
        load_settings()


def test_preferred_gpus_comma_list(monkeypatch) -> None:
    monkeypatch.setenv("VASTAI_PREFERRED_GPUS", "RTX 4090, RTX 3090,A6000")
    assert load_settings().vastai_preferred_gpus == ["RTX 4090", "RTX 3090", "A6000"]


def test_secrets_are_masked(monkeypatch) -> None:
    monkeypatch.setenv("VASTAI_API_KEY", "supersecretkey1234567890")
    rows = {name: value for name, value, _ in describe(load_settings())}
    assert "supersecret" not in rows["VASTAI_API_KEY"]
    assert rows["VASTAI_API_KEY"] == mask("supersecretkey1234567890") == "****7890"


def test_client_side_pacing_can_be_turned_off_for_a_server_without_limits(monkeypatch) -> None:
    from gpushop.shop import Shop

    assert load_settings().gpushop_rate_limit is True
    assert Shop(load_settings()).provider("vastai").http.limiter.enabled  # type: ignore[attr-defined]
    monkeypatch.setenv("GPUSHOP_RATE_LIMIT", "false")
    shop = Shop(load_settings())
    for name in ("vastai", "tensordock"):
        assert not shop.provider(name).http.limiter.enabled  # type: ignore[attr-defined]
