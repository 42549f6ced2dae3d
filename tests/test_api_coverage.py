"""docs/api-coverage.md stays true: its columns against the emulator's routes and the clients
(Vast.ai first, then the TensorDock v2 section)."""

from __future__ import annotations

import re
from pathlib import Path

from gpushop.emulator.routes import ROUTES
from gpushop.emulator.tensordock.api import PREFIX as TD_PREFIX
from gpushop.emulator.tensordock.api import ROUTES as TD_ROUTES

ROOT = Path(__file__).resolve().parents[1]
PAIR = re.compile(r"`(?:(GET|POST|PUT|DELETE)(?: / (GET|POST|PUT|DELETE))? )?(/[^`?]*)")


def norm(path: str) -> str:
    path = path.strip()
    if not path.startswith("/api/"):
        path = "/api/v0" + path
    return path if path.endswith("/") else path + "/"


TD_HEADING = "# TensorDock API v2 coverage"


def rows(section: str = "vastai") -> list[tuple[set[str], str, str]]:
    text = (ROOT / "docs" / "api-coverage.md").read_text()
    vast, _, tensordock = text.partition(TD_HEADING)
    if section == "tensordock":
        return td_rows(tensordock)
    out = []
    for line in vast.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or cells[1].startswith(("method", "---")) or "_emulator" in cells[1]:
            continue
        endpoints: set[str] = set()
        for m1, m2, path in PAIR.findall(cells[1]):
            for method in filter(None, (m1, m2)):
                endpoints.add(f"{method} {norm(path)}")
        out.append((endpoints, cells[2], cells[3]))
    return out


def client_endpoints() -> set[str]:
    src = (ROOT / "src/gpushop/providers/vastai/provider.py").read_text()
    return {
        f"{m} {norm(p)}" for m, p in re.findall(r'endpoint="(GET|POST|PUT|DELETE) ([^"]+)"', src)
    }


def test_every_row_names_endpoints() -> None:
    table = rows()
    assert len(table) >= 30
    assert all(endpoints for endpoints, _, _ in table)


def test_emulator_column_matches_its_routes() -> None:
    served = {r.endpoint for r in ROUTES}
    documented_yes: set[str] = set()
    for endpoints, _, emulated in rows():
        if emulated == "yes":
            assert endpoints <= served, (
                f"documented as emulated but not served: {endpoints - served}"
            )
            documented_yes |= endpoints
        else:
            assert not endpoints & served, f"served but documented as not: {endpoints & served}"
    assert served <= documented_yes, f"served but missing from the doc: {served - documented_yes}"


def test_client_column_matches_the_client() -> None:
    used = client_endpoints()
    documented_yes: set[str] = set()
    for endpoints, client, _ in rows():
        if client == "yes":
            assert endpoints <= used, f"documented as used but not called: {endpoints - used}"
            documented_yes |= endpoints
    assert used <= documented_yes, f"called but missing from the doc: {used - documented_yes}"


# -- TensorDock v2: paths relative to the API root, no trailing slash --------------------------
def td_rows(text: str) -> list[tuple[set[str], str, str]]:
    out = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or cells[1].startswith(("method", "---")):
            continue
        endpoints = {
            f"{method} {path.rstrip('/')}"
            for m1, m2, path in PAIR.findall(cells[1])
            for method in filter(None, (m1, m2))
        }
        out.append((endpoints, cells[2], cells[3]))
    return out


def test_tensordock_rows_name_endpoints() -> None:
    table = rows("tensordock")
    assert len(table) >= 12
    assert all(endpoints for endpoints, _, _ in table)


def test_tensordock_emulator_column_matches_its_routes() -> None:
    served = {f"{r.method} {r.template.removeprefix(TD_PREFIX)}" for r in TD_ROUTES}
    documented = set()
    for endpoints, _, emulated in rows("tensordock"):
        if emulated == "yes":
            assert endpoints <= served, f"documented but not served: {endpoints - served}"
            documented |= endpoints
        else:
            assert not endpoints & served, f"served but documented as not: {endpoints & served}"
    assert served == documented


def test_tensordock_client_column_matches_the_client() -> None:
    src = ROOT / "src/gpushop/providers/tensordock"
    text = "".join(p.read_text() for p in sorted(src.glob("*.py"))) if src.is_dir() else ""
    used = {
        f"{m} {p.rstrip('/')}"
        for m, p in re.findall(r'endpoint="(GET|POST|PUT|DELETE) ([^"]+)"', text)
    }
    documented = set()
    for endpoints, client, _ in rows("tensordock"):
        if client == "yes":
            assert endpoints <= used, f"documented as used but not called: {endpoints - used}"
            documented |= endpoints
    assert used <= documented, f"called but missing from the doc: {used - documented}"
