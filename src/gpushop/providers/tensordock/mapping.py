"""TensorDock v2 JSON <-> domain models. Pure functions, tested with the recorded fixtures.

The v2 envelope is not consistent between endpoints (reference 2.10), so every reader here
accepts each shape seen: hostnodes under ``data.hostnodes`` or ``data``; instance lists under
``data.instances``, ``data.attributes.instances`` or ``data``, with ``name``/``status`` in
``attributes`` or at the top; instance details flat or wrapped in ``data``. An answer of no known
shape is an error, never "nothing": reconcile must not read a changed API as "no instances".

Offers: one per hostnode, GPU model and GPU count that fits (``pricing.size_vm``), with the id
``<hostnode uuid>:<v0Name>:<count>`` (``tensordock:...`` once prefixed by the provider name).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from random import Random
from typing import Any

from gpushop import gpus
from gpushop.errors import BadRequest, OfferUnavailable, ProviderUnavailable
from gpushop.models import Instance, InstanceStatus, Offer
from gpushop.providers.tensordock import pricing
from gpushop.providers.tensordock.countries import iso_code

NAME = "tensordock"
DISPLAY_NAME = "TensorDock"
SSH_USER = "user"  # TensorDock's VM images log in as "user" (reference 2.6)
NAME_MAX = 60  # longer VM names are refused (found by dstack; undocumented)
DEFAULT_IMAGE = "ubuntu2404"  # the slug the docs deploy; TensorDock images carry NVIDIA drivers
DOCKER_IMAGE_FILE = "/etc/gpushop/docker-image"
ENV_FILE = "/etc/gpushop/env"
# Location tiers run 0..4 (higher: a better datacenter). TensorDock has no "verified" flag: a
# host in a rated datacenter (tier >= 1) counts as verified, tier >= 3 as a datacenter.
VERIFIED_TIER = 1
DATACENTER_TIER = 3
# Docker images that only stand for "a plain machine" on Vast.ai: a TensorDock VM already is one.
PLAIN_IMAGES = frozenset({"vastai/base-image"})
_VM_IMAGE = re.compile(r"^(ubuntu|debian|centos|rocky|almalinux|fedora|windows)\d[0-9a-z.]*$")
_NAME_BAD = re.compile(r"[^A-Za-z0-9._-]+")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _unexpected(what: str) -> ProviderUnavailable:
    return ProviderUnavailable(f"{DISPLAY_NAME} returned an unexpected {what}", provider=NAME)


def _int(value: Any, default: int = 0) -> int:
    if value is None or isinstance(value, bool):
        return default
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return default


def _float(value: Any) -> float | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _flatten(item: dict[str, Any]) -> dict[str, Any]:
    """A JSON:API-ish object with its ``attributes`` merged in (top-level keys win)."""
    attributes = item.get("attributes")
    merged = dict(attributes) if isinstance(attributes, dict) else {}
    merged.update({k: v for k, v in item.items() if k != "attributes" and v is not None})
    return merged


# -- hostnodes and offers -----------------------------------------------------------------


def hostnode_list(data: Any) -> list[dict[str, Any]]:
    """The hostnodes of a ``GET /hostnodes`` answer."""
    body = data.get("data") if isinstance(data, dict) and "data" in data else data
    if isinstance(body, dict):
        body = body.get("hostnodes", (body.get("attributes") or {}).get("hostnodes"))
    if not isinstance(body, list):
        raise _unexpected("hostnode list")
    return [_flatten(n) for n in body if isinstance(n, dict) and n.get("id")]


def hostnode_body(data: Any) -> dict[str, Any]:
    """The hostnode of a ``GET /hostnodes/{id}`` answer (wrapped in ``data`` or flat)."""
    body = data.get("data") if isinstance(data, dict) and "data" in data else data
    if isinstance(body, dict) and isinstance(body.get("hostnode"), dict):
        body = body["hostnode"]
    if not isinstance(body, dict) or not body.get("id"):
        raise _unexpected("hostnode")
    return _flatten(body)


def make_offer_id(hostnode_id: str, v0_name: str, count: int) -> str:
    return f"{hostnode_id}:{v0_name}:{count}"


def parse_offer_id(offer_id: str) -> tuple[str, str, int]:
    """``<hostnode>:<v0Name>:<count>`` (with or without the ``tensordock:`` prefix)."""
    parts = offer_id.removeprefix(f"{NAME}:").split(":")
    if len(parts) != 3 or not all(parts) or not parts[2].isdigit() or int(parts[2]) < 1:
        raise BadRequest(f"not a TensorDock offer id: {offer_id!r}", provider=NAME)
    return parts[0], parts[1], int(parts[2])


def reliability(node: dict[str, Any]) -> float | None:
    """The host's uptime as a fraction (``uptime_percentage`` is in percent)."""
    uptime = _float(node.get("uptime_percentage"))
    if uptime is None:
        return None
    return min(1.0, max(0.0, uptime / 100.0))


def location_text(location: dict[str, Any]) -> str:
    """ "Chicago, Illinois, US" (Vast.ai writes "Illinois, US")."""
    country = location.get("country")
    parts = [location.get("city"), location.get("stateprovince"), iso_code(country) or country]
    out: list[str] = []
    for part in parts:
        text = str(part).strip() if part else ""
        if text and (not out or out[-1].lower() != text.lower()):
            out.append(text)
    return ", ".join(out) or "?"


def reachable(available: dict[str, Any]) -> bool:
    """Whether SSH can reach a VM there: a free port to forward, or a public IP."""
    return bool(available.get("available_ports")) or bool(available.get("has_public_ip_available"))


def offers_from_hostnode(
    node: dict[str, Any],
    *,
    disk_gb: float,
    sizing: pricing.Sizing,
    all_counts: bool = True,
) -> list[Offer]:
    """Every configuration the node can host: each GPU model with free GPUs, each count from
    one to all of them (only one GPU when ``all_counts`` is False). Sold-out models, counts that
    do not fit the node's CPU, RAM or storage, and nodes SSH cannot reach give no offer."""
    available = node.get("available_resources")
    if not isinstance(available, dict) or not reachable(available):
        return []
    caps = pricing.caps_from(available)
    out: list[Offer] = []
    for entry in available.get("gpus") or []:
        if not isinstance(entry, dict) or not entry.get("v0Name"):
            continue
        free = _int(entry.get("availableCount"))
        for count in range(1, (free if all_counts else min(free, 1)) + 1):
            res = pricing.size_vm(count, disk_gb, caps, sizing)
            if res is not None:
                out.append(make_offer(node, entry, res))
    return out


def make_offer(node: dict[str, Any], gpu: dict[str, Any], res: pricing.Resources) -> Offer:
    """The offer for ``res`` (GPU count, vCPUs, RAM, storage) of one GPU model on a node."""
    available = node.get("available_resources") or {}
    location = node.get("location") if isinstance(node.get("location"), dict) else {}
    assert isinstance(location, dict)
    v0_name = str(gpu["v0Name"])
    prices = pricing.unit_prices(node.get("pricing") or {}, gpu.get("price_per_hr"))
    compute = pricing.compute_price(res, prices)
    storage = pricing.storage_price(res, prices)
    tier = _int(location.get("tier"), default=-1)
    down = _float(location.get("network_speed_gbps"))
    up = _float(location.get("network_speed_upload_gbps"))
    node_id = str(node["id"])
    return Offer(
        provider=NAME,
        offer_id=make_offer_id(node_id, v0_name, res.gpu_count),
        gpu_name=gpus.canonical(v0_name),
        gpu_variant=v0_name,
        num_gpus=res.gpu_count,
        gpu_ram_gb=gpus.vram_gb(v0_name) or 0.0,
        price_per_hour=pricing.hourly_price(res, prices),
        gpu_price_per_hour=compute,
        storage_price_per_hour=storage,
        disk_gb=float(res.storage_gb),
        disk_available_gb=float(pricing.caps_from(available).storage_gb or 0),
        reliability=reliability(node),
        verified=tier >= VERIFIED_TIER,
        datacenter=tier >= DATACENTER_TIER,
        location=location_text(location),
        country=iso_code(location.get("country")),
        inet_up_mbps=up * 1000.0 if up is not None else None,
        inet_down_mbps=down * 1000.0 if down is not None else None,
        cuda=None,  # the API reports no driver or CUDA version
        driver=None,
        dlperf=None,
        min_bid=None,
        interruptible=False,
        machine_id=node_id,
        cpu_cores=float(res.vcpus),
        ram_gb=float(res.ram_gb),
        provider_data={
            "hostnode_id": node_id,
            "location_id": node.get("location_id") or location.get("uuid"),
            "v0_name": v0_name,
            "vcpus": res.vcpus,
            "ram_gb": res.ram_gb,
            "storage_gb": res.storage_gb,
            "per_gpu_hr": prices.per_gpu_hr,
            "per_vcpu_hr": prices.per_vcpu_hr,
            "per_gb_ram_hr": prices.per_gb_ram_hr,
            "per_gb_storage_hr": prices.per_gb_storage_hr,
            "tier": tier if tier >= 0 else None,
            "public_ip": bool(available.get("has_public_ip_available")),
            "free_ports": len(available.get("available_ports") or []),
        },
    )


# -- instances ----------------------------------------------------------------------------

_STATUS: dict[str, InstanceStatus] = {
    "running": InstanceStatus.RUNNING,
    "starting": InstanceStatus.LOADING,
    "booting": InstanceStatus.LOADING,
    "rebooting": InstanceStatus.LOADING,
    "restarting": InstanceStatus.LOADING,
    "provisioning": InstanceStatus.PROVISIONING,
    "creating": InstanceStatus.PROVISIONING,
    "deploying": InstanceStatus.PROVISIONING,
    "pending": InstanceStatus.PROVISIONING,
    "stopping": InstanceStatus.STOPPED,
    "stopped": InstanceStatus.STOPPED,
    "stoppeddisassociated": InstanceStatus.STOPPED,
    "error": InstanceStatus.FAILED,
    "failed": InstanceStatus.FAILED,
    "deleting": InstanceStatus.GONE,
    "deleted": InstanceStatus.GONE,
    "terminated": InstanceStatus.GONE,
}
RELEASED = "stoppeddisassociated"  # stopped with the GPU given back: bills storage only


def normalize_status(status: Any) -> str:
    """ "StoppedDisassociated", "stopped_disassociated" -> "stoppeddisassociated"."""
    return re.sub(r"[\s_-]", "", str(status or "")).lower()


def instance_status(status: Any, ip: str | None = None) -> InstanceStatus:
    """The normalised status; ``running`` without an IP yet is still booting."""
    word = normalize_status(status)
    if not word:
        return InstanceStatus.PROVISIONING
    found = _STATUS.get(word, InstanceStatus.OFFLINE)
    if found is InstanceStatus.RUNNING and not ip:
        return InstanceStatus.LOADING
    return found


def instance_list(data: Any) -> list[dict[str, Any]]:
    """The instances of a ``GET /instances`` answer, each flattened (``id``, ``name``,
    ``status``...), whichever of the documented list shapes it came in."""
    body = data.get("data") if isinstance(data, dict) and "data" in data else data
    if isinstance(body, dict):
        attributes = body.get("attributes")
        if isinstance(attributes, dict) and "instances" in attributes:
            body = attributes["instances"]
        elif "instances" in body:
            body = body["instances"]
    if body is None:
        return []
    if not isinstance(body, list):
        raise _unexpected("instance list")
    return [_flatten(i) for i in body if isinstance(i, dict) and i.get("id")]


def instance_body(data: Any) -> dict[str, Any]:
    """The instance of a ``GET /instances/{id}`` answer: flat (documented) or in ``data``."""
    body = data
    if isinstance(body, dict) and not body.get("id") and isinstance(body.get("data"), dict):
        body = body["data"]
    if not isinstance(body, dict) or not body.get("id"):
        raise _unexpected("instance")
    return _flatten(body)


def _forwards(raw: dict[str, Any]) -> list[tuple[int, int]]:
    """(internal, external) port pairs; a v0-style ``{external: internal}`` map is accepted."""
    value = raw.get("portForwards", raw.get("port_forwards"))
    pairs: list[tuple[int, int]] = []
    if isinstance(value, dict):
        for ext, internal in value.items():
            pairs.append((_int(internal), _int(ext)))
    elif isinstance(value, list):
        for entry in value:
            if isinstance(entry, dict):
                pairs.append((_int(entry.get("internal_port")), _int(entry.get("external_port"))))
    return [(i, e) for i, e in pairs if i > 0 and e > 0]


def ssh_endpoint(raw: dict[str, Any]) -> tuple[str | None, int | None]:
    """(host, port) for SSH: the public IP and the external port forwarded to 22 (22 itself on
    a dedicated IP without a forward). Nothing until the VM has an IP."""
    ip = str(raw.get("ipAddress") or raw.get("ip_address") or "").strip() or None
    if ip is None:
        return None, None
    for internal, external in _forwards(raw):
        if internal == 22:
            return ip, external
    return ip, 22


def _gpus(resources: dict[str, Any]) -> list[tuple[str, int]]:
    """(v0Name, count) of a VM's ``resources.gpus`` (a map; a list is accepted too)."""
    value = resources.get("gpus")
    out: list[tuple[str, int]] = []
    if isinstance(value, dict):
        for key, spec in value.items():
            spec = spec if isinstance(spec, dict) else {"count": spec}
            out.append((str(spec.get("v0Name") or key), _int(spec.get("count"), default=1)))
    elif isinstance(value, list):
        for spec in value:
            if isinstance(spec, dict) and (spec.get("v0Name") or spec.get("gpuV0Name")):
                name = str(spec.get("v0Name") or spec.get("gpuV0Name"))
                out.append((name, _int(spec.get("count"), default=1)))
    return out


def instance_from_tensordock(raw: dict[str, Any]) -> Instance:
    """One VM (a detail, or a list item when that is all there is) as an ``Instance``."""
    raw = _flatten(raw)
    host, port = ssh_endpoint(raw)
    resources = raw.get("resources") if isinstance(raw.get("resources"), dict) else {}
    assert isinstance(resources, dict)
    models = _gpus(resources)
    variant = models[0][0] if models else None
    status = normalize_status(raw.get("status"))
    name = raw.get("name")
    return Instance(
        provider=NAME,
        instance_id=str(raw["id"]),
        status=instance_status(status, host),
        raw_status=status or None,
        label=str(name) if name else None,
        gpu_name=gpus.canonical(variant) if variant else "?",
        num_gpus=sum(count for _, count in models),
        price_per_hour=_float(raw.get("rateHourly")),
        ssh_host=host,
        ssh_port=port,
        # the public IP is the only way in: direct and "proxy" endpoints are the same
        direct_ssh_host=host,
        direct_ssh_port=port,
        status_msg=(str(raw["message"]).strip() if raw.get("message") else None),
        image=(str(raw["image"]) if raw.get("image") else None),
        provider_data={
            "gpu_variant": variant,
            "gpu_released": status == RELEASED,
            "vcpus": _int(resources.get("vcpu_count")) or None,
            "ram_gb": _int(resources.get("ram_gb")) or None,
            "storage_gb": _int(resources.get("storage_gb")) or None,
            "port_forwards": [{"internal_port": i, "external_port": e} for i, e in _forwards(raw)],
            "ssh_user": SSH_USER,
        },
    )


# -- create -------------------------------------------------------------------------------


def vm_name(label: str) -> str:
    """The VM name that carries our label: the label itself (``gpushop-<deployment>-<rental>``
    passes unchanged); other characters become ``-`` and the name is cut at 60 characters."""
    name = _NAME_BAD.sub("-", label.strip())[:NAME_MAX]
    if not name:
        raise BadRequest("a TensorDock VM needs a name (the rental's label)", provider=NAME)
    return name


def name_prefix(label_prefix: str) -> str:
    """A label prefix as VM names carry it (same substitution as ``vm_name``)."""
    return _NAME_BAD.sub("-", label_prefix.strip())


def vm_image(image: str | None) -> tuple[str, str | None]:
    """(TensorDock OS image slug, Docker image to record on the VM) for a requested image.

    TensorDock rents VMs from OS images. A slug (``ubuntu2204``) is used as is; anything else
    is a Docker image: the VM gets the default Ubuntu image (NVIDIA drivers, Docker) and the
    Docker image is recorded in ``/etc/gpushop/docker-image`` for ``docker run``. Vast.ai's base
    image only stands for "a plain machine" and records nothing.
    """
    if not image or not image.strip():
        return DEFAULT_IMAGE, None
    text = image.strip()
    if _VM_IMAGE.match(text.lower()):
        if text.lower().startswith("windows"):
            raise BadRequest(
                "Windows images are not supported: gpushop reaches its instances over SSH",
                provider=NAME,
            )
        return text.lower(), None
    repository = text.split("@", 1)[0]
    if ":" in repository.rsplit("/", 1)[-1]:
        repository = repository.rsplit(":", 1)[0]
    if repository in PLAIN_IMAGES:
        return DEFAULT_IMAGE, None
    return DEFAULT_IMAGE, text


def cloud_init(
    *, onstart: str | None, env: dict[str, str], docker_image: str | None
) -> dict[str, Any] | None:
    """The structured ``cloud_init`` of a create: ``onstart`` runs once at first boot (one
    ``runcmd`` entry, as root), ``env`` is written to ``/etc/gpushop/env`` (``docker run
    --env-file`` format) and the Docker image to ``/etc/gpushop/docker-image``."""
    files: list[dict[str, str]] = []
    if docker_image:
        files.append({"path": DOCKER_IMAGE_FILE, "content": docker_image + "\n"})
    if env:
        lines = []
        for key, value in env.items():
            if not _ENV_KEY.match(key) or "\n" in value:
                raise BadRequest(
                    f"environment variable {key!r} cannot be passed to a TensorDock VM",
                    provider=NAME,
                )
            lines.append(f"{key}={value}\n")
        files.append({"path": ENV_FILE, "content": "".join(lines), "permissions": "0644"})
    out: dict[str, Any] = {}
    if files:
        out["write_files"] = files
    if onstart and onstart.strip():
        out["runcmd"] = [onstart]
    return out or None


def plan_ports(
    internal: Sequence[int], available: Sequence[int], public_ip: bool, rng: Random
) -> tuple[list[tuple[int, int]], bool]:
    """(internal, external) forwards for SSH (22) and ``internal``, external ports drawn at
    random from the node's free ones (so two creates on one node rarely pick the same), or
    ``([], True)``: a dedicated IP when the node has too few free ports but a public IP."""
    wanted = [22, *(p for p in dict.fromkeys(internal) if p != 22)]
    free = sorted({_int(p) for p in available if _int(p) > 0})
    if len(free) >= len(wanted):
        return list(zip(wanted, sorted(rng.sample(free, len(wanted))), strict=True)), False
    if public_ip:
        return [], True
    raise OfferUnavailable(
        f"the hostnode has {len(free)} free port(s), {len(wanted)} needed", provider=NAME
    )


def create_body(
    *,
    name: str,
    hostnode_id: str,
    v0_name: str,
    res: pricing.Resources,
    image: str,
    forwards: Sequence[tuple[int, int]],
    dedicated_ip: bool,
    ssh_key: str | None = None,
    ssh_key_id: str | None = None,
    init: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``POST /instances`` body for a hostnode-placed VM (reference 2.5)."""
    if (ssh_key is None) == (ssh_key_id is None):
        raise ValueError("exactly one of ssh_key and ssh_key_id")
    resources: dict[str, Any] = {
        "vcpu_count": res.vcpus,
        "ram_gb": res.ram_gb,
        "storage_gb": res.storage_gb,
    }
    if res.gpu_count:
        resources["gpus"] = {v0_name: {"count": res.gpu_count}}
    attributes: dict[str, Any] = {
        "name": name,
        "type": "virtualmachine",
        "image": image,
        "hostnode_id": hostnode_id,
        "resources": resources,
    }
    if forwards:
        attributes["port_forwards"] = [
            {"internal_port": internal, "external_port": external}
            for internal, external in forwards
        ]
    if dedicated_ip:
        attributes["useDedicatedIp"] = True  # sent only when true (reference 2.5)
    if ssh_key_id is not None:
        attributes["ssh_key_id"] = ssh_key_id
    else:
        attributes["ssh_key"] = ssh_key
    if init:
        attributes["cloud_init"] = init
    return {"data": {"type": "virtualmachine", "attributes": attributes}}


def created_instance(data: Any) -> tuple[str | None, str | None]:
    """(instance id, status) of a ``POST /instances`` answer; (None, None) without an id."""
    body = data.get("data") if isinstance(data, dict) and "data" in data else data
    if not isinstance(body, dict):
        return None, None
    body = _flatten(body)
    if not body.get("id"):
        return None, None
    return str(body["id"]), (normalize_status(body.get("status")) or None)


def secret_list(data: Any) -> list[dict[str, Any]]:
    """The secrets of a ``GET /secrets`` answer: ``id``, ``name``, ``type``."""
    body = data.get("data") if isinstance(data, dict) and "data" in data else data
    if isinstance(body, dict):
        body = body.get("secrets", (body.get("attributes") or {}).get("secrets"))
    if body is None:
        return []
    if not isinstance(body, list):
        raise _unexpected("secret list")
    return [_flatten(s) for s in body if isinstance(s, dict) and s.get("id")]
