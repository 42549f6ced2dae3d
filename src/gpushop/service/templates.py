"""Launch templates (Vast.ai ``GET /template/``), for every face: what the API can filter on is
sent to it, the rest is matched here (a case-insensitive substring of the name, the image:tag or
the description); the documented JSON form of a template. Environment strings and onstart scripts
of templates are never shown (private ones may hold tokens)."""

from __future__ import annotations

import re
from typing import Any, Protocol, runtime_checkable

from gpushop.errors import ProviderError, ProviderUnavailable, UsageError

_IMAGE_REF = re.compile(r"[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)+(:[A-Za-z0-9_][\w.-]*)?")


@runtime_checkable
class TemplateSearch(Protocol):
    """A provider that can search templates (Vast.ai today)."""

    name: str
    display_name: str

    @property
    def has_credentials(self) -> bool: ...

    async def search_templates(
        self, filters: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]: ...


def server_filters(query: str | None) -> dict[str, Any]:
    """The part of ``query`` the API can filter on: an exact image repository."""
    if query and _IMAGE_REF.fullmatch(query.strip()):
        ref = query.strip()
        slash = ref.rfind("/")
        colon = ref.rfind(":")
        return {"image": {"eq": ref[:colon] if colon > slash else ref}}
    return {}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def image_ref(t: dict[str, Any]) -> str:
    image = _text(t.get("image"))
    tag = _text(t.get("tag")) or _text(t.get("default_tag"))
    return f"{image}:{tag}" if image and tag else image


def matches(t: dict[str, Any], query: str | None) -> bool:
    """Case-insensitive substring of the name, image, image:tag or description."""
    if not query:
        return True
    needle = query.strip().lower()
    hay = (_text(t.get("name")), image_ref(t), _text(t.get("desc")))
    return any(needle in h.lower() for h in hay)


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _floor(extra: Any, *fields: str) -> float | None:
    """The lower bound an ``extra_filters`` entry sets ({"gte": x}, {"gt": x} or {"eq": x})."""
    if not isinstance(extra, dict):
        return None
    for name in fields:
        cond = extra.get(name)
        if isinstance(cond, dict):
            for op in ("gte", "gt", "eq"):
                value = _num(cond.get(op))
                if value is not None:
                    return value
    return None


def run_type(t: dict[str, Any]) -> str:
    """How the instance is reached: the runtype, plus ssh when the template enables it."""
    runtype = _text(t.get("runtype"))
    if not runtype:
        runtype = "ssh" if t.get("use_ssh") else ("jupyter" if t.get("jup_direct") else "args")
    ssh = bool(t.get("use_ssh")) or "ssh" in runtype
    if ssh and "ssh" not in runtype:
        runtype += "+ssh"
    if ssh and t.get("ssh_direct"):
        runtype += " (direct)"
    return runtype


def template_json(t: dict[str, Any]) -> dict[str, Any]:
    """The documented JSON form of a template (docs/templates.md)."""
    extra = t.get("extra_filters")
    vram_mb = _floor(extra, "gpu_ram")
    created = _num(t.get("count_created"))
    disk = _num(t.get("recommended_disk_space"))
    return {
        "hash_id": _text(t.get("hash_id")),
        "id": t.get("id"),
        "name": _text(t.get("name")),
        "image": _text(t.get("image")),
        "tag": _text(t.get("tag")) or _text(t.get("default_tag")),
        "desc": _text(t.get("desc")),
        "recommended_disk_gb": disk,
        "runtype": run_type(t),
        "use_ssh": bool(t.get("use_ssh")),
        "ssh_direct": bool(t.get("ssh_direct")),
        "min_cuda": _floor(extra, "cuda_max_good", "cuda_vers"),
        "min_gpu_ram_gb": None if vram_mb is None else round(vram_mb / 1000.0, 1),
        "count_created": None if created is None else int(created),
        "recommended": bool(t.get("recommended")),
        "private": bool(t.get("private")),
        "href": _text(t.get("href")) or None,
    }


def _sort_key(t: dict[str, Any]) -> tuple[float, str]:
    return (-(_num(t.get("count_created")) or 0.0), _text(t.get("name")).lower())


async def search(providers: list[Any], query: str | None) -> tuple[list[dict[str, Any]], list[str]]:
    """Templates from every provider that has them, filtered by ``query``; and warnings."""
    able = [p for p in providers if isinstance(p, TemplateSearch)]
    if not able:
        raise UsageError("no configured provider offers templates")
    found: list[dict[str, Any]] = []
    warnings: list[str] = []
    failed: list[str] = []
    for provider in able:
        try:
            if not provider.has_credentials:
                # the API answers anonymous searches too, with the public templates only
                warnings.append(
                    f"{provider.name.upper()}_API_KEY is not set: showing public "
                    f"{provider.display_name} templates only, not your private ones"
                )
            filters = server_filters(query)
            templates = await provider.search_templates(filters)
            if filters and not templates:
                templates = await provider.search_templates({})
        except ProviderError as exc:
            if len(able) == 1:
                raise
            failed.append(f"{provider.display_name}: {exc}")  # the others may still answer
            continue
        found += [t for t in templates if matches(t, query)]
    if len(failed) == len(able):
        raise ProviderUnavailable("; ".join(failed))
    warnings += failed
    return found, warnings


def ranked(found: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """The ``limit`` most created templates, as JSON."""
    return [template_json(t) for t in sorted(found, key=_sort_key)[:limit]]
