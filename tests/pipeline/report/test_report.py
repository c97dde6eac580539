"""The review-board PDF: pages render, every section is there, contents and page numbers."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pandas as pd
from pypdf import PdfReader

from pipeline.explain.run import explain
from pipeline.report import SECTIONS, build_report
from pipeline.report.claim import CLAIM_2024, NOT_AVAILABLE
from pipeline.report.sections import BUILDERS, selection_text
from tests.conftest import requires_poppler


@requires_poppler
def test_pdf_pages_render_and_hold_every_section(reported_workdir: tuple[Path, dict], tmp_path: Path) -> None:
    workdir, outputs = reported_workdir
    report = outputs["report"]
    assert report.path.parent == workdir / "reports" and report.path.suffix == ".pdf"
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(report.path), str(tmp_path / "page")], check=True, timeout=120)
    pages = sorted(tmp_path.glob("page-*.png"))
    assert len(pages) == report.pages == len(PdfReader(str(report.path)).pages) >= 8
    assert all(p.stat().st_size > 1000 for p in pages)
    text = subprocess.run(["pdftotext", "-layout", str(report.path), "-"], capture_output=True, text=True, check=True).stdout
    for section in SECTIONS:
        assert section in text, section
    assert "Contents" in text and f"Page {report.pages}" in text
    flat = " ".join(text.split())
    assert "they are not evidence of where a lesion is" in flat
    assert "random initialisation" in flat  # no ImageNet weights in tests: stated plainly
    baseline = json.loads((workdir / "evaluation" / "metrics.json").read_text())["baseline"]
    assert "Model against a pixel baseline" in flat and "difference, model - baseline" in flat
    assert flat.count(" ".join(baseline["statement"].split()[:9])) >= 2  # the title-page summary and section 5
    width, height = PdfReader(str(report.path)).pages[0].mediabox.upper_right
    assert (round(float(width)), round(float(height))) == (595, 842)  # A4 in points


def test_claim_checklist_maps_every_item(reported_workdir: tuple[Path, dict]) -> None:
    assert [n for n, _, _ in CLAIM_2024] == list(range(1, 45))
    sections = {s.split(" ", 1)[0] for s in SECTIONS}
    for _, _, where in CLAIM_2024:
        assert where == NOT_AVAILABLE or where.split(" ", 1)[0] in sections


def test_sanity_json_cases_and_idempotent_reruns(reported_workdir: tuple[Path, dict]) -> None:
    workdir, outputs = reported_workdir
    sanity = json.loads((workdir / "saliency" / "sanity.json").read_text())
    assert set(sanity["methods"]) == {"integrated_gradients", "saliency", "gradcam", "occlusion"}
    for entry in sanity["methods"].values():
        assert entry["verdict"] in ("passes sanity check", "fails sanity check")
        assert len(entry["randomisation"]["stages"]) == 6 and entry["deletion_random_auc"] > 0
    ig = sanity["methods"]["integrated_gradients"]  # completeness: |sum of attributions - output change|, relative
    assert math.isfinite(ig["ig_relative_delta_max"]) and 0 <= ig["ig_relative_delta_median"] <= ig["ig_relative_delta_max"]
    cases = pd.read_parquet(workdir / "saliency" / "cases.parquet")
    assert set(cases["kind"]) <= {"TP", "TN", "FP", "FN"} and len(cases) >= 2
    for files in cases["files"]:
        for rel in json.loads(files).values():
            assert (workdir / rel).read_bytes()[:4] == b"\x89PNG"
    again = explain(workdir, outputs["settings"])
    assert not again.computed
    stamp = outputs["report"].path.stat().st_mtime_ns
    assert build_report(workdir).path.stat().st_mtime_ns == stamp


def test_every_section_has_a_builder_and_model_selection_names_its_metric() -> None:
    assert len(BUILDERS) == len(SECTIONS)
    by_auroc = [{"validation": {"selection_metric": "val_auroc"}}, {"validation": {}}]  # older cards name no metric
    assert selection_text(by_auroc).startswith("best validation AUROC on a patient-grouped")
    by_loss = [*by_auroc, {"validation": {"selection_metric": "neg_val_loss"}}]
    assert "lowest validation loss" in selection_text(by_loss)
