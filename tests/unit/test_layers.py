"""The layering rules of DESIGN.md, checked on the source: imports point down only, and the
emulator imports nothing from the client side (so tests against it check the published API)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "gpushop"

# what each layer may import from gpushop (besides itself)
CORE = {
    "gpushop",
    "gpushop.models",
    "gpushop.errors",
    "gpushop.config",
    "gpushop.gpus",
    "gpushop.units",
    "gpushop.offer_flags",
    "gpushop.offer_ids",
    "gpushop.matching",
    "gpushop.metrics",  # counters the layers update where things happen (/metrics)
}
ALLOWED = {
    "emulator": set(),
    "providers": CORE,
    "market": CORE | {"gpushop.providers.base"},
    "store": CORE,
    "ssh": CORE,  # a transport, like providers/
    # fleet rents what the market ranks: it may use the market, never the other way round
    "fleet": CORE | {"gpushop.providers.base", "gpushop.market", "gpushop.store", "gpushop.ssh"},
    "shop.py": CORE
    | {"gpushop.market", "gpushop.providers", "gpushop.fleet", "gpushop.store", "gpushop.ssh"},
    # jobs run on what fleet rents, over ssh
    "jobs": CORE | {"gpushop.providers.base", "gpushop.fleet", "gpushop.store", "gpushop.ssh"},
    # recipes are pure domain logic (configs, estimates, parsers): no I/O layer below them
    "recipes": {"gpushop.models", "gpushop.errors", "gpushop.gpus", "gpushop.units"},
    # the service layer: what a command or a request does, below every face
    "service": CORE
    | {
        "gpushop.market",
        "gpushop.providers",
        "gpushop.fleet",
        "gpushop.store",
        "gpushop.ssh",
        "gpushop.jobs",
        "gpushop.recipes",
        "gpushop.shop",
        "gpushop.net_guard",  # outbound requests to users' URLs (webhooks), SSRF-checked
    },
    # a client of a team service (`gpushop serve`) over HTTP: nothing of the local machinery
    "client": CORE,
    # a face: parse, call the service (or the Shop facade, or a team service's client), render;
    # the market's result types (`gpushop emulator` and `gpushop serve` start the emulator and
    # the HTTP face)
    "cli": CORE
    | {
        "gpushop.market",
        "gpushop.service",
        "gpushop.shop",
        "gpushop.emulator",
        "gpushop.api",
        "gpushop.client",
    },
    # the HTTP face: the same rule
    "api": CORE | {"gpushop.market", "gpushop.service", "gpushop.shop"},
    "demo.py": None,
}


def gpushop_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found.update(n for n in names if n == "gpushop" or n.startswith("gpushop."))
    return found


def layer_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.name


def allowed(name: str, layer: str) -> bool:
    rules = ALLOWED.get(layer, CORE)
    if rules is None or name.startswith(f"gpushop.{layer}"):
        return True
    return any(name == r or name.startswith(r + ".") for r in rules if r != "gpushop") or (
        name == "gpushop" and "gpushop" in rules
    )


def test_imports_point_down_only() -> None:
    bad = set()
    for path in SRC.rglob("*.py"):
        layer = layer_of(path)
        if layer in ("__init__.py", "__main__.py"):
            continue
        for name in gpushop_imports(path):
            if not allowed(name, layer):
                bad.add(f"{path.relative_to(SRC)} imports {name}")
    assert sorted(bad) == []


def test_the_emulator_imports_nothing_from_the_client_side() -> None:
    for path in (SRC / "emulator").rglob("*.py"):
        for name in gpushop_imports(path):
            assert name.startswith("gpushop.emulator"), f"{path.name} imports {name}"


# third-party packages that do network, SSH or database I/O
IO_PACKAGES = ("httpx", "asyncssh", "sqlalchemy", "alembic", "psycopg", "redis", "requests")


def third_party_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
    return found


def test_recipes_are_pure_no_io_package_is_imported() -> None:
    paths = list((SRC / "recipes").rglob("*.py"))
    assert paths, "the recipes package is missing"
    for path in paths:
        bad = third_party_imports(path) & set(IO_PACKAGES)
        assert not bad, f"recipes/{path.name} imports {sorted(bad)}"
