"""Scenario: an analyst runs the demo job through the Dagster CLI, then runs it again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
from dagster import AssetKey, DagsterInstance, DagsterRunStatus

from tests.conftest import REPO

RUN_CONFIG = """
ops:
  demo_studies:
    config:
      breast_limit: 5
      adrenal_limit: 2
  trained_model:
    config:
      epochs: 1
      batch_size: 4
      weights: ""
"""


def _run_job(env: dict[str, str], config: Path) -> subprocess.CompletedProcess[str]:
    dagster = Path(sys.executable).with_name("dagster")
    return subprocess.run(
        [str(dagster), "job", "execute", "-m", "assets.definitions", "-j", "scanlens_demo", "-c", str(config),
         "--tags", '{"dagster/partition": "2d"}'],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )


def test_demo_job_runs_into_a_persistent_instance_and_reruns_as_a_no_op(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    config = tmp_path / "run.yaml"
    config.write_text(RUN_CONFIG)
    env = {**os.environ, "DAGSTER_HOME": str(home), "SCANLENS_DEMO_ROOT": str(tmp_path / "demo")}
    first = _run_job(env, config)
    assert first.returncode == 0, first.stderr[-3000:]
    catalog_path = tmp_path / "demo" / "workdir" / "catalog.parquet"
    catalog = pd.read_parquet(catalog_path)
    assert len(catalog) == 5 * 3 + 2 * 3 and set(catalog["dims"]) == {2, 3}
    cards = list((tmp_path / "demo" / "workdir" / "models").glob("resnet50-2d-*/model_card.json"))
    assert len(cards) == 1 and (cards[0].parent / "weights.pt").exists()
    stamp = catalog_path.stat().st_mtime_ns
    second = _run_job(env, config)  # re-running: nothing re-ingested, the finished model is reused
    assert second.returncode == 0, second.stderr[-3000:]
    assert catalog_path.stat().st_mtime_ns == stamp
    assert "resuming" in second.stdout + second.stderr
    with DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert len(runs) == 2 and all(run.status == DagsterRunStatus.SUCCESS for run in runs)
        assert instance.get_latest_materialization_event(AssetKey("scan_catalog")) is not None
        assert instance.get_latest_materialization_event(AssetKey("trained_model")) is not None
