"""The offer flags (``--gpu``, ``--min-vram``...) as an :class:`OfferQuery`; shared by the
commands and by jobs, which store the flags and rebuild the query when they rent again."""

from __future__ import annotations

import math
import re

from gpushop.errors import UsageError
from gpushop.models import OfferQuery

MAX_VRAM_GB = 10_000.0
MAX_DISK_GB = 1_000_000.0
MAX_CUDA = 100.0
MAX_PRICE = 100_000.0


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise UsageError(message)


def build_query(
    *,
    gpu: list[str] | None,
    min_vram: float | None,
    num_gpus: int | None,
    max_price: float | None,
    min_reliability: float,
    disk: float,
    min_cuda: float | None,
    country: list[str] | None,
    interruptible: bool,
    unverified: bool,
    settings_max_price: float | None,
) -> OfferQuery:
    """The OfferQuery the offer flags describe; bad values are one-line usage errors."""
    from gpushop.gpus import parse_gpu_list  # the GPU table loads only when used

    for flag, value in (
        ("--min-vram", min_vram),
        ("--max-price", max_price),
        ("--min-reliability", min_reliability),
        ("--disk", disk),
        ("--min-cuda", min_cuda),
    ):  # 1e309 is inf, and inf or nan would reach the provider's JSON
        _check(value is None or math.isfinite(value), f"{flag} must be a number, not {value}")
    _check(min_vram is None or min_vram >= 0, "--min-vram must not be negative")
    _check(num_gpus is None or num_gpus >= 1, "--num-gpus must be at least 1")
    _check(max_price is None or max_price > 0, "--max-price must be a positive USD/h figure")
    _check(0 <= min_reliability <= 1, "--min-reliability must be between 0 and 1")
    _check(disk > 0, "--disk must be a positive number of GB")
    _check(min_cuda is None or min_cuda > 0, "--min-cuda must be positive, e.g. 12.4")
    # past these no offer exists, and the API's units (GB -> MB) would overflow to inf
    _check(min_vram is None or min_vram <= MAX_VRAM_GB, f"--min-vram: {MAX_VRAM_GB:g} GB at most")
    _check(disk <= MAX_DISK_GB, f"--disk: {MAX_DISK_GB:g} GB at most")
    _check(min_cuda is None or min_cuda <= MAX_CUDA, f"--min-cuda: {MAX_CUDA:g} at most")
    _check(max_price is None or max_price <= MAX_PRICE, f"--max-price: ${MAX_PRICE:g}/h at most")
    countries = [c.strip().upper() for v in country or [] for c in v.split(",") if c.strip()]
    for code in countries:
        _check(bool(re.fullmatch(r"[A-Z]{2}", code)), f"--country {code!r}: use ISO codes like US")
    return OfferQuery(
        gpus=parse_gpu_list(gpu),
        min_vram_gb=min_vram,
        num_gpus=num_gpus,
        max_price=max_price if max_price is not None else settings_max_price,
        min_reliability=min_reliability,
        disk_gb=disk,
        min_cuda=min_cuda,
        countries=countries,
        interruptible=interruptible,
        verified=not unverified,
    )
