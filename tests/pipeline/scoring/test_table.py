"""The scores table: one part per append, every row kept under concurrent appends, older tables migrated."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pandas as pd
import pytest

import pipeline.scoring.table as table_module
from pipeline.layout import Workdir
from pipeline.scoring.table import SCORE_COLUMNS, ScoresTable, read_scores
from pipeline.storage import write_parquet_if_changed


def _rows(ids: range, version: str = "v-a", probability: float = 0.25) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "scan_id": [f"scan_{i:04d}" for i in ids],
            "patient_id": [f"pat_{i:04d}" for i in ids],
            "study_id": [f"stu_{i:04d}" for i in ids],
            "probability": probability,
            "raw_probability": probability,
            "uncertainty": 0.01,
            "decision": "negative",
            "refer_reason": "",
            "ood_score": float("nan"),
            "ood_flags": "",
            "threshold": 0.5,
            "model_version": version,
        }
    )[SCORE_COLUMNS]


def _parts(workdir: Path) -> list[str]:
    return sorted(p.name for p in Workdir(workdir).scores.iterdir() if not p.name.startswith("."))


def test_an_append_adds_one_part_and_never_rewrites_the_others(tmp_path: Path) -> None:
    table = ScoresTable(tmp_path)
    assert read_scores(tmp_path).empty and list(read_scores(tmp_path).columns) == SCORE_COLUMNS
    assert len(table.append(_rows(range(0, 3)))) == 3
    first = _parts(tmp_path)
    stamp = Workdir(tmp_path).scores_part(first[0][len("part-") : -len(".parquet")]).stat().st_mtime_ns
    assert len(table.append(_rows(range(3, 5)))) == 2
    assert len(_parts(tmp_path)) == 2 and Workdir(tmp_path).scores.joinpath(first[0]).stat().st_mtime_ns == stamp
    # a scan already in the table for that version is not written again; another version is
    assert table.append(_rows(range(0, 2), probability=0.9)).empty and len(_parts(tmp_path)) == 2
    assert len(table.append(_rows(range(0, 2), version="v-b"))) == 2
    rows = pd.read_parquet(Workdir(tmp_path).scores)  # what any reader of the path gets: every part
    assert len(rows) == 7 and (rows.loc[rows["model_version"] == "v-a", "probability"] == 0.25).all()
    assert table.scored("v-a", ["scan_0000", "scan_0004", "scan_9999"]) == {"scan_0000", "scan_0004"}
    assert ScoresTable(tmp_path).scored("v-b", ["scan_0000", "scan_0003"]) == {"scan_0000"}  # a fresh reader too
    assert read_scores(tmp_path)[["scan_id", "model_version"]].values.tolist() == sorted(
        rows[["scan_id", "model_version"]].values.tolist()
    )


def test_many_parts_are_merged_into_one_and_no_row_is_lost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(table_module, "COMPACT_AT", 4)
    table, other = ScoresTable(tmp_path), ScoresTable(tmp_path)
    other.scored("v-a", [])  # remembers the parts it has seen; they are merged away under it
    for start in range(0, 10, 2):
        table.append(_rows(range(start, start + 2)))
    assert len(_parts(tmp_path)) < 4
    assert sorted(read_scores(tmp_path)["scan_id"]) == [f"scan_{i:04d}" for i in range(10)]
    assert other.scored("v-a", [f"scan_{i:04d}" for i in range(12)]) == {f"scan_{i:04d}" for i in range(10)}


def _append_many(workdir: str, worker: int) -> None:
    table = ScoresTable(Path(workdir))
    for k in range(6):  # each worker's own scans, plus scan_0000..0002 that every worker tries to add
        table.append(pd.concat([_rows(range(100 * (worker + 1) + k, 100 * (worker + 1) + k + 1)), _rows(range(3))]))


def test_concurrent_appends_keep_every_row_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(table_module, "COMPACT_AT", 5)  # merges happen while the others append
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_append_many, args=(str(tmp_path), w)) for w in range(4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(60)
        assert process.exitcode == 0
    rows = pd.read_parquet(Workdir(tmp_path).scores)
    expected = {f"scan_{i:04d}" for i in range(3)} | {f"scan_{100 * (w + 1) + k:04d}" for w in range(4) for k in range(6)}
    assert sorted(rows["scan_id"]) == sorted(expected)  # every row, each once


def test_a_single_file_table_of_an_older_scanlens_becomes_the_first_part(tmp_path: Path) -> None:
    files = Workdir(tmp_path)
    write_parquet_if_changed(files.scores, _rows(range(0, 3)))
    table = ScoresTable(tmp_path)
    assert table.scored("v-a", ["scan_0001"]) == {"scan_0001"} and len(read_scores(tmp_path)) == 3  # read as it is
    assert len(table.append(_rows(range(2, 5)))) == 2
    assert files.scores.is_dir() and len(_parts(tmp_path)) == 2 and not files.scores_migrating.exists()
    assert sorted(read_scores(tmp_path)["scan_id"]) == [f"scan_{i:04d}" for i in range(5)]


def test_an_interrupted_migration_is_read_and_then_finished(tmp_path: Path) -> None:
    files = Workdir(tmp_path)
    write_parquet_if_changed(files.scores_migrating, _rows(range(0, 3)))  # renamed aside, folder not written yet
    assert len(read_scores(tmp_path)) == 3 and ScoresTable(tmp_path).scored("v-a", ["scan_0002"]) == {"scan_0002"}
    ScoresTable(tmp_path).append(_rows(range(3, 4)))
    assert not files.scores_migrating.exists() and sorted(read_scores(tmp_path)["scan_id"]) == [
        f"scan_{i:04d}" for i in range(4)
    ]


def test_rows_of_a_table_from_before_calibration_read_with_defaults(tmp_path: Path) -> None:
    files = Workdir(tmp_path)
    old = pd.DataFrame({
        "scan_id": ["scan_0000", "scan_0001"], "patient_id": ["pat_0000", "pat_0001"], "study_id": ["stu_0", "stu_1"],
        "probability": [0.7, 0.2], "decision": ["1", "0"], "threshold": 0.5, "model_version": "v-old"})
    write_parquet_if_changed(files.scores, old)  # a single-file table, the old columns and class decisions
    rows = read_scores(tmp_path)
    assert list(rows.columns) == SCORE_COLUMNS and rows["decision"].tolist() == ["positive", "negative"]
    assert rows["raw_probability"].tolist() == [0.7, 0.2] and rows["uncertainty"].isna().all()
    assert rows["refer_reason"].tolist() == ["", ""] and rows["ood_flags"].tolist() == ["", ""]
    assert rows["ood_score"].isna().all()
    ScoresTable(tmp_path).append(_rows(range(2, 3)))  # the old file becomes a part; both read together
    both = read_scores(tmp_path)
    assert len(both) == 3 and both["decision"].tolist() == ["positive", "negative", "negative"]
    assert both["uncertainty"].notna().tolist() == [False, False, True]
