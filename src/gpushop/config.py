"""Configuration: environment variables, optionally over a TOML profile file.

``GPUSHOP_PROFILE=development|staging|production`` loads
``<user config dir>/gpushop/<profile>.toml``; the environment overrides the file. Keys in the file
are the variable names, in either case (``VASTAI_URL = "..."`` or ``vastai_url = "..."``).
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from gpushop.errors import ConfigError

PROFILES = ("development", "staging", "production")
DEFAULT_VASTAI_URL = "https://console.vast.ai"
DEFAULT_TENSORDOCK_URL = "https://dashboard.tensordock.com/api/v2"
# What a TensorDock VM gets per GPU unless configured (the reference's worked example: 8 vCPUs
# and 32 GB of RAM with one RTX 4090); capped by what each hostnode allows per GPU.
DEFAULT_TENSORDOCK_VCPU_PER_GPU = 8
DEFAULT_TENSORDOCK_RAM_GB_PER_GPU = 32

# Fields whose values are never shown, logged or stored.
SECRET_FIELDS = frozenset(
    {
        "vastai_api_key",
        "tensordock_api_token",
        "gpushop_redis_url",
        "gpushop_secret_key",
        "gpushop_token",
    }
)


def config_dir() -> Path:
    from platformdirs import user_config_dir

    return Path(os.environ.get("GPUSHOP_CONFIG_DIR") or user_config_dir("gpushop"))


def cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(os.environ.get("GPUSHOP_CACHE_DIR") or user_cache_dir("gpushop"))


def data_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(os.environ.get("GPUSHOP_DATA_DIR") or user_data_dir("gpushop"))


def profile_path(profile: str) -> Path:
    return config_dir() / f"{profile}.toml"


class _ProfileSource(PydanticBaseSettingsSource):
    """Values from the profile's TOML file (lower priority than the environment)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self.values: dict[str, Any] = {}
        if path is None:
            return
        try:
            raw = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"profile file {path} does not exist") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read profile file {path}: {exc}") from None
        known = set(settings_cls.model_fields)
        for key, value in raw.items():
            name = key.lower()
            if name not in known:
                raise ConfigError(f"unknown setting {key!r} in {path}")
            self.values[name] = value

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self.values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.values)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    vastai_api_key: SecretStr | None = None
    vastai_url: str = DEFAULT_VASTAI_URL
    vastai_preferred_gpus: Annotated[list[str], NoDecode] = Field(default_factory=list)
    vastai_max_bid_per_hour: float | None = Field(default=None, gt=0)
    vastai_ssh_key_path: Path | None = None
    tensordock_api_token: SecretStr | None = None
    tensordock_url: str = DEFAULT_TENSORDOCK_URL
    tensordock_vcpu_per_gpu: int = Field(default=DEFAULT_TENSORDOCK_VCPU_PER_GPU, ge=1, le=256)
    tensordock_ram_gb_per_gpu: int = Field(default=DEFAULT_TENSORDOCK_RAM_GB_PER_GPU, ge=1, le=2048)
    gpushop_db_url: str | None = None
    gpushop_budget_usd: float | None = Field(default=None, ge=0)
    gpushop_redis_url: SecretStr | None = None
    # what every key gpushop writes in Redis starts with (two deployments may share one Redis)
    gpushop_redis_prefix: str = "gpushop:"
    gpushop_profile: Literal["development", "staging", "production"] | None = None
    gpushop_market_ttl: float = Field(default=60.0, ge=0)
    # Pace every call at the provider's published limits (shared by the processes of this
    # machine). False: no client-side pacing, for a server without limits such as
    # `gpushop emulator --no-rate-limit`; a 429 is still waited out and retried.
    gpushop_rate_limit: bool = True
    # `gpushop serve`: requests a user's token may make, as `limits` writes rates
    # ("20/second;600/minute"); shared by replicas through GPUSHOP_REDIS_URL when set
    gpushop_api_rate_limit: str = "20/second;600/minute"
    # Encrypts the secrets the service keeps (webhook signing secrets): one Fernet key or a long
    # passphrase, or several comma-separated while rotating (store/secret_box.py)
    gpushop_secret_key: SecretStr | None = None
    # Webhook URLs may resolve to loopback/private/link-local addresses (tests, a lab); the
    # production profile refuses it
    gpushop_webhook_allow_private: bool = False
    gpushop_webhook_timeout: float = Field(default=15.0, gt=0, le=60)
    # Multiplies the retry schedule's delays (Standard Webhooks: 5 s ... 24 h); tests compress it
    gpushop_webhook_retry_scale: float = Field(default=1.0, gt=0, le=1)
    # How often a replica looks for due deliveries when nothing woke it (a change this replica
    # made wakes it at once)
    gpushop_webhook_poll: float = Field(default=1.0, gt=0, le=60)
    # The sync job (reconcile + charges) runs once per tick of this many seconds, across replicas
    gpushop_sync_interval: float = Field(default=60.0, gt=0)
    # Work a replica owns (provisioning, supervising) is held under a lease this long, renewed
    # every third of it; a replica that dies is taken over within two lease periods
    gpushop_lease_seconds: float = Field(default=30.0, gt=0)
    # Jobs submitted to the service keep their inputs and artifacts here: a folder every
    # replica mounts at the same path (default: the data dir, for a single replica)
    gpushop_artifacts_dir: Path | None = None
    # The largest archive of inputs (or dataset) a job submission may upload
    gpushop_max_upload_bytes: int = Field(default=2 * 1024**3, gt=0)
    # The CLI as a client of a team service: with both set (or after `gpushop login URL`, whose
    # file these override), offers, market, up, ps, down, ssh and costs go to the service
    gpushop_server: str | None = None
    gpushop_token: SecretStr | None = None

    @field_validator("vastai_preferred_gpus", mode="before")
    @classmethod
    def _split_gpus(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("vastai_url")
    @classmethod
    def _strip_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value.endswith("/api/v0"):
            value = value[: -len("/api/v0")]
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("gpushop_server")
    @classmethod
    def _server_url(cls, value: str | None) -> str | None:
        return None if value is None or not value.strip() else server_url(value)

    @field_validator("tensordock_url")
    @classmethod
    def _tensordock_url(cls, value: str) -> str:
        """The API root, ``.../api/v2``; a bare server root gets ``/api/v2`` appended."""
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        if "/" not in value.split("://", 1)[1]:
            value += "/api/v2"
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _ProfileSource(settings_cls, _active_profile_path()))

    @property
    def db_url(self) -> str:
        if self.gpushop_db_url:
            return self.gpushop_db_url
        return f"sqlite:///{data_dir() / 'gpushop.db'}"


def server_url(value: str) -> str:
    """A team service's root URL as gpushop keeps it: ``http(s)://host[:port][/prefix]``, no
    trailing slash, no user or password in it (the token travels in a header)."""
    value = value.strip().rstrip("/")
    try:
        parts = urlsplit(value)
    except ValueError:
        raise ValueError("must be a URL such as https://gpushop.example.com") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must start with http:// or https:// and name a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry a user or password (the token goes in GPUSHOP_TOKEN)")
    if parts.query or parts.fragment:
        raise ValueError("must be the service's root URL, without ?query or #fragment")
    return value


def _active_profile_path() -> Path | None:
    profile = os.environ.get("GPUSHOP_PROFILE", "").strip().lower()
    if not profile:
        return None
    if profile not in PROFILES:
        raise ConfigError(f"GPUSHOP_PROFILE must be one of {', '.join(PROFILES)}, not {profile!r}")
    return profile_path(profile)


def load_settings(**overrides: Any) -> Settings:
    """Load the effective settings; a bad value is one clear ConfigError (never its value)."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]).upper() or "configuration"
            problems.append(f"{name}: {err['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None


def mask(value: str) -> str:
    """Show that a secret is set without revealing it (the last 4 characters at most)."""
    if len(value) <= 8:
        return "****"
    return "****" + value[-4:]


def mask_url(text: str) -> str:
    """``scheme://user:****@host/...``: a URL's password hidden, everything else kept (so the
    host and database stay readable). Text that is no URL, or has no password, is unchanged."""
    try:
        parts = urlsplit(text)
        password = parts.password
    except ValueError:  # a malformed port or bracket: no password can be told apart
        return text
    if not parts.scheme or not password:
        return text
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:****@{hostinfo}"))


# Values that are credentials whatever the variable is called: the well-known token prefixes
# (Hugging Face, OpenAI/Anthropic, GitHub, GitLab, Slack, AWS access keys, npm, PyPI, our own
# service tokens and webhook secrets), each followed by enough token characters that an
# ordinary word (``sk-learn``) is not taken for one. Searched anywhere in the value, so that
# ``--token hf_...`` inside a longer value counts too.
_TOKEN_VALUE = re.compile(
    r"(?<![\w./-])(?:"
    r"(?:hf_|gh[pousr]_|npm_)[A-Za-z0-9]{20,}"  # alphanumeric bodies: no `hf_model_v2` path
    r"|(?:sk-|glpat-|xox[abposr]-|pypi-|gps_)[\w-]{20,}"
    r"|github_pat_\w{40,}|whsec_[A-Za-z0-9+/=]{20,}|(?:AKIA|ASIA)[0-9A-Z]{16})"
)


# Variables that hold a secret by their name (HF_TOKEN, WANDB_API_KEY, DB_PASSWORD...).
_SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)


def names_a_secret(name: str) -> bool:
    """Whether a variable's name says it holds a secret, whatever its value."""
    return bool(_SECRET_NAME.search(name))


def looks_like_credential(value: str) -> bool:
    """Whether a value carries a credential: a URL with a password, or a well-known token."""
    value = value.strip()
    return _TOKEN_VALUE.search(value) is not None or mask_url(value) != value


def describe(settings: Settings) -> list[tuple[str, str, str]]:
    """(VARIABLE, shown value, source) for ``gpushop config``; secrets masked."""
    profile = _active_profile_path()
    file_values = _ProfileSource(Settings, profile).values if profile and profile.exists() else {}
    rows: list[tuple[str, str, str]] = []
    for name in Settings.model_fields:
        env_name = name.upper()
        value = getattr(settings, name)
        if env_name in os.environ:
            source = "env"
        elif name in file_values:
            source = f"profile {profile}"
        else:
            source = "default"
        if value is None or value == []:
            shown = "-"
        elif isinstance(value, SecretStr):
            shown = mask(value.get_secret_value())
        elif isinstance(value, list):
            shown = ",".join(value)
        else:
            shown = str(value)
        if name == "gpushop_db_url" and value is None:
            shown = f"{settings.db_url} (default)"
        shown = mask_url(shown)  # GPUSHOP_DB_URL and any other URL may carry a password
        rows.append((env_name, shown, source))
    return rows
