"""Batch scoring of new scans with the registry's champion."""

from __future__ import annotations

from pipeline.scoring.score import ScoreResult, load_champion, score_scans
from pipeline.scoring.scorer import Scorer, warm_scorer
from pipeline.scoring.table import ScoresTable, read_scores
from pipeline.settings.score import ScoreSettings

__all__ = [
    "ScoreResult",
    "ScoreSettings",
    "Scorer",
    "ScoresTable",
    "load_champion",
    "read_scores",
    "score_scans",
    "warm_scorer",
]
