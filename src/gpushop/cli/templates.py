"""``gpushop templates``: search the provider's launch templates (Vast.ai ``GET /template/``).

A template's hash goes to ``gpushop up --template HASH`` (and to a recipe's ``--template``).
The provider filters what its API can express, and the rest is matched here: ``--query`` is a
case-insensitive substring of the name, the ``image:tag`` or the description; a query that is an
image reference (``owner/repo`` or ``owner/repo:tag``) is also sent as an exact ``image`` filter,
and the unfiltered search is tried when that finds nothing. Without an API key the search is
anonymous (public templates only, with a warning); a wrong key is refused (exit 4). Environment
strings and onstart scripts of templates are never shown (private ones may hold tokens).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Protocol, runtime_checkable

import typer

from gpushop.cli.common import print_json, run_async, settings, warn
from gpushop.errors import (
    NoMatchError,
    ProviderError,
    ProviderUnavailable,
    UsageError,
)

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


def templates(
    query: Annotated[
        str | None,
        typer.Option(
            "--query",
            "-q",
            help=(
                "Case-insensitive substring of the name, image:tag or description, matched"
                " locally; an image name (owner/repo[:tag]) is also sent to the provider as an"
                " exact image filter (the API has no substring search)."
            ),
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many to show.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for programs.")] = False,
) -> None:
    """Search launch templates (most created first); use a hash with --template HASH."""
    if not 1 <= limit <= 1000:
        raise UsageError("--limit must be between 1 and 1000")
    if query is not None and not query.strip():
        raise UsageError("--query must not be empty")
    cfg = settings()

    async def go() -> tuple[list[dict[str, Any]], list[str]]:
        from gpushop.shop import Shop

        async with Shop(cfg) as shop:
            return await search(shop.providers(), query)

    found, warnings = run_async(go())
    for message in warnings:
        warn(message)
    if not found:
        what = f" matches {query.strip()!r}" if query else "s were found"
        raise NoMatchError(f"no template{what}")
    found.sort(key=_sort_key)
    shown = [template_json(t) for t in found[:limit]]
    if as_json:
        print_json(shown)
        return
    _table(shown, len(found), query)


def _fmt(value: float | None, spec: str, prefix: str = "") -> str:
    return "?" if value is None else prefix + format(value, spec)


def _table(rows: list[dict[str, Any]], total: int, query: str | None) -> None:
    from rich.table import Table

    from gpushop.cli.render import console

    about = f" matching {query.strip()!r}" if query else ""
    title = f"Templates{about}: {len(rows)} of {total}, most created first"
    table = Table(title=title, title_justify="left", header_style="bold", pad_edge=False)
    for name, justify in [
        ("hash_id", "left"),
        ("name", "left"),
        ("image:tag", "left"),
        ("disk", "right"),
        ("run", "left"),
        ("CUDA", "right"),
        ("VRAM", "right"),
        ("created", "right"),
    ]:
        table.add_column(name, justify=justify, no_wrap=name in ("hash_id", "created"))  # type: ignore[arg-type]
    for r in rows:
        image = r["image"] + (f":{r['tag']}" if r["tag"] else "")
        table.add_row(
            r["hash_id"],
            r["name"] + (" [dim](private)[/dim]" if r["private"] else ""),
            image,
            _fmt(r["recommended_disk_gb"], "g") + ("GB" if r["recommended_disk_gb"] else ""),
            r["runtype"],
            _fmt(r["min_cuda"], "g", ">="),
            _fmt(r["min_gpu_ram_gb"], "g", ">=") + ("GB" if r["min_gpu_ram_gb"] else ""),
            _fmt(r["count_created"], ","),
        )
    console().print(table)


def register(app: typer.Typer) -> None:
    app.command()(templates)
