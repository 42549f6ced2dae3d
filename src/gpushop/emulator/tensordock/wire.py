"""TensorDock v2 bodies, field for field as in shared/fixtures/tensordock/v2/.

Hostnodes show what is free now (GPUs per model, vCPUs, RAM, storage, ports; the `max_*` caps
of one VM are the free amounts); a location's entry for a GPU model is the one hostnode that
offers it there, with the per-GPU caps times `max_count` (as the fixtures derive it) and sold-out
models left out.
"""

from __future__ import annotations

from typing import Any

from gpushop.emulator.tensordock.market import Hostnode, Location
from gpushop.emulator.tensordock.state import SSH_HOST, TdState, Vm


def hostnode(state: TdState, node: Hostnode, now: float) -> dict[str, Any]:
    free = state.free(node, now)
    resources: dict[str, Any] = {
        "gpus": [
            {
                "v0Name": g.v0_name,
                "availableCount": free["gpus"][g.v0_name],
                "price_per_hr": g.price,
            }
            for g in node.gpus
        ],
        "vcpu_count": free["vcpus"],
        "ram_gb": free["ram_gb"],
        "storage_gb": free["storage_gb"],
    }
    if node.vcpus_per_gpu is not None:  # CPU-only nodes have no per-GPU caps (fixture #9)
        resources["max_vcpus_per_gpu"] = node.vcpus_per_gpu
        resources["max_ram_per_gpu"] = node.ram_per_gpu
    resources.update(
        {
            "max_vcpus": free["vcpus"],
            "max_ram_gb": free["ram_gb"],
            "max_storage_gb": free["storage_gb"],
            "available_ports": state.free_ports(node),
            "has_public_ip_available": node.public_ip,
        }
    )
    loc = node.location
    return {
        "id": node.id,
        "location_id": loc.id,
        "engine": "kvm",
        "uptime_percentage": node.uptime,
        "available_resources": resources,
        "pricing": _pricing(node),
        "location": {
            "uuid": loc.id,
            "city": loc.place.city,
            "stateprovince": loc.place.stateprovince,
            "country": loc.place.country,
            "has_network_storage": loc.has_network_storage,
            "network_speed_gbps": node.network_gbps,
            "network_speed_upload_gbps": node.upload_gbps,
            "organization": node.organization,
            "organizationName": node.organization_name,
            "tier": loc.tier,
        },
    }


def location(state: TdState, loc: Location, now: float) -> dict[str, Any]:
    gpus = []
    for node in state.market.hostnodes:
        if node.location.id != loc.id:
            continue
        free = state.free(node, now)
        for g in node.gpus:
            count = free["gpus"][g.v0_name]
            if count <= 0:
                continue
            assert node.vcpus_per_gpu is not None and node.ram_per_gpu is not None
            gpus.append(
                {
                    "v0Name": g.v0_name,
                    "displayName": g.model.display_name,
                    "max_count": count,
                    "price_per_hr": g.price,
                    "resources": {
                        "max_vcpus": min(free["vcpus"], node.vcpus_per_gpu * count),
                        "max_ram_gb": min(free["ram_gb"], node.ram_per_gpu * count),
                        "max_storage_gb": free["storage_gb"],
                    },
                    "pricing": _pricing(node),
                    "network_features": {
                        "dedicated_ip_available": node.public_ip,
                        "port_forwarding_available": True,
                        "network_storage_available": loc.has_network_storage,
                    },
                }
            )
    return {
        "id": loc.id,
        "city": loc.place.city,
        "stateprovince": loc.place.stateprovince,
        "country": loc.place.country,
        "tier": loc.tier,
        "gpus": gpus,
    }


def _pricing(node: Hostnode) -> dict[str, float]:
    return {
        "per_vcpu_hr": node.per_vcpu_hr,
        "per_gb_ram_hr": node.per_gb_ram_hr,
        "per_gb_storage_hr": node.per_gb_storage_hr,
    }


def instance(state: TdState, vm: Vm, now: float) -> dict[str, Any]:
    """`GET /instances/{id}`: flat (the documented shape) unless the emulator is set to wrap it
    in `data`."""
    status, _ = state.status(vm, now)
    gpus = {}
    if vm.gpu_model is not None:
        gpus[vm.gpu_model] = {"count": vm.gpu_count, "v0Name": vm.gpu_model}
    body = {
        "type": "virtualmachine",
        "id": vm.id,
        "name": vm.name,
        "status": status,
        "ipAddress": SSH_HOST if vm.has_booted else "",
        "portForwards": [{"internal_port": i, "external_port": e} for i, e in vm.forwards],
        "resources": {
            "vcpu_count": vm.vcpus,
            "ram_gb": vm.ram_gb,
            "storage_gb": vm.storage_gb,
            "gpus": gpus,
        },
        "rateHourly": vm.rate_hourly,  # the quote, even once released (reference 2.9)
    }
    if state.config.tensordock_detail_shape == "wrapped":
        return {"data": body}
    return body


def instances(state: TdState, now: float) -> dict[str, Any]:
    """`GET /instances` in the configured shape (reference 2.10)."""
    shape = state.config.tensordock_list_shape
    rows = [(vm, state.status(vm, now)[0]) for vm in state.vms.values()]
    if shape == "array":
        return {
            "data": [
                {"type": "instance", "id": vm.id, "name": vm.name, "status": status}
                for vm, status in rows
            ]
        }
    kind = "VM" if shape == "instances" else "instance"
    items = [
        {"type": kind, "id": vm.id, "attributes": {"name": vm.name, "status": status}}
        for vm, status in rows
    ]
    if shape == "attributes":
        return {"data": {"type": "list", "id": "instances", "attributes": {"instances": items}}}
    return {"data": {"instances": items}}


def created(vm: Vm) -> dict[str, Any]:
    return {"data": {"type": "virtualmachine", "id": vm.id, "name": vm.name, "status": "running"}}


def action(vm: Vm, status: str) -> dict[str, Any]:
    return {"data": {"type": "instance", "id": vm.id, "attributes": {"status": status}}}


def message(text: str) -> dict[str, Any]:
    return {"data": {"type": "success", "attributes": {"message": text}}}
