"""Scoring with the champion: a table of pseudonymous scores, overlays, idempotent, re-scored after a promotion."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from pipeline.errors import UserInputError
from pipeline.layout import Workdir
from pipeline.registry import Registry
from pipeline.scoring import score_scans


def test_scores_are_idempotent_and_follow_the_champion(reported_workdir: tuple[Path, dict], tmp_path: Path) -> None:
    workdir = tmp_path / "w"
    shutil.copytree(reported_workdir[0], workdir, ignore=shutil.ignore_patterns("checkpoint.pt", "registry", "scoring"))
    catalog = pd.read_parquet(workdir / "catalog.parquet")
    new = catalog[(catalog["split"] == "test") & (catalog["dims"] == 2)].head(4)
    with pytest.raises(UserInputError, match="no champion"):
        score_scans(workdir, new)
    registry = Registry(workdir)
    first = registry.register()
    registry.promote(first.version, "test")
    result = score_scans(workdir, new)
    assert len(result.scores) == 4 and result.n_skipped == 0
    table = pd.read_parquet(result.table)
    assert list(table.columns) == ["scan_id", "patient_id", "study_id", "probability", "decision", "threshold",
                                   "model_version"]
    assert table["scan_id"].str.startswith("scan_").all() and table["patient_id"].str.startswith("pat_").all()
    assert table["study_id"].str.startswith("stu_").all() and table["model_version"].eq(first.version).all()
    threshold = first.record["operating_point"]["threshold"]
    assert ((table["probability"] >= threshold) == (table["decision"] == "1")).all()
    for scan_id in table["scan_id"]:
        assert (workdir / "scoring" / "overlays" / f"{scan_id}_{first.version}.png").exists()
    stamp = result.table.stat().st_mtime_ns
    again = score_scans(workdir, new)
    assert again.scores.empty and again.n_skipped == 4 and result.table.stat().st_mtime_ns == stamp
    # a new champion scores the same scans again; the old rows stay for audit
    second = "v-second000000"
    shutil.copytree(Workdir(workdir).version(first.version).root, Workdir(workdir).version(second).root)
    record = json.loads(Workdir(workdir).version(second).record.read_text())
    Workdir(workdir).version(second).record.write_text(json.dumps({**record, "version": second}))
    registry.promote(second, "test promotion")
    rescored = score_scans(workdir, new, overlays=False)
    assert len(rescored.scores) == 4 and (rescored.scores["model_version"] == second).all()
    assert len(pd.read_parquet(result.table)) == 8
