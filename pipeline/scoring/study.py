"""Scoring one inbox study end to end: ingest, preprocess, score, overlays, DICOM outputs.

The study folder is ingested with the same reader and de-identification as any source (step 1),
into its own intake work folder ``W/scoring/intake/<study key>/`` (so that studies scored in
parallel never write the same tables), with the project's pseudonymisation secret, so that its
``scan_id``/``patient_id``/``study_id`` equal what a training ingest of the same files would give.
Unreadable or broken files are quarantined there with a reason (``quarantine.parquet``) and the
rest of the study is scored. Scores join ``W/scoring/scores.parquet`` (one part per study).

A long-running process scores one study after another through a :class:`pipeline.scoring.scorer.Scorer`,
which keeps the champion, the isolated ingest workers and the scores table's index warm between them.
"""

from __future__ import annotations

import io
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.deid import load_secret
from pipeline.evaluate.classes import positive_class
from pipeline.ingest import IngestConfig, ingest
from pipeline.layout import Workdir
from pipeline.locking import writes_workdir
from pipeline.parallel import WorkerPool
from pipeline.scoring.dicom_out import (
    ScoredScan,
    read_source_headers,
    write_score_outputs,
)
from pipeline.scoring.score import Champion, load_champion, score_scans
from pipeline.scoring.table import ScoresTable

log = logging.getLogger(__name__)
NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass
class StudyScoring:
    """What scoring one study did, in pseudonymous ids and counts (safe for logs and Dagster metadata)."""

    key: str
    model_version: str
    n_files: int
    n_scans: int
    scores: pd.DataFrame  # rows added in this call
    n_skipped: int  # scans already scored by this champion
    n_incompatible: int  # scans of other dimensions than the champion reads
    quarantine_by_reason: dict[str, int]
    dicom_outputs: list[Path] = field(default_factory=list)
    n_without_dicom_source: int = 0  # scored scans that came from NIfTI: no SR/SC can reference a study
    #: wall seconds: ingest (of which ingest_tasks: the isolated workers' reading and building), preprocess,
    #: inference, overlays, outputs, table (the scores table's check and append)
    seconds: dict[str, float] = field(default_factory=dict)
    dicom_failures: dict[str, str] = field(default_factory=dict)  # scan_id -> error type: scored, but no SR/SC
    champion_dims: int = 2

    @property
    def not_scored(self) -> dict[str, int]:
        """Why scans of this study were not scored, as ``reason -> count`` (already scored ones aside)."""
        reasons = {}
        if self.n_incompatible:
            other = 5 - self.champion_dims  # 2 <-> 3
            reasons[f"{other}D scan, champion is {self.champion_dims}D"] = self.n_incompatible
        return reasons


@writes_workdir("score")
def score_study(
    workdir: Path,
    folder: Path,
    key: str,
    outbox: Path | None = None,
    secret: str | None = None,
    champion: Champion | None = None,
    overlays: bool = True,
    workers: int | None = None,
    pool: WorkerPool | None = None,
    table: ScoresTable | None = None,
) -> StudyScoring:
    """Ingest the study ``folder`` (read only) and score its scans with the champion.

    ``outbox`` receives a DICOM SR per scored scan and, with ``overlays``, a Secondary Capture of
    its GradCAM overlay. Re-running on an unchanged folder with the same champion does nothing.
    ``pool`` (warm isolated ingest workers, with the ingest's default limits) and ``table`` are what a
    :class:`pipeline.scoring.scorer.Scorer` keeps between studies; by default they are made for this call.
    """
    champion = champion or load_champion(workdir)
    wd = Workdir(workdir)
    seed = load_secret(secret, wd.secret_file)
    intake = wd.intake(key)
    clock = time.perf_counter()
    config = IngestConfig(source=folder, workdir=intake.root, secret=seed.decode(), workers=workers)
    result = ingest(config, pool=pool)
    ingest_seconds = time.perf_counter() - clock
    catalog = pd.read_parquet(intake.catalog)
    manifest = pd.read_parquet(intake.manifest) if outbox is not None else None  # source files: for the outputs
    written: list[Path] = []
    no_source = Counter[str]()
    failures: dict[str, str] = {}

    def write_outputs(rows: pd.DataFrame) -> None:
        if outbox is None or manifest is None:
            return
        for row in rows.itertuples(index=False):
            members = manifest.loc[
                (manifest["scan_id"] == row.scan_id) & (manifest["status"] == "catalogued"), "source_path"
            ]
            paths = [folder / p for p in members if not p.lower().endswith(NIFTI_SUFFIXES)]
            if not paths:
                no_source["nifti"] += 1
                continue
            rgb = None
            png = wd.overlay(row.scan_id, champion.version)
            if overlays and png.exists():
                rgb = np.asarray(Image.open(io.BytesIO(png.read_bytes())).convert("RGB"))
            scored = ScoredScan(
                row.scan_id,
                champion.version,
                float(row.probability),
                champion.threshold,
                str(row.decision),
                positive_class(champion.classes),
                float(row.uncertainty),
                str(row.refer_reason),
                champion.recalibration.method,
                float(row.ood_score),
            )
            try:
                out = write_score_outputs(outbox, read_source_headers(paths), scored, rgb, seed)
            except Exception as exc:  # noqa: BLE001 (one scan's odd headers must not stop the others' scores)
                failures[row.scan_id] = type(exc).__name__  # the message may quote a header value: not logged
                log.warning("no DICOM output for %s: %s while building it", row.scan_id, type(exc).__name__)
                continue
            written.extend(p for p in (out.sr, out.sc) if p is not None)

    scored = score_scans(
        workdir, catalog, champion, overlays, scan_root=intake.root, on_scored=write_outputs, table=table
    )
    reasons = result.quarantine_by_reason  # what intake.quarantine holds, by reason
    log.info(
        "study %s: %d files, %d scans, %d scored, %d already scored, quarantined %s",
        key,
        result.n_source_files,
        len(catalog),
        len(scored.scores),
        scored.n_skipped,
        reasons,
    )
    return StudyScoring(
        key,
        champion.version,
        result.n_source_files,
        len(catalog),
        scored.scores,
        scored.n_skipped,
        scored.n_incompatible,
        reasons,
        written,
        no_source["nifti"],
        {"ingest": ingest_seconds, "ingest_tasks": result.task_seconds, **scored.seconds},
        failures,
        champion.dims,
    )
