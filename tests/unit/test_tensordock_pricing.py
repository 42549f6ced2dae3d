"""TensorDock's hourly price of a configuration, from per-resource prices (reference 2.8)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gpushop.providers.tensordock.pricing import (
    MIN_STORAGE_GB,
    NodeCaps,
    Resources,
    Sizing,
    UnitPrices,
    caps_from,
    compute_price,
    hourly_price,
    size_vm,
    storage_gb,
    storage_price,
    unit_prices,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tensordock"
EXAMPLES = json.loads((FIXTURES / "pricing_examples.json").read_text())["examples"]
ROOMY = NodeCaps(vcpus_free=64, ram_gb_free=256, storage_gb_free=3800)


@pytest.mark.parametrize("ex", EXAMPLES, ids=lambda ex: f"{ex['gpu_count']}x{ex['gpu_v0Name']}")
def test_the_worked_examples_price_as_expected(ex: dict[str, Any]) -> None:
    res = Resources(ex["gpu_count"], ex["vcpu_count"], ex["ram_gb"], ex["storage_gb"])
    prices = UnitPrices(
        ex["per_gpu_hr"] or 0.0, ex["per_vcpu_hr"], ex["per_gb_ram_hr"], ex["per_gb_storage_hr"]
    )
    assert hourly_price(res, prices) == pytest.approx(ex["expected_total_per_hr"], abs=1e-9)
    # v0's split: compute (GPU + CPU + RAM) and storage, which is all a released VM bills
    assert compute_price(res, prices) == pytest.approx(ex["expected_compute_per_hr_v0"], abs=1e-9)
    assert storage_price(res, prices) == pytest.approx(ex["expected_storage_per_hr_v0"], abs=1e-9)


def test_the_reference_example_is_exact() -> None:
    # 1x RTX 4090 at 0.35 with 8 vCPU, 32 GB RAM and 200 GB: 0.35 + 0.024 + 0.064 + 0.01
    prices = unit_prices(
        {"per_vcpu_hr": 0.003, "per_gb_ram_hr": 0.002, "per_gb_storage_hr": 5e-05}, 0.35
    )
    assert hourly_price(Resources(1, 8, 32, 200), prices) == 0.448


@pytest.mark.parametrize(
    ("disk", "expected"), [(0, 100), (32, 100), (100, 100), (100.2, 101), (250, 250)]
)
def test_storage_is_whole_gb_and_never_below_the_minimum(disk: float, expected: int) -> None:
    assert storage_gb(disk) == expected
    assert MIN_STORAGE_GB == 100


def test_default_sizing_is_8_vcpus_and_32_gb_per_gpu() -> None:
    assert size_vm(1, 32, ROOMY, Sizing()) == Resources(1, 8, 32, 100)
    assert size_vm(4, 500, ROOMY, Sizing()) == Resources(4, 32, 128, 500)


def test_sizing_is_overridable() -> None:
    assert size_vm(2, 100, ROOMY, Sizing(vcpu_per_gpu=12, ram_gb_per_gpu=48)) == Resources(
        2, 24, 96, 100
    )


def test_per_gpu_caps_and_free_amounts_cap_the_vm() -> None:
    caps = NodeCaps(
        vcpus_free=26, ram_gb_free=100, storage_gb_free=580, max_vcpus_per_gpu=6, max_ram_per_gpu=24
    )
    assert size_vm(1, 100, caps, Sizing()) == Resources(1, 6, 24, 100)
    # 4 x 6 = 24 vCPUs fit the 26 free; 4 x 24 = 96 GB fit the 100 free
    assert size_vm(4, 100, caps, Sizing()) == Resources(4, 24, 96, 100)
    # 5 x 6 = 30 > 26 free: 26 vCPUs; 5 x 24 = 120 > 100 free: 100 GB
    assert size_vm(5, 100, caps, Sizing()) == Resources(5, 26, 100, 100)


def test_vcpus_are_even() -> None:
    caps = NodeCaps(vcpus_free=7, ram_gb_free=64, storage_gb_free=500)
    res = size_vm(1, 100, caps, Sizing())
    assert res is not None and res.vcpus == 6
    assert size_vm(1, 100, caps, Sizing(vcpu_per_gpu=5)) == Resources(1, 4, 32, 100)


def test_no_vm_when_storage_or_cpu_is_short() -> None:
    assert size_vm(1, 600, NodeCaps(storage_gb_free=580), Sizing()) is None
    assert size_vm(1, 100, NodeCaps(storage_gb_free=580, max_storage_gb=90), Sizing()) is None
    assert size_vm(1, 100, NodeCaps(vcpus_free=1, storage_gb_free=580), Sizing()) is None
    assert size_vm(1, 100, NodeCaps(ram_gb_free=1, storage_gb_free=580), Sizing()) is None


def test_caps_from_a_hostnode_tolerate_missing_and_odd_values() -> None:
    caps = caps_from({"vcpu_count": "40", "ram_gb": 180.0, "storage_gb": None, "max_vcpus": True})
    assert caps == NodeCaps(vcpus_free=40, ram_gb_free=180)
    assert caps.storage_gb is None
    assert unit_prices({}, None) == UnitPrices(0.0, 0.0, 0.0, 0.0)
