"""``score_drift`` and its check ``score_drift_within_limits`` (assets/drift.py), in the asset graph and
the weekly retraining, on synthetic work folders (tests/pipeline/scoring/test_drift.py builds them)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np

from assets.definitions import defs
from assets.drift import score_drift, score_drift_within_limits
from assets.operations import drift_at_retraining
from assets.resources import ScanLensProject
from tests.pipeline.scoring.test_drift import VERSION, drift_workdir


def _materialise(workdir: Path, **config: object) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [score_drift, score_drift_within_limits],
        resources={"project": ScanLensProject(workdir=str(workdir))},
        run_config=dg.RunConfig(ops={"score_drift": {"config": config}}) if config else None,
    )


def test_score_drift_is_in_the_scoring_group_checked_and_run_by_the_weekly_retraining() -> None:
    graph = defs.resolve_asset_graph()
    node = graph.get(dg.AssetKey("score_drift"))
    assert node.group_name == "scoring" and node.parent_keys == {dg.AssetKey("scan_scores")}
    check = dg.AssetCheckKey(dg.AssetKey("score_drift"), "score_drift_within_limits")
    job = defs.resolve_job_def("train_and_evaluate")
    assert dg.AssetKey("score_drift") in job.asset_layer.executable_asset_keys
    assert check in job.asset_layer.asset_graph.asset_check_keys


def test_a_quiet_champion_passes_and_a_shifted_one_warns(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    quiet = _materialise(drift_workdir(tmp_path / "quiet", rng.beta(2, 5, 200)))
    (evaluation,) = quiet.get_asset_check_evaluations()
    assert evaluation.passed and "within limits" in (evaluation.description or "")
    metadata = quiet.asset_materializations_for_node("score_drift")[0].metadata
    assert metadata["champion"].value == VERSION and metadata["n"].value == 200
    assert metadata["psi"].value < 0.1 and "data:image/png;base64" in str(metadata["plots"].value)

    shifted = drift_workdir(tmp_path / "shifted", rng.beta(5, 2, 200), modality="CT")
    loud = _materialise(shifted, window=150, psi_limit=0.3)
    (evaluation,) = loud.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert "PSI" in (evaluation.description or "") and "> 0.3" in (evaluation.description or "")
    assert "modality 'CT' share 0% -> 100%" in (evaluation.description or "")
    assert loud.asset_materializations_for_node("score_drift")[0].metadata["n"].value == 150

    line = drift_at_retraining(dg.build_asset_context(), ScanLensProject(workdir=str(shifted)))
    assert line.startswith(f"score drift of {VERSION}: PSI") and "above limits" in line


def test_without_a_champion_it_materialises_and_the_check_passes(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    result = _materialise(tmp_path / "w")
    (evaluation,) = result.get_asset_check_evaluations()
    assert result.success and evaluation.passed and "no champion" in (evaluation.description or "")
