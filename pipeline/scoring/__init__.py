"""Batch scoring of new scans with the registry's champion."""

from __future__ import annotations

from pipeline.scoring.score import ScoreResult, load_champion, score_scans
from pipeline.settings.score import ScoreSettings

__all__ = ["ScoreResult", "ScoreSettings", "load_champion", "score_scans"]
