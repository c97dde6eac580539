"""The performance section quotes the champion's score drift (``W/scoring/drift.json``) when there is one."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from reportlab.platypus import Paragraph

from pipeline.layout import Workdir
from pipeline.report.build import _key
from pipeline.report.flowables import Styles
from pipeline.report.inputs import ReportSettings, read_inputs
from pipeline.report.sections import performance, score_drift_paragraph
from pipeline.scoring.drift import compare
from pipeline.settings.drift import DriftSettings


def _record() -> dict:  # type: ignore[type-arg]
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"modality": ["US"] * 10, "manufacturer": ["A"] * 10})
    now = reference.assign(manufacturer="A & B <x>")  # markup in a header value is text, not markup
    recent = pd.DataFrame({"probability": rng.beta(5, 2, 300), "decision": "negative", "ood_flags": ""})
    return {"champion": "v-0123456789ab", **compare(rng.beta(2, 5, 600), recent, reference, now, DriftSettings())}


def _text(flowables: list) -> str:  # type: ignore[type-arg]
    return " ".join(f.getPlainText() for f in flowables if isinstance(f, Paragraph))


def test_the_paragraph_quotes_psi_flag_rate_n_window_and_the_verdict() -> None:
    text = _text(score_drift_paragraph(_record(), Styles.sample()))
    assert text.startswith("Score drift of the model in use (champion v-0123456789ab), its last 300 scores (window 500)")
    assert "flag rate 0.0% (limit 10%)" in text and "Verdict: above limits: PSI" in text
    assert "largest share change: manufacturer 'A & B <x>' 0% to 100% (limit 20%)" in text
    assert score_drift_paragraph(None, Styles.sample()) == []
    assert score_drift_paragraph({"champion": None, "verdict": "no champion"}, Styles.sample()) == []


def test_the_report_reads_drift_json_into_its_performance_section_and_its_key(
    reported_workdir: tuple[Path, dict], tmp_path: Path  # type: ignore[type-arg]
) -> None:
    workdir = tmp_path / "w"
    shutil.copytree(reported_workdir[0], workdir, ignore=shutil.ignore_patterns("checkpoint.pt", "scoring"))
    before = read_inputs(workdir, ReportSettings(), "2026-01-01")
    assert before.drift is None and "Score drift" not in _text(performance(before, Styles.sample()))
    Workdir(workdir).drift.parent.mkdir(parents=True, exist_ok=True)
    Workdir(workdir).drift.write_text(json.dumps(_record()))
    after = read_inputs(workdir, ReportSettings(), "2026-01-01")
    assert after.drift == _record() and "Score drift of the model in use" in _text(performance(after, Styles.sample()))
    assert _key(after) != _key(before) and _key(dataclasses.replace(after, drift=None)) == _key(before)
