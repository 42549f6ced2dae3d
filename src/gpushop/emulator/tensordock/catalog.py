"""Static facts of the emulated TensorDock market: GPU models, places, OS images.

GPU ids are TensorDock's real "v0 names" (reference 3.3; consumer cards carry `geforce`), with the
`displayName` strings of the fixtures, the product name the driver reports (nvidia-smi), memory
and typical early-2026 TensorDock prices per GPU-hour. Countries are full names on the wire, as
TensorDock writes them; `COUNTRY_CODES` maps each one to its ISO 3166-1 alpha-2 code.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuModel:
    v0_name: str
    display_name: str
    driver_name: str  # what nvidia-smi prints
    memory_mib: int
    compute_cap: str
    power_w: int
    price: tuple[float, float]  # USD per GPU-hour, low and high
    counts: tuple[int, ...]  # GPUs per hostnode
    vcpus_per_gpu: tuple[int, ...]
    ram_per_gpu: tuple[int, ...]  # GB
    weight: float  # share of the market's GPU hostnodes


GPU_MODELS: tuple[GpuModel, ...] = (
    GpuModel(
        "geforcertx4090-pcie-24gb",
        "NVIDIA GeForce RTX 4090 PCIe 24GB",
        "NVIDIA GeForce RTX 4090",
        24564,
        "8.9",
        450,
        (0.32, 0.45),
        (1, 2, 4, 8),
        (8, 12, 16),
        (32, 48, 64),
        0.22,
    ),
    GpuModel(
        "geforcertx3090-pcie-24gb",
        "NVIDIA GeForce RTX 3090 PCIe 24GB",
        "NVIDIA GeForce RTX 3090",
        24576,
        "8.6",
        350,
        (0.18, 0.25),
        (2, 4, 5, 8),
        (6, 8),
        (24, 32),
        0.10,
    ),
    GpuModel(
        "rtxa6000-pcie-48gb",
        "NVIDIA RTX A6000 PCIe 48GB",
        "NVIDIA RTX A6000",
        49140,
        "8.6",
        300,
        (0.40, 0.55),
        (1, 2, 4, 8),
        (8, 12),
        (32, 48, 64),
        0.12,
    ),
    GpuModel(
        "rtxa5000-pcie-24gb",
        "NVIDIA RTX A5000 PCIe 24GB",
        "NVIDIA RTX A5000",
        24564,
        "8.6",
        230,
        (0.20, 0.28),
        (2, 4, 8),
        (8,),
        (32, 48),
        0.06,
    ),
    GpuModel(
        "rtxa4000-pcie-16gb",
        "NVIDIA RTX A4000 PCIe 16GB",
        "NVIDIA RTX A4000",
        16376,
        "8.6",
        140,
        (0.10, 0.15),
        (4, 6, 8),
        (4, 6),
        (16, 24),
        0.07,
    ),
    GpuModel(
        "a100-pcie-80gb",
        "A100 PCIe 80GB",
        "NVIDIA A100 80GB PCIe",
        81920,
        "8.0",
        300,
        (0.95, 1.25),
        (1, 2, 4, 8),
        (12, 16, 30),
        (60, 120, 240),
        0.10,
    ),
    GpuModel(
        "a100-sxm4-80gb",
        "A100 SXM4 80GB",
        "NVIDIA A100-SXM4-80GB",
        81920,
        "8.0",
        400,
        (1.10, 1.40),
        (4, 8),
        (16, 24, 30),
        (120, 240),
        0.05,
    ),
    GpuModel(
        "h100-sxm5-80gb",
        "H100 SXM5 80GB",
        "NVIDIA H100 80GB HBM3",
        81559,
        "9.0",
        700,
        (2.00, 2.50),
        (8,),
        (16, 24),
        (180, 225),
        0.07,
    ),
    GpuModel(
        "l40s-pcie-48gb",
        "L40S PCIe 48GB",
        "NVIDIA L40S",
        46068,
        "8.9",
        350,
        (0.85, 1.05),
        (2, 4, 8),
        (16, 24, 32),
        (64, 96, 188),
        0.09,
    ),
    GpuModel(
        "l40-pcie-48gb",
        "L40 PCIe 48GB",
        "NVIDIA L40",
        46068,
        "8.9",
        300,
        (0.80, 0.95),
        (2, 4, 8),
        (16, 32),
        (64, 188),
        0.05,
    ),
    GpuModel(
        "v100-sxm2-16gb",
        "V100 SXM2 16GB",
        "Tesla V100-SXM2-16GB",
        16384,
        "7.0",
        300,
        (0.15, 0.22),
        (2, 4, 8),
        (6, 8),
        (24, 32),
        0.07,
    ),
)
GPUS_BY_NAME: dict[str, GpuModel] = {g.v0_name: g for g in GPU_MODELS}


@dataclass(frozen=True)
class Place:
    city: str
    stateprovince: str
    country: str  # full name, as TensorDock writes it


PLACES: tuple[Place, ...] = (
    Place("Chicago", "Illinois", "United States"),
    Place("Dallas", "Texas", "United States"),
    Place("Ashburn", "Virginia", "United States"),
    Place("Kansas City", "Missouri", "United States"),
    Place("Los Angeles", "California", "United States"),
    Place("Atlanta", "Georgia", "United States"),
    Place("Winnipeg", "Manitoba", "Canada"),
    Place("Montreal", "Quebec", "Canada"),
    Place("Amsterdam", "North Holland", "Netherlands"),
    Place("Frankfurt", "Hesse", "Germany"),
    Place("Prague", "Prague", "Czech Republic"),
    Place("Helsinki", "Uusimaa", "Finland"),
    Place("London", "England", "United Kingdom"),
    Place("Stockholm", "Stockholm County", "Sweden"),
    Place("Singapore", "Singapore", "Singapore"),
    Place("Tokyo", "Tokyo", "Japan"),
)

COUNTRY_CODES: dict[str, str] = {
    "United States": "US",
    "Canada": "CA",
    "Netherlands": "NL",
    "Germany": "DE",
    "Czech Republic": "CZ",
    "Finland": "FI",
    "United Kingdom": "GB",
    "Sweden": "SE",
    "Singapore": "SG",
    "Japan": "JP",
}

# OS image slugs (reference 2.5: ubuntu2404, ubuntu2204, windows10 seen; the rest assumed).
LINUX_IMAGES = ("ubuntu2404", "ubuntu2204", "ubuntu2004", "debian12", "debian11")
WINDOWS_IMAGES = ("windows10", "windows11")
IMAGES = LINUX_IMAGES + WINDOWS_IMAGES

# Hosting companies' names are made of these (fictional).
ORG_FIRST = (
    "Lakeshore",
    "Trinity",
    "Potomac",
    "Noordzee",
    "Rhein",
    "Prairie",
    "Vltava",
    "Aurora",
    "Heartland",
    "Lion City",
    "Granite",
    "Cascade",
    "Northwind",
    "Bluefin",
    "Maple",
    "Sakura",
)
ORG_SECOND = (
    "Compute",
    "GPU Hosting",
    "Datacenters",
    "Cloud",
    "HPC",
    "Rigs",
    "Servers",
    "Metal",
)

# Every node's driver; TensorDock's API shows none of this (nvidia-smi does). CUDA 13.0 drivers
# everywhere: the API gives a client no way to avoid an older one, so none is seeded.
DRIVERS: tuple[tuple[str, str], ...] = (("580.95.05", "13.0"), ("580.82.09", "13.0"))
