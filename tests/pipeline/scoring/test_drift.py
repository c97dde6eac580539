"""Score drift (pipeline/scoring/drift.py): PSI, rates and shares on synthetic frames, and the whole
measurement on a synthetic work folder (registry version, catalogues, scores table)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import pipeline.scoring.table as table_module
from pipeline.errors import UserInputError
from pipeline.layout import Workdir
from pipeline.scoring.drift import compare, flag_rate, largest_shift, measure_drift, psi, read_drift, shares
from pipeline.scoring.table import SCORE_COLUMNS, SCORE_SCHEMA, ScoresTable, read_scores
from pipeline.settings.drift import DriftSettings

VERSION = "v-000000000001"


def _beta(a: float, b: float, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).beta(a, b, n)


def test_psi_is_near_zero_for_one_distribution_and_large_for_a_shifted_one() -> None:
    reference = _beta(2, 5, 2000, 0)
    same, table = psi(reference, _beta(2, 5, 500, 1))
    assert same < 0.05  # sampling alone: about 9 (1/500 + 1/2000) = 0.02
    assert len(table) == 10 and all(abs(b["reference"] - 0.1) < 0.01 for b in table)  # deciles of the reference
    shifted, _ = psi(reference, _beta(5, 2, 500, 2))
    assert shifted > 1.0
    moderate, _ = psi(reference, np.clip(_beta(2, 5, 500, 3) + 0.05, 0, 1))
    assert same < moderate < shifted
    empty_bins, bins = psi(reference, np.full(100, 0.99))  # every recent score in the top bin: eps, not inf
    assert np.isfinite(empty_bins) and bins[-1]["recent"] == 1.0 and bins[0]["recent"] == 0.0


def test_shares_count_blanks_as_unknown_and_the_largest_shift_is_signed() -> None:
    assert shares(pd.Series(["US", "US", None, " ", "CT"])) == {"CT": 0.2, "US": 0.4, "unknown": 0.4}
    assert shares(pd.Series([], dtype=object)) == {}
    shift = largest_shift({"US": 1.0}, {"US": 0.6, "CT": 0.3, "MR": 0.1})
    assert shift is not None and shift["value"] == "US" and shift["difference"] == pytest.approx(-0.4)
    grew = largest_shift({"US": 1.0}, {"CT": 1.0})  # equal changes: the value that appeared is named
    assert grew is not None and (grew["value"], grew["difference"]) == ("CT", 1.0)
    assert largest_shift({}, {"US": 1.0}) is None


def test_flag_rate_needs_the_column_and_counts_non_empty_flags() -> None:
    assert flag_rate(pd.DataFrame({"probability": [0.1, 0.2]})) is None  # a table from before the OOD checks
    frame = pd.DataFrame({"ood_flags": ["", "wrong_modality", None, "shape_out_of_range,embedding_distance"]})
    assert flag_rate(frame) == 0.5


def _recent(p: np.ndarray, **columns: object) -> pd.DataFrame:
    return pd.DataFrame({"probability": p, "decision": "negative", **columns})


def test_compare_judges_each_limit_and_tolerates_missing_columns() -> None:
    reference = _beta(2, 5, 2000, 0)
    covariates = pd.DataFrame({"modality": ["US"] * 100, "manufacturer": ["A"] * 100})
    quiet = compare(reference, _recent(_beta(2, 5, 500, 1)), covariates, covariates.iloc[:50], DriftSettings())
    assert quiet["verdict"] == "within limits" and quiet["exceeded"] == []
    assert quiet["flag_rate"] is None and quiet["refer_rate"] == 0.0  # no ood_flags column: unavailable
    flagged = ["wrong_modality"] * 100 + [""] * 400
    decisions = ["refer"] * 100 + ["negative"] * 400
    recent = _recent(_beta(5, 2, 500, 2), ood_flags=flagged).assign(decision=decisions)
    now = pd.DataFrame({"modality": ["CT"] * 30 + ["US"] * 70})  # no manufacturer column at all
    loud = compare(reference, recent, covariates, now, DriftSettings())
    assert loud["verdict"] == "above limits" and loud["flag_rate"] == 0.2 and loud["refer_rate"] == 0.2
    assert [e.split(" ")[0] for e in loud["exceeded"]] == ["PSI", "out-of-distribution", "modality"]
    assert loud["largest_share_shift"]["covariate"] == "modality"
    assert loud["covariates"]["manufacturer"]["largest_shift"] is None
    few = compare(reference, recent.iloc[:50], covariates, now, DriftSettings())
    assert few["verdict"].startswith("not judged") and few["exceeded"] == [] and few["psi"] > 0.25
    none = compare(reference, recent.iloc[:0], covariates, now.iloc[:0], DriftSettings())
    assert none["psi"] is None and none["flag_rate"] is None and none["n"] == 0


def test_settings_are_validated() -> None:
    with pytest.raises(UserInputError):
        DriftSettings(window=0)
    with pytest.raises(UserInputError):
        DriftSettings(flag_rate_limit=1.5)


# --- a synthetic work folder ------------------------------------------------------------------------
def _score_rows(scan_ids: list[str], p: np.ndarray, version: str, flags: list[str] | None = None) -> pd.DataFrame:
    """Rows of every column the scores table has (whatever version of it this is)."""
    given = {
        "scan_id": scan_ids,
        "patient_id": [f"pat_{s}" for s in scan_ids],
        "study_id": [f"stu_{s}" for s in scan_ids],
        "probability": p,
        "raw_probability": p,
        "decision": np.where(p >= 0.5, "1", "0"),
        "threshold": 0.5,
        "model_version": version,
        "ood_flags": flags if flags is not None else [""] * len(scan_ids),
    }
    columns = {}
    for name in SCORE_COLUMNS:
        kind = SCORE_SCHEMA.field(name).type
        columns[name] = given.get(name, "" if kind == pa.string() else np.nan)
    return pd.DataFrame(columns)


def drift_workdir(
    root: Path,
    recent_p: np.ndarray,
    modality: str = "US",
    manufacturer: str | None = "A",
    flags: list[str] | None = None,
    n_oof: int = 400,
) -> Path:
    """A work folder whose champion ``VERSION`` has ``n_oof`` OOF predictions (Beta(2, 5), US, maker A) and
    whose scores table holds ``recent_p`` for it (one scoring call per 50 scans, each with its intake
    catalogue: ``modality``, ``manufacturer``)."""
    wd = Workdir(root)
    version = wd.version(VERSION)
    version.root.mkdir(parents=True)
    oof_ids = [f"ref_{i:04d}" for i in range(n_oof)]
    p = _beta(2, 5, n_oof, 0)
    pd.DataFrame(
        {"scan_id": oof_ids, "patient_id": oof_ids, "fold": 0, "label": 0, "prob_0": 1 - p, "prob_1": p}
    ).to_parquet(version.oof_predictions)
    version.evaluation_file(wd.metrics.name).write_text(json.dumps({"classes": ["0", "1"]}))
    wd.registry_index.write_text(json.dumps({"champion": VERSION}))
    pd.DataFrame({"scan_id": oof_ids, "modality": "US", "manufacturer": "A"}).to_parquet(wd.catalog)
    table = ScoresTable(root)
    ids = [f"new_{i:04d}" for i in range(len(recent_p))]
    for start in range(0, len(ids), 50):
        chunk = ids[start : start + 50]
        intake = wd.intake(f"inbox_{start:016d}")
        intake.root.mkdir(parents=True)
        pd.DataFrame({"scan_id": chunk, "modality": modality, "manufacturer": manufacturer}).to_parquet(intake.catalog)
        chunk_flags = flags[start : start + 50] if flags is not None else None
        table.append(_score_rows(chunk, recent_p[start : start + 50], VERSION, chunk_flags))
    return root


def test_measure_drift_writes_the_record_and_plots_of_the_champions_last_scores(tmp_path: Path) -> None:
    recent = np.concatenate([_beta(5, 2, 300, 1), _beta(2, 5, 200, 2)])  # drifted first, like the reference last
    flags = ["wrong_modality"] * 20 + [""] * 480
    workdir = drift_workdir(tmp_path / "w", recent, manufacturer=None, flags=flags)
    wd = Workdir(workdir)
    ScoresTable(workdir).append(_score_rows(["old_0"], np.array([0.9]), "v-older"))  # another version: left out
    record = measure_drift(workdir, DriftSettings(window=200))
    assert record == read_drift(workdir) and record["champion"] == VERSION
    assert record["n"] == 200 and record["n_reference"] == 400 and record["psi"] < 0.1  # only the last 200
    assert record["covariates"]["modality"]["recent"] == {"US": 1.0}
    assert record["covariates"]["manufacturer"] == {
        "reference": {"A": 1.0},
        "recent": {"unknown": 1.0},
        "largest_shift": {"value": "unknown", "reference": 0.0, "recent": 1.0, "difference": 1.0},
    }
    assert record["n_without_catalogue"] == {"reference": 0, "recent": 0}
    assert record["flag_rate"] == (0.0 if "ood_flags" in SCORE_COLUMNS else None)  # the flags were the oldest
    assert record["verdict"] == "above limits" and record["exceeded"][-1].startswith("manufacturer 'unknown'")
    for name in ("probabilities", "covariates"):
        assert wd.drift_plot(name).read_bytes().startswith(b"\x89PNG")
    whole = measure_drift(workdir, DriftSettings(window=500))
    assert whole["psi"] > 0.25 and whole["exceeded"][0].startswith("PSI")


def test_the_window_follows_write_order_across_a_merge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(table_module, "COMPACT_AT", 3)  # the 3rd append merges every part into one
    table = ScoresTable(tmp_path)
    for i, name in enumerate(["zz", "mm", "aa", "bb"]):
        table.append(_score_rows([f"{name}_{j}" for j in range(2)], np.full(2, 0.1 * i), VERSION))
    assert read_scores(tmp_path, write_order=True)["scan_id"].str[:2].tolist() == ["zz"] * 2 + ["mm"] * 2 + [
        "aa"
    ] * 2 + ["bb"] * 2
    assert read_scores(tmp_path)["scan_id"].str[:2].tolist()[:2] == ["aa", "aa"]  # the default stays sorted


def test_recalibration_of_the_reference_and_no_champion(tmp_path: Path) -> None:
    recalibration = pytest.importorskip("pipeline.evaluate.recalibration")
    workdir = drift_workdir(tmp_path / "w", _beta(2, 5, 150, 1))
    wd = Workdir(workdir)
    plain = measure_drift(workdir)
    assert plain["reference_recalibration"] == "none" and plain["verdict"] == "within limits"
    sharpen = recalibration.Recalibration("temperature", slope=3.0)
    metrics = wd.version(VERSION).evaluation_file(wd.metrics.name)
    metrics.write_text(json.dumps({"classes": ["0", "1"], "recalibration": sharpen.to_dict()}))
    sharpened = measure_drift(workdir)  # the reference is what scoring would output now: unlike the scores
    assert sharpened["reference_recalibration"] == "temperature" and sharpened["psi"] > plain["psi"] + 0.1
    wd.registry_index.write_text(json.dumps({"champion": None}))
    nothing = measure_drift(workdir)
    assert nothing["verdict"] == "no champion" and not wd.drift_plot("probabilities").exists()
    missing = measure_drift(tmp_path / "missing")  # a first weekly run, before any work folder exists
    assert missing["verdict"] == "no champion" and not (tmp_path / "missing").exists()


def test_the_command_line_prints_the_verdict_and_writes_the_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.cli import main

    workdir = drift_workdir(tmp_path / "w", _beta(5, 2, 150, 1))
    assert main(["drift", "--workdir", str(workdir), "--window", "120", "--psi-limit", "0.5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"score drift of {VERSION}: PSI ") and "last 120 scores (window 120): above limits" in out
    assert read_drift(workdir)["limits"]["psi"] == 0.5  # type: ignore[index]
