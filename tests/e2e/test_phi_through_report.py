"""Scenario: canary-laden DICOM studies go through ingest, cross-validation, saliency and the PDF;
no identifier appears in any output file (Parquet cells, PNGs, NIfTI headers, the PDF's text and
metadata), in the logs or in the results."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pypdf import PdfReader

from pipeline.demo import DemoArchive, prepare_demo_source
from pipeline.ingest import IngestConfig, ingest
from tests.conftest import REPO, explain_and_report
from tests.phi_canaries import find_canaries, plant_into_existing


def test_no_identifier_reaches_maps_montages_or_the_report(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = prepare_demo_source([DemoArchive(REPO / "data" / "demo" / "breastmnist.npz", 12)], tmp_path / "src",
                                 tmp_path / "labels.csv", seed=3)
    canaries = plant_into_existing(source.folder)
    assert len(canaries) > 400 and any(c.startswith("CNRY") for c in canaries)
    assert set().union(*find_canaries(source.folder, canaries).values()) == set(canaries)  # the search works
    workdir = tmp_path / "w"
    with caplog.at_level(logging.DEBUG):
        ingest(IngestConfig(source=source.folder, workdir=workdir, labels=source.labels, secret="canary"))
        outputs = explain_and_report(workdir, n_folds=2)  # every output kind; fewer models than 3 folds
    pdf = PdfReader(str(outputs["report"].path))
    pdf_text = "\n".join(page.extract_text() for page in pdf.pages)
    assert "ScanLens interpretability report" in pdf_text
    produced = {p.suffix for p in workdir.rglob("*") if p.is_file()}
    assert {".png", ".pdf", ".parquet", ".json", ".nii"} <= produced
    extra = {"log": caplog.text, "pdf_text": pdf_text, "pdf_metadata": repr(dict(pdf.metadata)), "results": repr(outputs)}
    # ingest_manifest.parquet maps source paths to scans by design (the data steward's link back; the
    # demo importer names folders after its synthetic MRNs): it is the one table allowed to hold them.
    hits = find_canaries(workdir, canaries, extra, skip=("ingest_manifest.parquet",))
    assert hits == {}
