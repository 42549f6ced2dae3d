"""Emulator settings: one dataclass shared by `gpushop emulator`, `python -m gpushop.emulator`,
the test fixtures and the control API's `reset` overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

MAX_OFFERS = 20_000
"""Upper bound of the synthetic market: enough for benchmarks, small enough to build in ~1 s."""

# Fields a running emulator may change through `POST /_emulator/reset`; host/port cannot
# change under a bound socket.
RESETTABLE_FIELDS = frozenset(
    {
        "offers",
        "seed",
        "api_key",
        "rate_limit",
        "speed",
        "provision_delay_s",
        "loading_delay_s",
        "boot_delay_s",
        "ssh",
        "max_pids",
        "sftp",
        "retry_after",
        "legacy_list_deprecated",
        "credit",
        "tensordock_token",
        "tensordock_balance",
        "tensordock_list_shape",
        "tensordock_detail_shape",
    }
)
# TensorDock v2 answers GET /instances in several shapes (reference 2.10); "instances" is the
# documented one, the others let clients test that they accept all of them.
TENSORDOCK_LIST_SHAPES = ("instances", "attributes", "array")
TENSORDOCK_DETAIL_SHAPES = ("flat", "wrapped")
# The `sftp` subsystem inside a sandbox: OpenSSH's sftp-server where installed ("auto"), or
# asyncssh's SFTP server run inside ("builtin", also auto's fallback).
SFTP_CHOICES = ("auto", "builtin")


@dataclass
class EmulatorConfig:
    """How the emulated Vast.ai server behaves.

    Delays are in seconds of simulated time; every delay is divided by `speed`, so tests can run
    the whole create → loading → running life of an instance in milliseconds.
    """

    host: str = "127.0.0.1"
    port: int = 0
    offers: int = 600
    seed: int = 0
    api_key: str = "emulator"
    rate_limit: bool = True
    speed: float = 1.0
    provision_delay_s: float = 3.0  # actual_status null -> loading (divided by speed)
    # loading -> running: None = image size / the host's inet_down + boot_delay_s (images.py);
    # a number = that fixed time for every image (both divided by speed)
    loading_delay_s: float | None = None
    boot_delay_s: float = 20.0  # container start after the pull (all of loading when cached)
    ssh: bool = True  # a real SSH endpoint per running instance (off: ports are only numbers)
    max_pids: int = 1024  # processes an instance's sandbox may hold at once (a fork bomb's end)
    sftp: str = "auto"  # SFTP_CHOICES
    retry_after: bool = False  # send Retry-After on 429 (the real API documents none)
    legacy_list_deprecated: bool = False  # GET /api/v0/instances/ answers 410, as on new accounts
    credit: float = (
        100.0  # the account's spendable USD; <= 0 refuses create/start (missing_billing)
    )
    # TensorDock v2 (docs/emulator.md, "TensorDock"): the Bearer token the organization accepts,
    # its balance in USD (create/start need at least $1), and the shapes of list/detail answers
    tensordock_token: str = "tensordock-emulator"
    tensordock_balance: float = 100.0
    tensordock_list_shape: str = "instances"
    tensordock_detail_shape: str = "flat"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError with a one-line, user-facing reason when a value is out of range."""
        if isinstance(self.offers, bool) or not isinstance(self.offers, int):
            raise ValueError(f"offers must be an integer, got {self.offers!r}")
        if not 0 <= self.offers <= MAX_OFFERS:
            raise ValueError(f"offers must be between 0 and {MAX_OFFERS}, got {self.offers}")
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {self.port!r}")
        if not isinstance(self.speed, int | float) or not self.speed > 0:
            raise ValueError(f"speed must be a positive number, got {self.speed!r}")
        for name in ("provision_delay_s", "loading_delay_s", "boot_delay_s"):
            value = getattr(self, name)
            if value is None and name == "loading_delay_s":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if (
            not isinstance(self.api_key, str)
            or not self.api_key
            or any(c.isspace() for c in self.api_key)
        ):
            raise ValueError("api_key must be a non-empty string without whitespace")
        if not isinstance(self.ssh, bool):
            raise ValueError(f"ssh must be true or false, got {self.ssh!r}")
        if isinstance(self.max_pids, bool) or not isinstance(self.max_pids, int):
            raise ValueError(f"max_pids must be an integer, got {self.max_pids!r}")
        if not 16 <= self.max_pids <= 1_000_000:
            raise ValueError(f"max_pids must be between 16 and 1000000, got {self.max_pids}")
        if self.sftp not in SFTP_CHOICES:
            raise ValueError(f"sftp must be one of {', '.join(SFTP_CHOICES)}, got {self.sftp!r}")
        if not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        token = self.tensordock_token
        if not isinstance(token, str) or not token or any(c.isspace() for c in token):
            raise ValueError("tensordock_token must be a non-empty string without whitespace")
        balance = self.tensordock_balance
        if isinstance(balance, bool) or not isinstance(balance, int | float):
            raise ValueError(f"tensordock_balance must be a number, got {balance!r}")
        if self.tensordock_list_shape not in TENSORDOCK_LIST_SHAPES:
            raise ValueError(f"tensordock_list_shape must be one of {TENSORDOCK_LIST_SHAPES}")
        if self.tensordock_detail_shape not in TENSORDOCK_DETAIL_SHAPES:
            raise ValueError(f"tensordock_detail_shape must be one of {TENSORDOCK_DETAIL_SHAPES}")

    def with_overrides(self, overrides: dict[str, Any]) -> EmulatorConfig:
        """A copy with `overrides` applied (only RESETTABLE_FIELDS); raises ValueError."""
        unknown = sorted(set(overrides) - RESETTABLE_FIELDS)
        if unknown:
            raise ValueError(f"cannot override: {', '.join(unknown)}")
        return dataclasses.replace(self, **overrides)

    def public_dict(self) -> dict[str, Any]:
        """The settings as JSON, without the API key (control API answers may end up in logs)."""
        data = dataclasses.asdict(self)
        data.pop("api_key")
        data.pop("tensordock_token")
        return data
