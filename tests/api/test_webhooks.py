"""Webhook endpoints over HTTP against a real `gpushop serve`, and `gpushop webhooks` /
`gpushop secrets` on the store: the signing secret is shown once and kept only encrypted; each
user sees their own endpoints (404 for another's), an admin everyone's; URLs that reach this
network's insides are refused; no GPUSHOP_SECRET_KEY is a 503 with a code; a ping reaches a
receiver signed as Standard Webhooks says."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli_run import cli
from gpushop.config import load_settings
from gpushop.service import webhooks
from gpushop.store import Store
from gpushop.store.secret_box import keygen
from waiting import until

from .conftest import token


@pytest.fixture
def hooks_env(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The service's environment with a secret key, and loopback receivers allowed (tests);
    also this process's, for the CLI."""
    values = {"GPUSHOP_SECRET_KEY": keygen(), "GPUSHOP_WEBHOOK_ALLOW_PRIVATE": "1"}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return {**environment, **values}


def files_holding(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_the_secret_is_shown_once_and_kept_only_encrypted(
    serve: Any, hooks_env: dict[str, str], capsys: Any, tmp_path: Path
) -> None:
    url, _ = serve(hooks_env)
    alice = token(capsys, "alice")
    body = {"url": "http://127.0.0.1:9/hook", "event_types": ["rental.ready", "job.*"]}
    made = httpx.post(f"{url}/v1/webhooks", json=body, headers=alice)
    assert made.status_code == 201, made.text
    created = made.json()
    secret = created["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    assert made.headers["location"] == f"/v1/webhooks/{created['id']}"
    assert made.headers["cache-control"] == "no-store"
    assert created["event_types"] == ["job.*", "rental.ready"] and created["enabled"]
    where = f"{url}/v1/webhooks/{created['id']}"
    shown = httpx.get(where, headers=alice)
    listed = httpx.get(f"{url}/v1/webhooks", headers=alice)
    assert shown.status_code == listed.status_code == 200
    assert shown.json() == {k: v for k, v in created.items() if k != "secret"}
    assert [e["id"] for e in listed.json()] == [created["id"]]
    for answer in (shown, listed):
        assert "secret" not in answer.text and secret[6:] not in answer.text

    rotated = httpx.post(f"{where}/rotate-secret", headers=alice)
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert new.startswith("whsec_") and new != secret and rotated.json()["rotating_until"]
    assert "secret" not in httpx.get(where, headers=alice).text
    # the store holds ciphertext only: neither secret, nor its base64 body, nor its key bytes
    assert (tmp_path / "store.db").exists()
    for plain in (secret, new):
        for needle in (plain.encode(), plain[6:].encode(), base64.b64decode(plain[6:])):
            assert files_holding(tmp_path, needle) == []


def test_each_user_sees_their_own_endpoints_and_an_admin_everyones(
    serve: Any, hooks_env: dict[str, str], capsys: Any
) -> None:
    url, _ = serve(hooks_env)
    alice, bob = token(capsys, "alice"), token(capsys, "bob")
    root = token(capsys, "root", "--admin")
    hooks = f"{url}/v1/webhooks"
    made = httpx.post(hooks, json={"url": "http://127.0.0.1:9/a"}, headers=alice).json()
    assert made["event_types"] == []  # every event alice may see
    mine = httpx.post(hooks, json={"url": "http://127.0.0.1:9/r"}, headers=root).json()
    where = f"{hooks}/{made['id']}"

    # bob: not even "it exists"
    assert httpx.get(hooks, headers=bob).json() == []
    assert httpx.get(hooks, params={"all": "true"}, headers=bob).json() == []
    for method, path in (
        ("GET", ""),
        ("DELETE", ""),
        ("POST", "/ping"),
        ("POST", "/enable"),
        ("POST", "/rotate-secret"),
        ("GET", "/deliveries"),
        ("POST", "/deliveries/1/redeliver"),
    ):
        answer = httpx.request(method, where + path, headers=bob)
        assert (answer.status_code, answer.json()["code"]) == (404, "not_found"), path
    # alice: her own, even when asking for all; the admin: his own, or everyone's
    assert [e["id"] for e in httpx.get(hooks, params={"all": "true"}, headers=alice).json()] == [
        made["id"]
    ]
    assert [e["id"] for e in httpx.get(hooks, headers=root).json()] == [mine["id"]]
    everyone = httpx.get(hooks, params={"all": "true"}, headers=root).json()
    assert {e["id"] for e in everyone} == {made["id"], mine["id"]}
    assert httpx.get(where, headers=root).status_code == 200

    # a ping is a delivery of its own, in the log with its attempts; redelivered on demand
    ping = httpx.post(f"{where}/ping", headers=alice)
    assert ping.status_code == 202, ping.text
    delivery = ping.json()
    assert delivery["event_type"] == "webhook.ping" and delivery["webhook_id"].startswith("msg_")
    log = httpx.get(f"{where}/deliveries", headers=alice).json()
    assert [d["id"] for d in log["deliveries"]] == [delivery["id"]]
    assert isinstance(log["deliveries"][0]["attempt_log"], list)
    assert log["next"] is None
    held = httpx.get(f"{where}/deliveries", params={"status": "held"}, headers=alice).json()
    assert held == {"deliveries": [], "next": None}
    again = httpx.post(f"{where}/deliveries/{delivery['id']}/redeliver", headers=alice)
    assert again.status_code == 202 and again.json()["webhook_id"] == delivery["webhook_id"]
    other = httpx.post(f"{hooks}/{mine['id']}/deliveries/{delivery['id']}/redeliver", headers=root)
    assert other.status_code == 404  # a delivery of another endpoint
    enabled = httpx.post(f"{where}/enable", headers=alice).json()
    assert enabled["enabled"] and enabled["resumed_deliveries"] == 0

    # bad bodies: one clear message naming what is wrong
    bad_type = httpx.post(
        hooks,
        json={"url": "http://127.0.0.1:9/a", "event_types": ["rental.exploded"]},
        headers=alice,
    )
    assert bad_type.status_code == 400 and "rental.exploded" in bad_type.json()["message"]
    extra = httpx.post(hooks, json={"url": "http://127.0.0.1:9/a", "secret": "x"}, headers=alice)
    assert extra.status_code == 422 and extra.json()["field"] == "secret"
    ftp = httpx.post(hooks, json={"url": "ftp://127.0.0.1/a"}, headers=alice)
    assert ftp.status_code == 400 and ftp.json()["message"].startswith("url:")

    # deleted: gone for its owner and the admin alike
    assert httpx.delete(where, headers=alice).status_code == 204
    assert httpx.get(where, headers=alice).status_code == 404
    assert httpx.get(where, headers=root).status_code == 404
    assert httpx.delete(where, headers=alice).status_code == 404


def test_private_addresses_are_refused_and_no_secret_key_is_a_503(
    serve: Any, environment: dict[str, str], capsys: Any
) -> None:
    """Neither GPUSHOP_WEBHOOK_ALLOW_PRIVATE nor GPUSHOP_SECRET_KEY set."""
    url, _ = serve(environment)
    alice = token(capsys, "alice")
    for target in (
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://169.254.169.254/",
        "http://10.1.2.3/hook",
        "http://[::ffff:127.0.0.1]/hook",
    ):
        refused = httpx.post(f"{url}/v1/webhooks", json={"url": target}, headers=alice)
        assert refused.status_code == 422, (target, refused.text)
        assert refused.json()["code"] == "webhook_url_refused", target
        assert "public addresses only" in refused.json()["message"]
    # a public address passes the check; with no key to encrypt its secret, nothing is made
    missing = httpx.post(
        f"{url}/v1/webhooks", json={"url": "https://93.184.215.14/"}, headers=alice
    )
    assert missing.status_code == 503, missing.text
    answer = missing.json()
    assert answer["code"] == "secret_key_missing" and "GPUSHOP_SECRET_KEY" in answer["message"]
    assert "\n" not in answer["message"]
    assert httpx.get(f"{url}/v1/webhooks", headers=alice).json() == []


def test_the_cli_adds_lists_and_removes_and_makes_keys(
    hooks_env: dict[str, str], capsys: Any, tmp_path: Path
) -> None:
    code, _, err = cli(capsys, "webhooks", "add", "http://127.0.0.1:9/hook")
    assert code == 2 and "no admin" in err and len(err.strip().splitlines()) == 1
    token(capsys, "root", "--admin")
    token(capsys, "bob")
    code, out, err = cli(
        capsys, "webhooks", "add", "http://127.0.0.1:9/hook", "--type", "rental.ready"
    )
    assert code == 0, err
    secret = out.strip()
    assert secret.startswith("whsec_") and "ONCE" in err and secret not in err
    code, out, err = cli(
        capsys, "webhooks", "add", "http://127.0.0.1:9/bob", "--user", "bob", "-d", "bob's"
    )
    assert code == 0, err
    bobs_secret = out.strip()
    code, out, _ = cli(capsys, "webhooks", "list", "--json")
    listed = json.loads(out)
    assert [(e["url"][-4:], e["event_types"]) for e in listed] == [
        ("hook", ["rental.ready"]),
        ("/bob", []),
    ]
    assert secret not in out and "secret" not in out
    code, out, _ = cli(capsys, "webhooks", "list", "--user", "bob", "--json")
    assert [e["description"] for e in json.loads(out)] == ["bob's"]
    code, out, _ = cli(capsys, "webhooks", "list")
    assert code == 0 and listed[0]["id"] in out and "rental.ready" in out and "root" in out
    hook = listed[0]["id"]

    code, out, _ = cli(capsys, "webhooks", "ping", hook)
    assert code == 0 and "webhook.ping" in out
    code, out, _ = cli(capsys, "webhooks", "deliveries", hook, "--json")
    [delivery] = json.loads(out)
    assert delivery["event_type"] == "webhook.ping" and delivery["status"] == "pending"
    code, out, _ = cli(capsys, "webhooks", "deliveries", hook)
    assert code == 0 and "webhook.ping" in out and "pending" in out
    code, out, _ = cli(capsys, "webhooks", "redeliver", hook, str(delivery["id"]))
    assert code == 0 and delivery["webhook_id"] in out
    code, out, err = cli(capsys, "webhooks", "rotate", hook)
    assert code == 0 and out.strip().startswith("whsec_") and out.strip() != secret

    # bad input: one line, exit 2
    for argv, says in (
        (("webhooks", "list", "--bogus"), "--bogus"),
        (("webhooks", "deliveries", hook, "--status", "lost"), "--status"),
        (("webhooks", "rm", "wh_nope"), "wh_nope"),
        (("webhooks", "ping", hook, "--user", "bob"), hook),  # not bob's
        (("webhooks", "ping", hook, "--user", "nobody"), "nobody"),
        (("webhooks", "add", "http://127.0.0.1/x", "--type", "job.exploded"), "job.exploded"),
        (("webhooks", "add", "gopher://127.0.0.1/x"), "url"),
    ):
        code, out, err = cli(capsys, *argv)
        assert code == 2, (argv, err)
        assert len(err.strip().splitlines()) == 1 and says in err, (argv, err)
        assert "Traceback" not in err

    code, _, err = cli(capsys, "webhooks", "rm", hook)
    assert code == 0 and hook in err
    code, out, _ = cli(capsys, "webhooks", "list", "--json")
    assert [e["url"][-4:] for e in json.loads(out)] == ["/bob"]

    # keys: a new one, and every stored secret re-encrypted under it once it comes first
    code, out, err = cli(capsys, "secrets", "keygen")
    key = out.strip()
    assert code == 0 and len(base64.urlsafe_b64decode(key)) == 32 and "GPUSHOP_SECRET_KEY" in err
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPUSHOP_SECRET_KEY", f"{key},{hooks_env['GPUSHOP_SECRET_KEY']}")
        code, out, err = cli(capsys, "secrets", "rotate")
        assert code == 0 and "1 webhook endpoint" in out, err
        mp.setenv("GPUSHOP_SECRET_KEY", key)  # the old key dropped: bob's secret still opens
        cfg = load_settings()
        with Store.open(cfg.db_url) as store:
            endpoint = store.webhooks.endpoint(listed[1]["id"])
            assert endpoint is not None
            opened = webhooks.signing_secrets(cfg, endpoint, store.clock())
        assert opened == [bobs_secret]
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("GPUSHOP_SECRET_KEY")
        code, _, err = cli(capsys, "secrets", "rotate")
        assert code == 2 and "GPUSHOP_SECRET_KEY" in err and len(err.strip().splitlines()) == 1


@contextmanager
def receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    """(URL, what it received) of an HTTP server on loopback that answers 204."""
    got: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            got.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", got
    finally:
        server.shutdown()
        server.server_close()


def test_a_ping_reaches_the_receiver_signed(
    serve: Any, hooks_env: dict[str, str], capsys: Any
) -> None:
    Webhook = pytest.importorskip("standardwebhooks").Webhook

    url, _ = serve(hooks_env)
    alice = token(capsys, "alice")
    with receiver() as (target, got):
        made = httpx.post(f"{url}/v1/webhooks", json={"url": target}, headers=alice).json()
        where = f"{url}/v1/webhooks/{made['id']}"
        ping = httpx.post(f"{where}/ping", headers=alice).json()
        until(lambda: got, "the ping to reach the receiver", timeout=20)
    headers, body = got[0]
    assert headers["webhook-id"] == ping["webhook_id"]
    payload = Webhook(made["secret"]).verify(body, headers)
    assert payload["type"] == "webhook.ping" and payload["data"]["endpoint_id"] == made["id"]

    def delivered() -> dict[str, Any] | None:
        log = httpx.get(f"{where}/deliveries", headers=alice).json()["deliveries"]
        return log[0] if log and log[0]["status"] == "delivered" else None

    shown = until(delivered, "the delivery to be logged as delivered", timeout=20)
    [attempt] = shown["attempt_log"]
    assert attempt["status_code"] == 204 and attempt["error"] is None
    assert attempt["duration_ms"] >= 0


def documented_snippets() -> list[str]:
    """The Python blocks of docs/api.md's "Verifying a delivery" section."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    section = docs.split("### Verifying a delivery", 1)[1]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_documented_verifiers_accept_a_signed_delivery_and_nothing_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("standardwebhooks")
    library, stdlib = documented_snippets()
    old, new = webhooks.new_secret(), webhooks.new_secret()
    body = b'{"type":"webhook.ping","timestamp":"2026-10-02T09:14:03.512077Z","data":{}}'
    stamp = int(time.time())

    def headers(
        *secrets: str, msg_id: str = "msg_p5jXN8AQM9LWM0D4loKWxJek", at: int = stamp
    ) -> dict[str, str]:
        signatures = " ".join(webhooks.sign(s, msg_id, at, body) for s in secrets)
        return {"webhook-id": msg_id, "webhook-timestamp": str(at), "webhook-signature": signatures}

    monkeypatch.setenv("GPUSHOP_WEBHOOK_SECRET", new)
    first: dict[str, Any] = {}
    exec(library, first)
    assert first["receive"](body, headers(new)) == 204
    assert first["seen"] == {"msg_p5jXN8AQM9LWM0D4loKWxJek"}
    assert first["receive"](body, headers(new)) == 204  # a retry: deduplicated
    assert first["receive"](body, headers(new, old, msg_id="msg_2")) == 204  # a rotation
    assert first["receive"](body + b" ", headers(new, msg_id="msg_3")) == 400
    assert first["receive"](body, headers(old, msg_id="msg_4")) == 400
    assert first["receive"](body, headers(new, msg_id="msg_5", at=stamp - 600)) == 400

    second: dict[str, Any] = {}
    exec(stdlib, second)
    verify = second["verify"]
    assert verify(new, headers(new), body) and verify(new, headers(old, new), body)
    assert not verify(new, headers(new), body + b" ")
    assert not verify(new, headers(old), body)
    assert not verify(new, headers(new, at=stamp - 600), body)
    assert not verify(new, {**headers(new), "webhook-timestamp": "-1"}, body)
    # the spec's test vector (reference/service.md)
    vector = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1674087231",
        "webhook-signature": "v1,AQG81rX2n4rTN1fkXoqILSHO9gAOcwya9dP41rhrQDI=",
    }
    assert verify(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        vector,
        b'{"test": 2432232314}',
        tolerance_s=10**10,
    )
