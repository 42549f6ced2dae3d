"""Schema creation by Alembic on open: complete, idempotent, safe when processes race."""

from __future__ import annotations

import re

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from gpushop.store import Store
from gpushop.store.migrate import HEAD, alembic_config
from gpushop.store.schema import Base

from .conftest import python

TABLES = {"gpushop_meta", "rentals", "rental_events", "host_blocks", "timings", "alembic_version"}
SECRETISH = re.compile(r"api_?key|token|password|passwd|secret|private|credential", re.IGNORECASE)


def test_head_constant_matches_the_migration_scripts() -> None:
    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD


def test_open_creates_everything_and_reopen_is_idempotent(store_url: str) -> None:
    with Store.open(store_url) as first:
        engine = first._engine
        assert set(inspect(engine).get_table_names()) >= TABLES
        indexes = {i["name"] for i in inspect(engine).get_indexes("rentals")}
        assert {"ix_rentals_state", "ix_rentals_instance_id"} <= indexes
        with engine.connect() as conn:
            # the migrations produce exactly what the ORM models describe
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
            assert diff == []
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD
        dep = first.deployment_id
    with Store.open(store_url) as again:
        assert again.deployment_id == dep
    assert re.fullmatch(r"[a-z0-9]{6}", dep)


def test_deployment_ids_differ_between_stores(sqlite_url: str, tmp_path: object) -> None:
    other = sqlite_url.replace("gpushop.db", "other.db")
    with Store.open(sqlite_url) as a, Store.open(other) as b:
        assert a.deployment_id != b.deployment_id


def test_sqlite_settings(sqlite_url: str) -> None:
    with Store.open(sqlite_url) as store, store._engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10_000


def test_no_secret_looking_column_exists(store_url: str) -> None:
    with Store.open(store_url) as store:
        found = {
            f"{table}.{column['name']}"
            for table in inspect(store._engine).get_table_names()
            for column in inspect(store._engine).get_columns(table)
        }
    # sealed_*: ciphertext under GPUSHOP_SECRET_KEY (store/secret_box.py; tested in
    # tests/api/test_webhooks.py and test_jobs_api.py: the store holds no secret in the clear)
    assert not {name for name in found if SECRETISH.search(name) and ".sealed_" not in name}
    assert {name for name in found if ".sealed_" in name} == {
        "webhook_endpoints.sealed_secret",
        "webhook_endpoints.sealed_previous",
        "jobs.sealed_secrets",
    }
    # the only "key" columns: the meta table's key, the server's PUBLIC host key, and the
    # Idempotency-Key a client chose for a request
    assert {name for name in found if "key" in name} == {
        "gpushop_meta.key",
        "rentals.host_key",
        "idempotency.idempotency_key",
    }


OPEN = """
import sys
from gpushop.store import Store
with Store.open(sys.argv[1]) as store:
    print(store.deployment_id)
"""


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_processes_opening_a_fresh_store_at_once(
    dialect: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("sqlite_url" if dialect == "sqlite" else "pg_url")
    procs = [python(OPEN, url) for _ in range(4)]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in outputs]
    ids = {out.strip() for out, _ in outputs}
    assert len(ids) == 1  # every process saw the same, single deployment id
    with Store.open(url) as store:
        assert {store.deployment_id} == ids


def test_default_url_is_a_file_in_the_user_data_dir() -> None:
    from gpushop.config import data_dir

    with Store.open() as store:
        assert store.dialect == "sqlite"
        assert (data_dir() / "gpushop.db").exists()
        assert store.url_for_display.endswith("gpushop.db")


def test_in_memory_sqlite_works_for_quick_scripts() -> None:
    with Store.open("sqlite://") as store:
        r = store.new_rental(provider="vastai", max_duration_s=60, owner_host="h", owner_pid=1)
        assert store.get(r.id) == r
        with store.reconcile_lock():
            pass
