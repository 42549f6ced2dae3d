"""Vast.ai JSON → domain models. Pure functions, tested with the recorded fixtures."""

from __future__ import annotations

import datetime as dt
from typing import Any

from gpushop import gpus
from gpushop.models import Instance, InstanceStatus, Offer

NAME = "vastai"
HOURS_PER_MONTH = 720.0  # Vast prices storage per GB per month of 30 days


def _f(raw: dict[str, Any], key: str) -> float | None:
    value = raw.get(key)
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _country(geolocation: str | None) -> str | None:
    """ "Oregon, US" → "US": the last part is the ISO country code."""
    if not geolocation:
        return None
    tail = geolocation.strip().split(",")[-1].strip()
    return tail.upper() if len(tail) == 2 and tail.isalpha() else None


def offer_from_vast(raw: dict[str, Any], *, disk_gb: float, interruptible: bool) -> Offer:
    """Normalise one offer. The price is recomputed for ``disk_gb`` from the per-GB storage
    rate, so it does not depend on the ``allocated_storage`` the server priced with."""
    variant = str(raw.get("gpu_name") or "?")
    num_gpus = int(raw.get("num_gpus") or 1)
    storage_rate = (_f(raw, "storage_cost") or 0.0) / HOURS_PER_MONTH  # $/GB/h
    storage = storage_rate * disk_gb
    min_bid = _f(raw, "min_bid")
    base = _f(raw, "dph_base")
    if base is None:  # answers without dph_base: back out storage from dph_total
        total = _f(raw, "dph_total") or 0.0
        base = max(0.0, total - (_f(raw, "storage_total_cost") or 0.0))
    gpu_price = min_bid if interruptible and min_bid is not None else base
    reliability = _f(raw, "reliability2")
    if reliability is None:
        reliability = _f(raw, "reliability")
    vericode = raw.get("vericode")
    verified = vericode == 1 if vericode is not None else raw.get("verification") == "verified"
    cores = _f(raw, "cpu_cores_effective")
    ram = _f(raw, "cpu_ram")
    all_cores = _f(raw, "cpu_cores")
    ram_gb = None
    if ram is not None and cores and all_cores:
        ram_gb = ram / 1000.0 * cores / all_cores  # our share of the host's RAM
    geolocation = raw.get("geolocation")
    return Offer(
        provider=NAME,
        offer_id=str(raw["id"]),
        gpu_name=gpus.canonical(variant),
        gpu_variant=variant,
        num_gpus=num_gpus,
        gpu_ram_gb=(_f(raw, "gpu_ram") or 0.0) / 1000.0,
        price_per_hour=gpu_price + storage,
        gpu_price_per_hour=gpu_price,
        storage_price_per_hour=storage,
        disk_gb=disk_gb,
        disk_available_gb=_f(raw, "disk_space") or 0.0,
        reliability=reliability,
        verified=verified,
        datacenter=raw.get("hosting_type") == 1,
        location=str(geolocation).strip() if geolocation else "?",
        country=_country(geolocation),
        inet_up_mbps=_f(raw, "inet_up"),
        inet_down_mbps=_f(raw, "inet_down"),
        cuda=_f(raw, "cuda_max_good"),
        driver=raw.get("driver_version"),
        dlperf=_f(raw, "dlperf"),
        min_bid=min_bid,
        interruptible=interruptible,
        machine_id=str(raw["machine_id"]) if raw.get("machine_id") is not None else None,
        cpu_cores=cores,
        ram_gb=ram_gb,
        provider_data={"storage_cost_per_gb_month": _f(raw, "storage_cost") or 0.0},
    )


_STATUS = {
    None: InstanceStatus.PROVISIONING,
    "loading": InstanceStatus.LOADING,
    "rebooting": InstanceStatus.LOADING,
    "recycling": InstanceStatus.LOADING,
    "running": InstanceStatus.RUNNING,
    "exited": InstanceStatus.STOPPED,
    "stopped": InstanceStatus.STOPPED,
    "frozen": InstanceStatus.STOPPED,
    "offline": InstanceStatus.OFFLINE,
    "unknown": InstanceStatus.OFFLINE,
}


def instance_status(raw: dict[str, Any]) -> InstanceStatus:
    actual = raw.get("actual_status")
    if actual == "created":
        # A container that was created but not started; with an OCI error it never will be.
        msg = str(raw.get("status_msg") or "")
        return InstanceStatus.FAILED if "error" in msg.lower() else InstanceStatus.PROVISIONING
    if actual is None and raw.get("intended_status") == "stopped":
        return InstanceStatus.STOPPED
    return _STATUS.get(actual, InstanceStatus.OFFLINE)


def _direct_ssh(raw: dict[str, Any]) -> tuple[str | None, int | None]:
    ports = raw.get("ports") or {}
    ip = str(raw.get("public_ipaddr") or "").strip() or None
    if not isinstance(ports, dict):
        return None, None
    mapping = ports.get("22/tcp") or []
    for entry in mapping:
        try:
            return ip, int(entry["HostPort"])
        except (KeyError, TypeError, ValueError):
            continue
    return None, None


def instance_from_vast(raw: dict[str, Any]) -> Instance:
    direct_host, direct_port = _direct_ssh(raw)
    start = _f(raw, "start_date")
    ssh_port = raw.get("ssh_port")
    return Instance(
        provider=NAME,
        instance_id=str(raw["id"]),
        status=instance_status(raw),
        raw_status=raw.get("actual_status"),
        label=raw.get("label"),
        gpu_name=gpus.canonical(str(raw.get("gpu_name") or "?")),
        num_gpus=int(raw.get("num_gpus") or 0),
        price_per_hour=_f(raw, "dph_total"),
        ssh_host=(str(raw["ssh_host"]).strip() if raw.get("ssh_host") else None),
        ssh_port=int(ssh_port) if ssh_port not in (None, "") else None,
        direct_ssh_host=direct_host,
        direct_ssh_port=direct_port,
        status_msg=(str(raw["status_msg"]).strip() if raw.get("status_msg") else None),
        started_at=dt.datetime.fromtimestamp(start, tz=dt.UTC) if start else None,
        image=raw.get("image_uuid"),
        provider_data={
            "intended_status": raw.get("intended_status"),
            "cur_state": raw.get("cur_state"),
            "is_bid": raw.get("is_bid"),
            "min_bid": _f(raw, "min_bid"),  # the offer's current minimum bid (what wins now)
        },
    )
