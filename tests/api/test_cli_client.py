"""The CLI as a client of the team service: with GPUSHOP_SERVER and GPUSHOP_TOKEN (or after
`gpushop login`), offers, market, up, ps, down, ssh and costs go to a real `gpushop serve` on the
emulator, and a user sees what the same command shows locally on the same data: the same --json
keys, the same table headers, the same exit codes; errors are one line without the token."""

from __future__ import annotations

import io
import json
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncssh
import httpx
import pytest

from cli_run import cli
from waiting import until

from .conftest import free_port

Run = tuple[int, str, str]
RENT = ("--min-vram", "24", "--max-duration", "1h")


class Modes:
    """Runs the CLI in-process, locally or as one user of the service."""

    def __init__(self, capsys: Any, monkeypatch: pytest.MonkeyPatch, url: str) -> None:
        self.capsys, self.monkeypatch, self.url = capsys, monkeypatch, url

    def user(self, *argv: str) -> str:
        code, out, err = self.local("users", "add", *argv)
        assert code == 0, err
        return out.strip()

    def local(self, *argv: str) -> Run:
        self.monkeypatch.delenv("GPUSHOP_SERVER", raising=False)
        self.monkeypatch.delenv("GPUSHOP_TOKEN", raising=False)
        return cli(self.capsys, *argv)

    def remote(self, token: str, *argv: str, server: str | None = None) -> Run:
        self.monkeypatch.setenv("GPUSHOP_SERVER", server or self.url)
        self.monkeypatch.setenv("GPUSHOP_TOKEN", token)
        code, out, err = cli(self.capsys, *argv)
        assert token not in out + err
        return code, out, err

    def both(self, token: str, *argv: str) -> tuple[Run, Run]:
        return self.local(*argv), self.remote(token, *argv)


@pytest.fixture
def modes(
    serve: Any, environment: dict[str, str], capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> Modes:
    url, _ = serve(environment)
    return Modes(capsys, monkeypatch, url)


def header(table: str) -> list[str]:
    """A rich table's column names (its first row drawn with heavy verticals)."""
    row = next(line for line in table.splitlines() if line.startswith("┃"))
    return [name.strip() for name in row.strip("┃").split("┃")]


def title(table: str) -> str:
    return table.splitlines()[0].strip()


def one_line_error(run: Run, code: int) -> str:
    assert run[0] == code, run
    lines = run[2].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpushop: error: "), run[2]
    return lines[0]


def test_offers_market_and_costs_show_what_they_show_locally(modes: Modes) -> None:
    ann = modes.user("ann", "--admin")
    bob = modes.user("bob")

    local, remote = modes.both(ann, "offers", "--gpu", "4090", "--json")
    assert local[0] == remote[0] == 0, (local, remote)
    mine, theirs = json.loads(local[1]), json.loads(remote[1])
    assert theirs and [o["id"] for o in theirs] == [o["id"] for o in mine]
    assert [set(o) for o in theirs] == [set(o) for o in mine]
    local, remote = modes.both(ann, "offers", "--min-vram", "24", "-n", "5")
    assert local[0] == remote[0] == 0
    assert title(remote[1]) == title(local[1])  # the same query
    assert header(remote[1]) == header(local[1])
    assert len(remote[1].splitlines()) == len(local[1].splitlines())

    local, remote = modes.both(ann, "market", "--json")
    assert local[0] == remote[0] == 0
    mine, theirs = json.loads(local[1]), json.loads(remote[1])
    assert set(theirs) == set(mine) and theirs["total_offers"] == mine["total_offers"]
    assert [m["gpu_name"] for m in theirs["models"]] == [m["gpu_name"] for m in mine["models"]]
    assert [set(m) for m in theirs["models"]] == [set(m) for m in mine["models"]]
    local, remote = modes.both(ann, "market")
    assert title(remote[1]) == title(local[1])
    assert header(remote[1]) == header(local[1])

    local, remote = modes.both(ann, "costs", "--json")
    assert local[0] == remote[0] == 0, remote
    assert set(json.loads(remote[1])) == set(json.loads(local[1]))
    local, remote = modes.both(ann, "costs", "--days", "3")
    assert remote[1].split(":")[0] == local[1].split(":")[0]  # "Costs <from> .. <to>"

    # a bad flag: exit 2 with the same line, before anything is asked
    local, remote = modes.both(ann, "offers", "--limit", "0")
    assert one_line_error(remote, 2) == one_line_error(local, 2)
    # the account's costs are an admin's: one line, "not allowed" (exit 4)
    assert "admin" in one_line_error(modes.remote(bob, "costs"), 4)
    assert modes.remote(ann, "config")[0] == 0  # shows GPUSHOP_TOKEN masked (never the token)
    # a token the service does not know: one line, exit 4, the token nowhere
    wrong = "gps_" + "x" * 43
    line = one_line_error(modes.remote(wrong, "ps"), 4)
    assert "token is not valid" in line and f"gpushop login {modes.url}" in line


def test_up_ps_down_as_locally_and_only_ones_own(modes: Modes, emulator: Any) -> None:
    ann, bob = modes.user("ann"), modes.user("bob")
    code, out, err = modes.local("up", *RENT, "--json")
    assert code == 0, err
    here = json.loads(out)
    code, out, err = modes.remote(ann, "up", *RENT)
    assert code == 0, err
    shape = (
        r"(r\w+) ready in \d+s: \d+x [\w ]+ at \$[\d.]+/h on vastai instance \d+; "
        r"released by [\d-]+ [\d:]+ UTC\n  ssh -p \d+ root@[\d.]+   \(or: gpushop ssh \1\)\n"
        r"  release: gpushop down \1\n"
    )
    assert re.fullmatch(shape, out), out
    theirs = out.split()[0]
    code, out, err = modes.remote(ann, "up", *RENT, "--json", "--no-wait")
    assert code == 0, err
    assert set(json.loads(out)) == set(here)
    third = json.loads(out)["rental_id"]

    def state(rental_id: str) -> str:
        rows = json.loads(modes.remote(ann, "ps", "--json")[1])
        return str(next(r["state"] for r in rows if r["rental_id"] == rental_id))

    # --no-wait answered once it had an instance; the service goes on until it is ready
    until(lambda: state(third) == "ready", "the service to finish what --no-wait left")

    # ps: the same rows (the local store is the service's here), only ann's through the service
    local, remote = modes.both(ann, "ps", "--json")
    assert local[0] == remote[0] == 0
    everything = {row["rental_id"]: row for row in json.loads(local[1])}
    shown = json.loads(remote[1])
    assert {row["rental_id"] for row in shown} == {theirs, third}
    assert {here["rental_id"], theirs, third} == set(everything)
    for row in shown:
        assert set(row) == set(everything[row["rental_id"]])
        same = ("provider", "instance_id", "gpu_name", "created_at", "deadline", "price_per_hour")
        assert {k: row[k] for k in same} == {k: everything[row["rental_id"]][k] for k in same}
    local, remote = modes.both(ann, "ps")
    assert header(remote[1]) == header(local[1]) and theirs in remote[1]
    assert here["rental_id"] not in remote[1]

    # another user's rental is one they cannot name: as an unknown one is locally (exit 2)
    unknown = one_line_error(modes.local("down", "rnosuchrental"), 2)
    assert unknown == "gpushop: error: no rental 'rnosuchrental' (see `gpushop ps --all`)"
    for argv in (("down", theirs), ("ssh", theirs, "--", "true"), ("down", "--json", theirs)):
        line = one_line_error(modes.remote(bob, *argv), 2)
        assert line == unknown.replace("rnosuchrental", theirs)
    assert json.loads(modes.remote(bob, "ps", "--json")[1]) == []

    # flags: the same rules (exit 2); one the service cannot take is refused, not dropped
    local, remote = modes.both(ann, "up", *RENT, "--bid", "0.5")
    assert one_line_error(remote, 2) == one_line_error(local, 2)
    assert "--onstart" in one_line_error(modes.remote(ann, "up", *RENT, "--onstart", "x"), 2)
    assert len(json.loads(modes.remote(ann, "ps", "--json")[1])) == 2  # nothing more rented

    local = modes.local("down", here["rental_id"])
    remote = modes.remote(ann, "down", theirs, third)
    assert local == (0, f"{here['rental_id']}: released\n", "")
    assert remote == (0, f"{theirs}: released\n{third}: released\n", "")
    code, out, _ = modes.remote(ann, "down", theirs, "--json")
    assert code == 0 and json.loads(out) == [{"rental_id": theirs, "state": "released"}]
    live = [i for i in emulator.control.state()["instances"] if i["actual_status"] != "destroyed"]
    assert live == []


def test_ssh_reaches_a_services_rental_with_the_users_own_key(
    modes: Modes, environment: dict[str, str], tmp_path: Path
) -> None:
    cat = modes.user("cat")
    key = asyncssh.generate_private_key("ssh-ed25519")
    key_path = tmp_path / "id_ed25519"
    key_path.write_bytes(key.export_private_key())
    key_path.chmod(0o600)
    public = key.export_public_key().decode().strip()
    added = httpx.post(
        f"{modes.url}/v1/me/ssh-keys",
        json={"public_key": public},
        headers={"Authorization": f"Bearer {cat}"},
    )
    assert added.status_code == 201, added.text
    code, out, err = modes.remote(cat, "up", *RENT, "--json")
    assert code == 0, err
    rental = json.loads(out)["rental_id"]
    env = {**environment, "GPUSHOP_SERVER": modes.url, "GPUSHOP_TOKEN": cat}
    argv = [sys.executable, "-m", "gpushop", "ssh", rental, "-i", str(key_path), "--", "echo hi"]

    def logged_in() -> subprocess.CompletedProcess[str] | None:
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
        )
        # the service installs the key once the rental is ready: a moment after
        return done if done.returncode == 0 else None

    done = until(logged_in, "the user's key to log in")
    assert done.stdout == "hi\n" and cat not in done.stdout + done.stderr
    # locally, gpushop reaches its rentals with its own key: no --identity there
    assert "--identity" in one_line_error(modes.local("ssh", rental, "-i", str(key_path)), 2)


def test_login_saves_a_private_file_that_logout_removes(
    modes: Modes, environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    dan = modes.user("dan")
    saved = Path(environment["GPUSHOP_CONFIG_DIR"]) / "login.json"

    def login(token: str) -> Run:
        monkeypatch.setattr(sys, "stdin", io.StringIO(token + "\n"))
        code, out, err = modes.local("login", modes.url, "--token-stdin")
        assert token not in out + err
        return code, out, err

    wrong = "gps_" + "y" * 43
    assert "token is not valid" in one_line_error(login(wrong), 4)
    assert "not a gpushop token" in one_line_error(login("hf_" + "z" * 30), 2)
    assert not saved.exists()
    code, out, err = login(dan)
    assert (code, out) == (0, f"logged in to {modes.url} as dan; saved in {saved}\n"), err
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert json.loads(saved.read_text()) == {"server": modes.url, "token": dan}

    # no variables set: through the service, where the account's costs are an admin's
    assert "admin" in one_line_error(modes.local("costs"), 4)
    assert modes.local("ps", "--json")[:2] == (0, "[]\n")
    # a variable naming another server: the saved token never goes there
    monkeypatch.setenv("GPUSHOP_SERVER", f"http://127.0.0.1:{free_port()}")
    line = one_line_error(cli(modes.capsys, "ps"), 2)
    assert "GPUSHOP_SERVER is set without a token" in line
    monkeypatch.delenv("GPUSHOP_SERVER")

    assert modes.local("logout") == (0, f"logged out of {modes.url}\n", "")
    assert not saved.exists()
    assert modes.local("costs", "--json")[0] == 0  # local again
    assert modes.local("logout")[:2] == (0, "not logged in\n")


def test_a_service_that_does_not_answer_is_one_line_naming_it(
    environment: dict[str, str], capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    modes = Modes(capsys, monkeypatch, url)
    token = "gps_" + "w" * 43
    for argv in (("ps",), ("down", "r123")):
        line = one_line_error(modes.remote(token, *argv), 1)
        assert line.startswith(f"gpushop: error: the gpushop service at {url} does not answer")
