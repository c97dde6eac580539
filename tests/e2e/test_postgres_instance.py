"""Scenario: the production instance config (``deploy/dagster.postgres.yaml``, the file itself) on a
real PostgreSQL: an asset materialises through it, and the run and its events are in Postgres.

Needs ``SCANLENS_TEST_POSTGRES_URL`` (a role with CREATEDB; ``.ci/postgres.sh`` sets one up and
prints it). Each test run creates its own database ``scanlens_test_<random>`` and drops it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import dagster as dg
import pandas as pd
import pytest

from assets.ingest import DemoStudiesConfig, ScanCatalogConfig, demo_studies, scan_catalog
from assets.resources import PseudonymSecret, ScanLensProject
from tests.conftest import REPO

POSTGRES_URL = os.environ.get("SCANLENS_TEST_POSTGRES_URL", "")
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false")
PRODUCTION_CONFIG = REPO / "deploy" / "dagster.postgres.yaml"


@pytest.fixture
def pg_database() -> Iterator[dict[str, str]]:
    """A fresh, empty database for this test (dropped afterwards), as the DAGSTER_PG_* variables."""
    if not POSTGRES_URL:
        message = ("SCANLENS_TEST_POSTGRES_URL is not set: run `export SCANLENS_TEST_POSTGRES_URL=\"$(bash "
                   ".ci/postgres.sh)\"` (as root) or point it at a role with CREATEDB")
        if IN_CI:
            pytest.fail(message + " (CI must test the PostgreSQL instance)")
        pytest.skip(message)
    import psycopg2
    from psycopg2 import sql

    url = urlsplit(POSTGRES_URL)
    name = f"scanlens_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(POSTGRES_URL)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield {"DAGSTER_PG_USERNAME": unquote(url.username or ""), "DAGSTER_PG_PASSWORD": unquote(url.password or ""),
               "DAGSTER_PG_HOST": url.hostname or "127.0.0.1", "DAGSTER_PG_PORT": str(url.port or 5432),
               "DAGSTER_PG_DB": name}
    finally:
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()


def test_scan_catalog_materialises_into_the_postgres_instance(pg_database: dict[str, str], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import psycopg2
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PRODUCTION_CONFIG, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for key, value in pg_database.items():
        monkeypatch.setenv(key, value)
    workdir = tmp_path / "w"

    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
        assert isinstance(instance.run_launcher, dg.DefaultRunLauncher)
        result = dg.materialize(
            [demo_studies, scan_catalog], instance=instance,
            resources={"project": ScanLensProject(workdir=str(workdir), demo_root=str(tmp_path / "demo")),
                       "secret": PseudonymSecret(secret="postgres-test")},
            run_config=dg.RunConfig(ops={
                "demo_studies": DemoStudiesConfig(breast_limit=4, adrenal_limit=2),
                "scan_catalog": ScanCatalogConfig(source=str(tmp_path / "demo" / "source"),
                                                  labels=str(tmp_path / "demo" / "labels.csv")),
            }),
        )
        assert result.success
        event = instance.get_latest_materialization_event(dg.AssetKey("scan_catalog"))
        assert event is not None and event.run_id == result.run_id
        metadata = {k: v.value for k, v in event.asset_materialization.metadata.items()}
        catalog = pd.read_parquet(workdir / "catalog.parquet")
        assert metadata["scans"] == len(catalog) == 4 * 3 + 2 * 3
        assert metadata["modalities"] == {"CT": 6, "US": 12}
        run = instance.get_run_by_id(result.run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS

    # The records are in PostgreSQL itself, and nothing went to SQLite files in DAGSTER_HOME.
    with psycopg2.connect(host=pg_database["DAGSTER_PG_HOST"], port=int(pg_database["DAGSTER_PG_PORT"]),
                          user=pg_database["DAGSTER_PG_USERNAME"], password=pg_database["DAGSTER_PG_PASSWORD"],
                          dbname=pg_database["DAGSTER_PG_DB"]) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT status, pipeline_name FROM runs WHERE run_id = %s", (result.run_id,))
        assert cursor.fetchall() == [("SUCCESS", "__ephemeral_asset_job__")]
        cursor.execute("SELECT asset_key FROM event_logs WHERE run_id = %s AND dagster_event_type = %s",
                       (result.run_id, "ASSET_MATERIALIZATION"))
        keys = sorted(row[0] for row in cursor.fetchall())
        assert keys == sorted(dg.AssetKey(name).to_string() for name in ("demo_studies", "scan_catalog"))
    conn.close()
    assert sorted(p.name for p in home.rglob("*.db")) == []
