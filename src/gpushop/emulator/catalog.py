"""Static tables the synthetic market draws from: GPU models, places, CPUs, drivers.

Prices and memory sizes follow section 15 of `reference/vastai-api.md` (early-2026 marketplace
levels); the GPU mix follows what the public market shows (consumer 4090/3090 dominate,
datacenter GPUs are fewer but come more often as 8x machines).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuModel:
    name: str
    ram_mb: int  # per GPU, as nvidia-smi reports it
    price_lo: float  # typical on-demand $/GPU/h range
    price_hi: float
    weight: float  # share of offers
    compute_cap: int  # x100
    tflops: float  # per GPU
    dlperf: float  # Vast DL-perf per GPU (order of magnitude only)
    mem_bw: float  # GB/s
    max_power: float  # W
    tier: str  # "consumer" | "pro" | "datacenter": drives hosting type and GPU counts
    nvlink: float = 0.0  # GB/s on SXM boards
    min_driver: int = 0  # driver major the GPU needs


GPU_MODELS: tuple[GpuModel, ...] = (
    GpuModel("RTX 4090", 24564, 0.26, 0.50, 24, 890, 82.58, 104.0, 1008.0, 450.0, "consumer"),
    GpuModel("RTX 3090", 24576, 0.12, 0.25, 19, 860, 35.58, 46.3, 936.2, 350.0, "consumer"),
    GpuModel("RTX 3060", 12288, 0.04, 0.08, 8, 860, 12.74, 18.5, 360.0, 170.0, "consumer"),
    GpuModel(
        "RTX 5090", 32607, 0.55, 0.90, 8, 1200, 104.8, 151.0, 1792.0, 575.0, "consumer", 0, 570
    ),
    GpuModel("RTX A6000", 49140, 0.40, 0.55, 7, 860, 38.71, 54.2, 768.0, 300.0, "pro"),
    GpuModel("RTX 4080", 16376, 0.15, 0.28, 3, 890, 48.74, 62.0, 716.8, 320.0, "consumer"),
    GpuModel("RTX 3080", 10240, 0.06, 0.12, 3, 860, 29.77, 35.0, 760.3, 320.0, "consumer"),
    GpuModel("RTX A5000", 24564, 0.15, 0.28, 3, 860, 27.77, 40.0, 768.0, 230.0, "pro"),
    GpuModel("Tesla V100", 16384, 0.10, 0.30, 2, 700, 15.67, 45.0, 900.0, 300.0, "datacenter"),
    GpuModel("L4", 23034, 0.25, 0.40, 2, 890, 30.29, 37.2, 300.0, 72.0, "pro"),
    GpuModel("L40S", 46068, 0.55, 0.90, 3, 890, 91.61, 121.5, 864.0, 350.0, "pro"),
    GpuModel("RTX 6000Ada", 49140, 0.65, 0.95, 3, 890, 91.06, 121.0, 960.0, 300.0, "pro"),
    GpuModel("A100 PCIE", 40960, 0.55, 0.80, 2, 800, 19.49, 106.8, 1555.0, 250.0, "datacenter"),
    GpuModel(
        "A100 SXM4", 81920, 0.80, 1.30, 3, 800, 19.49, 130.9, 2039.0, 400.0, "datacenter", 600.0
    ),
    GpuModel("H100 PCIE", 81559, 1.45, 2.00, 1.5, 900, 51.22, 220.4, 2000.0, 350.0, "datacenter"),
    GpuModel(
        "H100 SXM", 81559, 1.60, 2.40, 3, 900, 66.91, 275.0, 3350.0, 700.0, "datacenter", 900.0
    ),
    GpuModel(
        "H200", 143771, 2.20, 3.20, 1, 900, 66.91, 303.9, 4800.0, 700.0, "datacenter", 900.0, 550
    ),
)

# Offer GPU counts per tier: (count, weight). 8x boxes are mostly datacenter GPUs.
GPU_COUNTS: dict[str, tuple[tuple[int, float], ...]] = {
    "consumer": ((1, 70), (2, 17), (4, 10), (8, 3)),
    "pro": ((1, 57), (2, 18), (4, 14), (8, 11)),
    "datacenter": ((1, 40), (2, 15), (4, 12), (8, 33)),
}

# Probability that a machine with this tier of GPU is a datacenter (hosting_type 1); the mix
# above makes that ~20 % of all offers.
DATACENTER_SHARE = {"consumer": 0.08, "pro": 0.35, "datacenter": 0.62}

# "<Region>, <CC>" and weight; the last two characters are what the geolocation filter matches.
LOCATIONS: tuple[tuple[str, float], ...] = (
    ("Texas, US", 6),
    ("California, US", 6),
    ("Oregon, US", 3),
    ("Virginia, US", 4),
    ("Washington, US", 3),
    ("Utah, US", 2),
    ("Ohio, US", 2),
    ("Georgia, US", 2),
    ("New York, US", 3),
    ("Illinois, US", 2),
    ("Nevada, US", 1),
    ("Florida, US", 2),
    ("Quebec, CA", 3),
    ("Ontario, CA", 3),
    ("British Columbia, CA", 1),
    ("Bavaria, DE", 3),
    ("Hesse, DE", 3),
    ("Ile-de-France, FR", 3),
    ("North Holland, NL", 4),
    ("England, GB", 4),
    ("Stockholm County, SE", 2),
    ("Uusimaa, FI", 2),
    ("Oslo, NO", 2),
    ("Masovia, PL", 3),
    ("Prague, CZ", 2),
    ("Tokyo, JP", 3),
    ("Seoul, KR", 2),
    ("Taipei, TW", 2),
    ("New South Wales, AU", 2),
    ("Sao Paulo, BR", 2),
    ("Madrid, ES", 1),
    ("Bucharest, RO", 1),
    ("Capital Region, IS", 1),
    ("Guangdong, CN", 1),
    ("Hanoi, VN", 1),
)

# (driver version, max CUDA it runs, weight)
DRIVERS: tuple[tuple[str, float, float], ...] = (
    ("520.61.05", 11.8, 1),
    ("525.147.05", 12.0, 2),
    ("535.183.01", 12.2, 5),
    ("550.127.05", 12.4, 8),
    ("560.35.03", 12.6, 8),
    ("565.57.01", 12.7, 10),
    ("570.133.07", 12.8, 18),
    ("575.57.08", 12.9, 12),
    ("580.82.07", 13.0, 8),
)

# (cpu_name, vCPUs of the machine, GHz)
CONSUMER_CPUS: tuple[tuple[str, int, float], ...] = (
    ("AMD Ryzen 9 7950X 16-Core Processor", 32, 5.7),
    ("AMD Ryzen 9 5950X 16-Core Processor", 32, 4.9),
    ("AMD Ryzen 9 9950X 16-Core Processor", 32, 5.7),
    ("13th Gen Intel(R) Core(TM) i9-13900K", 32, 5.8),
    ("Intel(R) Core(TM) i7-12700K", 20, 5.0),
    ("AMD Ryzen Threadripper PRO 5975WX 32-Cores", 64, 4.5),
    ("AMD Ryzen Threadripper 3970X 32-Core Processor", 64, 4.5),
)
SERVER_CPUS: tuple[tuple[str, int, float], ...] = (
    ("AMD EPYC 7B13 64-Core Processor", 128, 3.5),
    ("AMD EPYC 7642 48-Core Processor", 96, 3.3),
    ("AMD EPYC 7543 32-Core Processor", 64, 3.7),
    ("AMD EPYC 7282 16-Core Processor", 32, 3.2),
    ("AMD EPYC 9654 96-Core Processor", 384, 3.7),
    ("Xeon® Gold 6338", 128, 3.2),
    ("Intel(R) Xeon(R) Platinum 8480+", 224, 3.8),
)
RAM_SIZES_MB: tuple[int, ...] = (
    64125,
    128468,
    192784,
    257612,
    515886,
    1031720,
    1547821,
    2063573,
)
CONSUMER_BOARDS = (
    "ProArt X670E-CREATOR WIFI",
    "ROG STRIX X570-E GAMING",
    "PRIME Z790-P",
    "B550 AORUS ELITE",
    "WRX80 Creator",
    "X399 Taichi",
)
SERVER_BOARDS = ("ROMED8-2T", "H12SSL-i", "X12DPG-OA6", "MZ73-LM0", "G292-Z20", "H13DSG-O-CPU")
DISKS: tuple[tuple[str, float, float], ...] = (  # name, MB/s lo, hi
    ("Samsung SSD 990 PRO 4TB", 5500.0, 7200.0),
    ("SAMSUNG MZQL27T6HBLA-00A07", 4500.0, 6500.0),
    ("INTEL SSDPE2KX080T8", 2000.0, 3000.0),
    ("Micron_7450_MTFDKCC3T8TFR", 5000.0, 6500.0),
    ("WD_BLACK SN850X 2000GB", 4500.0, 7000.0),
    ("KINGSTON SNV2S2000G", 1800.0, 3200.0),
    ("Samsung SSD 870 EVO 4TB", 400.0, 560.0),
)
OS_VERSIONS: tuple[tuple[str, float], ...] = (("20.04", 15), ("22.04", 65), ("24.04", 20))
IP_PREFIXES = ("192.0.2.", "198.51.100.", "203.0.113.")  # documentation ranges only
