"""What a report is built from: the work folder's files only (catalogue, quarantine, ``W/evaluation``,
``W/saliency`` and the fold models' cards), and the words the pipeline cannot know."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.errors import UserInputError
from pipeline.layout import Workdir
from pipeline.storage import read_parquet


@dataclass(frozen=True)
class ReportSettings:
    """Words that the pipeline cannot know, with defaults that say so."""

    audience: str = "the institutional review board (model validation)"
    intended_use: str = (
        "Research use: triage support that estimates the probability of the positive class for a "
        "single scan, for review by a qualified clinician. Not a diagnostic device."
    )
    out_of_scope: str = (
        "Diagnosis without clinician review; patients, modalities, scanners or populations unlike the "
        "training data; paediatric use unless evaluated; any use as localisation of findings."
    )


@dataclass(frozen=True)
class ReportInputs:
    """Everything the sections read. ``cards`` are the fold models' cards in fold order; ``date`` is ISO 8601;
    ``drift`` is the current champion's last score-drift record (``W/scoring/drift.json``), None before any."""

    workdir: Workdir
    metrics: dict[str, Any]
    sanity: dict[str, Any]
    cases: pd.DataFrame
    cards: list[dict[str, Any]]
    catalog: pd.DataFrame
    quarantine: pd.DataFrame | None
    settings: ReportSettings
    date: str
    drift: dict[str, Any] | None = None

    @property
    def card(self) -> dict[str, Any]:
        """The first fold model's card (the folds share every setting the report quotes)."""
        return self.cards[0]

    @property
    def subgroups(self) -> dict[str, Any]:
        return self.metrics.get("subgroups") or {}


def read_inputs(workdir: Path, settings: ReportSettings, date: str) -> ReportInputs:
    """Read what the report needs; a user error names the missing step when evaluation or saliency has not run."""
    wd = Workdir(workdir)
    if not wd.metrics.exists():
        raise UserInputError(f"no evaluation in {workdir}: run `scanlens evaluate` first")
    if not wd.sanity.exists():
        raise UserInputError(f"no saliency maps in {workdir}: run `scanlens explain` first")
    metrics, sanity = json.loads(wd.metrics.read_text()), json.loads(wd.sanity.read_text())
    cases = pd.read_parquet(wd.saliency_cases)
    cards = []
    for k in range(metrics["settings"]["n_folds"]):
        record = json.loads(wd.fold(k).record.read_text())
        cards.append(json.loads(wd.model(record["model_id"]).card.read_text()))
    drift = json.loads(wd.drift.read_text()) if wd.drift.is_file() else None
    return ReportInputs(
        wd,
        metrics,
        sanity,
        cases,
        cards,
        pd.read_parquet(wd.catalog),
        read_parquet(wd.quarantine),
        settings,
        date,
        drift,
    )
