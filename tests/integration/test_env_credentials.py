"""Credentials given by VALUE under an ordinary name (`--env X=hf_...`, a URL with a password)
are secrets like HF_TOKEN: over SSH at launch, never in the store, the job spec or the create
call; and `gpushop config` never shows a URL's password (issue 10 §3b)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from cli_run import cli

PASSWORD = "Pg5ecretPw"  # a test value


def test_config_masks_the_password_of_the_database_url(
    capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPUSHOP_DB_URL", f"postgresql://u:{PASSWORD}@db.example:5432/shop")
    code, out, err = cli(capsys, "config")
    assert code == 0, err
    assert PASSWORD not in out + err
    assert "db.example" in out  # still readable: only the password is hidden
    code, out, err = cli(capsys, "config", "--json")
    assert code == 0, err
    shown = json.loads(out)["GPUSHOP_DB_URL"]["value"]
    assert shown == "postgresql://u:****@db.example:5432/shop"


@pytest.mark.parametrize(
    ("url", "code", "says"),
    [
        (f"postgresql://u:{PASSWORD}@127.0.0.1:1/shop", 1, "cannot open the store"),
        (f"mysql://u:{PASSWORD}@127.0.0.1/shop", 2, "unsupported store backend 'mysql'"),
        ("sqlite:////proc/no/store.db", 1, "cannot open the store sqlite:////proc/no/store.db"),
        ("sqlite:////proc/store.db", 1, "unable to open database file"),
    ],
)
@pytest.mark.parametrize("command", [("ps",), ("reconcile",)])
def test_a_store_that_cannot_be_opened_is_one_line_without_its_password(
    capsys: Any,
    monkeypatch: pytest.MonkeyPatch,
    url: str,
    code: int,
    says: str,
    command: tuple[str, ...],
) -> None:
    monkeypatch.setenv("GPUSHOP_DB_URL", url)
    got, out, err = cli(capsys, *command)
    assert (got, out) == (code, ""), err
    assert err.count("\n") == 1 and says in err and "Traceback" not in err
    assert PASSWORD not in err


@pytest.fixture
def env(emulator: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    monkeypatch.setenv("VASTAI_URL", emulator.url)
    monkeypatch.setenv("VASTAI_API_KEY", emulator.api_key)
    monkeypatch.setenv("GPUSHOP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GPUSHOP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GPUSHOP_DB_URL", f"sqlite:///{tmp_path / 'store.db'}")
    monkeypatch.chdir(tmp_path)
    return emulator


def written_anywhere(root: Path, secret: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_a_token_under_an_ordinary_name_goes_over_ssh_only(
    env: Any, capsys: Any, tmp_path: Path
) -> None:
    token = "hf_" + "Q7x2Lm9Vb4" * 4  # a Hugging Face token's shape, under a plain name
    db_link = f"postgresql://app:{PASSWORD}@10.0.0.5/prod"
    checks = " && ".join(
        # compared by digest: the command itself is stored, and must not hold the values
        f'test "$(printf %s "${name}" | sha256sum | cut -c1-64)" = '
        f'"{hashlib.sha256(value.encode()).hexdigest()}"'
        for name, value in (("MODEL_ACCESS", token), ("LINK", db_link))
    )
    code, out, err = cli(
        capsys,
        "run",
        "--min-vram",
        "24",
        "--attempts",
        "2",
        "--env",
        f"MODEL_ACCESS={token}",
        "--env",
        f"LINK={db_link}",
        "--env",
        "MODE=fast",
        "--cmd",
        f'{checks} && echo "values ok, mode $MODE"',
    )
    assert code == 0, err
    assert "values ok, mode fast" in out  # the command on the instance saw both
    for secret in (token, PASSWORD):
        assert secret not in out + err
        assert written_anywhere(tmp_path, secret) == []  # store, job spec, logs
        for request in env.control.requests():
            assert secret not in json.dumps(request), "it reached the provider API"
        assert secret not in json.dumps(env.control.state()["instances"])


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("OPENAI", "sk-" + "Zq8wPx3Nc5" * 4, "the value looks like a credential"),
        ("WANDB_API_KEY", "0123456789abcdef", "its name says it is a secret"),
        ("HF_TOKEN", "abc", "its name says it is a secret"),
    ],
)
def test_up_refuses_a_secret_in_the_create_env_and_rents_nothing(
    env: Any, capsys: Any, name: str, value: str, says: str
) -> None:
    code, _, err = cli(capsys, "up", "--min-vram", "24", "--env", f"{name}={value}")
    assert code == 2
    assert f"--env {name}: {says}" in err and f"gpushop run --env {name}=" in err
    assert value not in err and "Traceback" not in err
    assert env.control.request_count("PUT /api/v0/asks/{id}/") == 0


@pytest.mark.parametrize(
    ("value", "credential"),
    [
        ("hf_" + "a1B2c3D4e5" * 3, True),
        ("--token ghp_" + "X" * 36, True),
        ("AKIAIOSFODNN7EXAMPLE", True),
        ("redis://:pw1@cache:6379/0", True),
        ("sk-learn", False),  # ordinary words and paths are not taken for tokens
        ("/models/hf_model_checkpoint_final_v2", False),
        ("https://example.com/path", False),
        ("offline", False),
    ],
)
def test_what_counts_as_a_credential_value(value: str, credential: bool) -> None:
    from gpushop.jobs.spec import parse_env

    plain, names, secret = parse_env([f"X={value}"])
    assert (secret == {"X": value} and names == ["X"] and plain == {}) is credential
    assert (plain == {"X": value}) is not credential
