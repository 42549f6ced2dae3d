"""A simulated `nvidia-smi` for the instance sandbox: reports the GPUs the offer advertised.

The emulator writes it to `<sandbox>/bin/nvidia-smi` (first on PATH for every SSH command). It is
a small Python script with the GPU facts baked in, answering the forms clients use to check a
host: the plain table (`Driver Version: X    CUDA Version: Y`), `-L`, and
`--query-gpu=... --format=csv[,noheader][,nounits]` (optionally `-i N`). A `lying_host` fault
rewrites it with other facts than the offer's.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Offer `gpu_name` -> the product name the driver reports.
DRIVER_NAMES: dict[str, str] = {
    "RTX 6000Ada": "NVIDIA RTX 6000 Ada Generation",
    "RTX A6000": "NVIDIA RTX A6000",
    "RTX A5000": "NVIDIA RTX A5000",
    "RTX A4000": "NVIDIA RTX A4000",
    "Tesla V100": "Tesla V100-SXM2-16GB",
    "A100 PCIE": "NVIDIA A100-PCIE-40GB",
    "A100 SXM4": "NVIDIA A100-SXM4-80GB",
    "H100 PCIE": "NVIDIA H100 PCIe",
    "H100 SXM": "NVIDIA H100 80GB HBM3",
    "H200": "NVIDIA H200",
    "L4": "NVIDIA L4",
    "L40S": "NVIDIA L40S",
}


def driver_name(gpu_name: str) -> str:
    """`RTX 4090` -> `NVIDIA GeForce RTX 4090`; names already in driver form pass through."""
    if gpu_name.startswith(("NVIDIA", "Tesla")):
        return gpu_name
    if gpu_name in DRIVER_NAMES:
        return DRIVER_NAMES[gpu_name]
    if gpu_name.startswith(("RTX ", "GTX ")):
        return f"NVIDIA GeForce {gpu_name}"
    return f"NVIDIA {gpu_name}"


@dataclass(frozen=True)
class GpuFacts:
    """What the simulated driver reports (per GPU name and memory, for `count` GPUs)."""

    name: str  # driver form, e.g. "NVIDIA GeForce RTX 4090"
    count: int
    memory_mib: int  # per GPU (the offer's gpu_ram, MB as Vast lists it = MiB from nvidia-smi)
    driver_version: str
    cuda_version: str  # the offer's cuda_max_good, e.g. "12.8"
    compute_cap: str  # "8.9"
    power_limit_w: int


def cuda_text(value: Any) -> str:
    """12.8 -> "12.8", 13 -> "13.0" (how nvidia-smi prints it)."""
    number = float(value)
    return f"{number:.1f}"


def facts_from_offer(offer: dict[str, Any], lie: dict[str, Any] | None = None) -> GpuFacts:
    """The offer's GPUs, with the fields of a `lying_host` fault (`gpu_name`, `num_gpus`,
    `gpu_ram`, `cuda`, `driver_version`) replacing the truth."""
    lie = lie or {}
    cap = int(offer.get("compute_cap") or 0)
    return GpuFacts(
        name=driver_name(str(lie.get("gpu_name", offer["gpu_name"]))),
        count=int(lie.get("num_gpus", offer["num_gpus"])),
        memory_mib=int(lie.get("gpu_ram", offer["gpu_ram"])),
        driver_version=str(lie.get("driver_version", offer["driver_version"])),
        cuda_version=cuda_text(lie.get("cuda", offer["cuda_max_good"])),
        compute_cap=f"{cap // 100}.{cap % 100 // 10}" if cap else "8.0",
        power_limit_w=round(float(offer.get("max_power") or 300.0)),
    )


def _interpreter() -> str:
    """The shebang: this Python when its path is usable there, else python3 from PATH."""
    exe = sys.executable
    if exe and len(exe) < 120 and not any(c.isspace() for c in exe) and os.path.exists(exe):
        return f"{exe} -S"
    return "/usr/bin/env python3"


def write(path: Path, facts: GpuFacts) -> None:
    """Write (or rewrite) the executable script at `path`."""
    text = (
        f"#!{_interpreter()}\n"
        "# Simulated by the gpushop Vast.ai emulator: not a real GPU.\n"
        f"FACTS = {json.dumps(asdict(facts))}\n" + _SCRIPT
    )
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o755)
    tmp.replace(path)  # atomic: a command running nvidia-smi never sees half a file


_SCRIPT = r"""
import sys
import time

F = FACTS
UNITS = {"memory.total": "MiB", "memory.used": "MiB", "memory.free": "MiB",
         "memory.reserved": "MiB", "utilization.gpu": "%", "utilization.memory": "%",
         "power.limit": "W", "power.draw": "W", "enforced.power.limit": "W",
         "clocks.sm": "MHz", "clocks.max.sm": "MHz"}


def value(field, i):
    used = 1
    table = {
        "index": str(i), "count": str(F["count"]), "name": F["name"],
        "gpu_name": F["name"], "driver_version": F["driver_version"],
        "uuid": "GPU-%08x-0000-4000-8000-%012x" % (0xE1A0 + i, 0x5EED + i),
        "gpu_uuid": "GPU-%08x-0000-4000-8000-%012x" % (0xE1A0 + i, 0x5EED + i),
        "serial": "%013d" % (1320000000000 + i),
        "pci.bus_id": "00000000:%02X:00.0" % (i + 1), "gpu_bus_id": "00000000:%02X:00.0" % (i + 1),
        "memory.total": str(F["memory_mib"]), "memory.used": str(used),
        "memory.free": str(F["memory_mib"] - used), "memory.reserved": "0",
        "utilization.gpu": "0", "utilization.memory": "0", "temperature.gpu": "34",
        "power.limit": "%.2f" % F["power_limit_w"],
        "enforced.power.limit": "%.2f" % F["power_limit_w"],
        "power.draw": "21.50", "pstate": "P8", "persistence_mode": "Enabled",
        "compute_cap": F["compute_cap"], "compute_mode": "Default", "clocks.sm": "210",
        "clocks.max.sm": "2520", "fan.speed": "30 %", "vbios_version": "95.02.3C.00.01",
        "mig.mode.current": "[N/A]", "display_active": "Disabled", "display_mode": "Disabled",
    }
    return table.get(field)


def query(fields, fmt, ids):
    opts = [o.strip() for o in fmt.split(",")]
    if "csv" not in opts:
        print('"%s" is not a valid format.' % fmt)
        return 2
    for f in fields:
        if value(f, 0) is None:
            print('Field "%s" is not a valid field to query.' % f)
            print()
            return 2
    if "noheader" not in opts:
        print(", ".join(f + (" [%s]" % UNITS[f] if f in UNITS else "") for f in fields))
    for i in ids:
        cells = []
        for f in fields:
            v = value(f, i)
            if f in UNITS and "nounits" not in opts:
                v = v + " " + UNITS[f]
            cells.append(v)
        print(", ".join(cells))
    return 0


def row3(a, b, c, edge="|", sep="|"):
    return edge + a.ljust(41) + sep + b.ljust(24) + sep + c.ljust(22) + edge


def table():
    w = 91
    print(time.strftime("%a %b %d %H:%M:%S %Y").ljust(w))
    line = "+" + "-" * (w - 2) + "+"
    print(line)
    head = "NVIDIA-SMI %s" % F["driver_version"]
    mid = "Driver Version: %s" % F["driver_version"]
    tail = "CUDA Version: %s" % F["cuda_version"]
    print(("| " + head.ljust(34) + mid.ljust(31) + tail).ljust(w - 1) + "|")
    print(row3("-" * 41, "-" * 24, "-" * 22, sep="+"))
    print(row3(" GPU  Name                 Persistence-M", " Bus-Id          Disp.A",
               " Volatile Uncorr. ECC"))
    print(row3(" Fan  Temp   Perf          Pwr:Usage/Cap", "           Memory-Usage",
               " GPU-Util  Compute M."))
    print(row3("", "", "               MIG M."))
    print(row3("=" * 41, "=" * 24, "=" * 22, sep="+"))
    for i in range(F["count"]):
        name = F["name"]
        if len(name) > 28:
            name = name[:25] + "..."
        print(row3(" %3d  %-28s   On  " % (i, name), "   00000000:%02X:00.0 Off " % (i + 1),
                   "                  Off "))
        mem = "%5dMiB / %6dMiB" % (1, F["memory_mib"])
        power = "%dW / %4dW " % (21, F["power_limit_w"])
        print(row3(" 30%   34C    P8" + power.rjust(41 - 16), " %22s " % mem,
                   "      0%      Default "))
        print(row3("", "", "                  N/A "))
        print(row3("-" * 41, "-" * 24, "-" * 22, edge="+", sep="+"))
    print(" " * w)
    print(line)
    print("| Processes:".ljust(w - 1) + "|")
    print("|  GPU   GI   CI              PID   Type   Process name".ljust(w - 12)
          + "GPU Memory |")
    print("|        ID   ID".ljust(w - 12) + "Usage      |")
    print("|" + "=" * (w - 2) + "|")
    print("|  No running processes found".ljust(w - 1) + "|")
    print(line)
    return 0


def main(argv):
    fields = None
    fmt = None
    ids = list(range(F["count"]))
    i = 0
    while i < len(argv):
        a = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else ""
        if a.startswith("--query-gpu="):
            fields = a.split("=", 1)[1]
        elif a == "--query-gpu":
            fields, i = nxt, i + 1
        elif a.startswith("--format="):
            fmt = a.split("=", 1)[1]
        elif a == "--format":
            fmt, i = nxt, i + 1
        elif a.startswith(("-i=", "--id=")):
            ids = [int(x) for x in a.split("=", 1)[1].split(",")]
        elif a in ("-i", "--id"):
            ids, i = [int(x) for x in nxt.split(",")], i + 1
        elif a in ("-L", "--list-gpus"):
            for n in ids:
                print("GPU %d: %s (UUID: %s)" % (n, F["name"], value("uuid", n)))
            return 0
        elif a in ("-h", "--help"):
            print("NVIDIA System Management Interface -- v%s (simulated)" % F["driver_version"])
            return 0
        else:
            print("Invalid combination of input arguments. Please run 'nvidia-smi -h' for help.")
            return 2
        i += 1
    if any(n < 0 or n >= F["count"] for n in ids):
        print("No devices were found")
        return 6
    if fields is not None:
        if fmt is None:
            print("Option --format is required with --query-gpu.")
            return 2
        return query([f.strip() for f in fields.split(",") if f.strip()], fmt, ids)
    return table()


sys.exit(main(sys.argv[1:]))
"""
