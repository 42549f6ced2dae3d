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

from typing import Annotated, Any

import typer

from gpushop.cli.common import print_json, run_async, settings, warn
from gpushop.errors import NoMatchError, UsageError


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
        from gpushop.service.templates import search
        from gpushop.shop import Shop

        async with Shop(cfg) as shop:
            return await search(shop.providers(), query)

    found, warnings = run_async(go())
    for message in warnings:
        warn(message)
    if not found:
        what = f" matches {query.strip()!r}" if query else "s were found"
        raise NoMatchError(f"no template{what}")
    from gpushop.service.templates import ranked

    shown = ranked(found, limit)
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
