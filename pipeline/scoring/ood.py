"""Out-of-distribution checks at scoring: is a scan like the data the champion was trained on?

Each scored scan is compared with the champion version's training-data fingerprint
(:mod:`pipeline.evaluate.fingerprint`). The checks and their flags:

- ``wrong_modality``: the scan's modality is none of the training scans' modalities;
- ``spacing_out_of_range``, ``shape_out_of_range``: some axis (catalogue RAS order) lies outside
  the training range widened by the geometry margin ``m`` (default 0.25): ``[min / (1 + m), max x (1 + m)]``;
- ``intensity_out_of_range``: either of two intensity checks.
  (a) *Levels*: one of the scan's raw intensity percentiles (p1, p10, p50, p90, p99 of the ingested
  volume, before normalisation) lies outside the range of that percentile over the training scans
  *of the same modality*, widened by ``m`` (default 0.10) of that modality's span (max p99 - min p1);
  a modality the training data lacks is ``wrong_modality`` instead. (b) *Pattern*: where the
  intensities sit in the image, as the model sees it: the model input area-downsampled to 8 pixels
  per axis, whose Mahalanobis distance (PCA + Ledoit-Wolf) to the training inputs is above the 0.99
  quantile of cross-fitted training distances. (a) is blind to an inverted image with a symmetric
  histogram; (b) is not.
- ``embedding_distance``: the scan's penultimate-layer features are far from the training scans':
  for each fold model, the Mahalanobis distance (PCA + Ledoit-Wolf) divided by that model's
  threshold (the 0.99 quantile of its out-of-fold scans' distances); the mean over the fold
  models above 1 flags (averaging over the ensemble: at most about 1% of in-distribution scans).

``ood_score`` is the largest *normalised distance* over the continuous checks (spacing, shape,
intensity levels and pattern, embedding), each scaled so that 1 is its flag limit: 0 is the centre
of the allowed range (the training mean for a distribution), above 1 is out of range. A categorical
check (``wrong_modality``) flags without entering the score; NaN means no check applied (no fingerprint).

One call for scoring: :func:`assess_scans` ``(fingerprint, scans, scan_root, models, index,
features) -> list[OodResult]``, in the preprocessing index's row order; :func:`champion_check` binds
it to a registry version (scoring's hook, :data:`pipeline.scoring.score.OodCheck`). It reads each
scan's ingested volume (``scan_root / volume_path``) for its percentiles and cached model input for
its pattern; the models' features come from scoring's own forward pass (``features``; computed here
only when not given). :func:`check_scans` ``(fingerprint,
scans, levels, patterns, embeddings)`` is the check itself, on measurements made elsewhere
(:mod:`pipeline.evaluate.scan_features`): ``scans`` catalogue rows (``modality``, ``spacing_mm``,
``shape``), ``levels`` ``(n, 5)`` raw percentiles, ``patterns`` ``(n, P)`` input patterns,
``embeddings`` each fold model's features by model id (``{model_id: (n, F)}``).
A flagged scan's decision is ``refer`` with :attr:`OodResult.reason` (``out of distribution: <flags>``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.evaluate.fingerprint import Fingerprint, category, load_fingerprint
from pipeline.evaluate.scan_features import input_patterns, penultimate_features, scan_percentiles
from pipeline.inference import LoadedModel
from pipeline.layout import VersionFiles

log = logging.getLogger(__name__)

WRONG_MODALITY = "wrong_modality"
SPACING = "spacing_out_of_range"
SHAPE = "shape_out_of_range"
INTENSITY = "intensity_out_of_range"
EMBEDDING = "embedding_distance"
#: Every flag, in the order a scan's flags are listed.
FLAGS = (WRONG_MODALITY, SPACING, SHAPE, INTENSITY, EMBEDDING)
#: The intensity-pattern distance (a key of :attr:`OodResult.distances`): it flags ``intensity_out_of_range``.
PATTERN = "intensity_pattern"
FLAG_OF = {PATTERN: INTENSITY}
REASON_PREFIX = "out of distribution: "


@dataclass(frozen=True)
class OodResult:
    """One scan's checks: ``score`` (the largest normalised distance; > 1 is out of range; NaN when no
    check applied), ``flags`` (names from :data:`FLAGS`), and each continuous check's distance."""

    score: float
    flags: tuple[str, ...]
    distances: dict[str, float] = field(default_factory=dict)

    @property
    def flagged(self) -> bool:
        return bool(self.flags)

    @property
    def reason(self) -> str:
        """The referral reason: ``out of distribution: <flag>, <flag>`` ("" when not flagged)."""
        return REASON_PREFIX + ", ".join(self.flags) if self.flags else ""

    @property
    def flag_text(self) -> str:
        """The scores table's ``ood_flags``: comma-joined flag names, "" when none."""
        return ",".join(self.flags)


NOT_CHECKED = OodResult(float("nan"), ())


def version_fingerprint(version: VersionFiles) -> Fingerprint | None:
    """A registry version's fingerprint, or None for a version registered without one (older evaluations)."""
    return load_fingerprint(version.fingerprint, version.fingerprint_arrays)


def _log_range(values: Sequence[Any], low: Sequence[float], high: Sequence[float], margin: float) -> np.ndarray:
    """Per row, the largest over axes of ``|log v - c| / h`` where ``[c - h, c + h]`` is
    ``[log(low / (1 + margin)), log(high x (1 + margin))]``: 1 at the limit; inf for an axis count
    that differs from the training data's, or a non-positive value."""
    lo = np.log(np.asarray(low, dtype=np.float64) / (1 + margin))
    hi = np.log(np.asarray(high, dtype=np.float64) * (1 + margin))
    centre, half = (lo + hi) / 2, (hi - lo) / 2
    out = np.full(len(values), np.inf)
    for i, value in enumerate(values):
        v = np.asarray(list(value) if value is not None else [], dtype=np.float64)
        if v.shape == centre.shape and (v > 0).all():
            out[i] = float(np.max(np.abs(np.log(v) - centre) / half))
    return out


def _intensity(fingerprint: Fingerprint, modalities: Sequence[str], levels: np.ndarray) -> np.ndarray:
    """Per row, the largest over percentiles of ``|v - c| / h`` for the allowed band of the scan's
    modality (NaN for a modality the training data lacks, or a scan without finite values)."""
    out = np.full(len(modalities), np.nan)
    margin = fingerprint.margins["intensity"]
    for modality, ranges in fingerprint.intensity.items():
        rows = np.asarray([m == modality for m in modalities], dtype=bool)
        if not rows.any():
            continue
        low, high = np.asarray(ranges["min"], dtype=np.float64), np.asarray(ranges["max"], dtype=np.float64)
        pad = margin * max(float(high[-1] - low[0]), 1e-6)
        centre, half = (low + high) / 2, (high - low) / 2 + pad
        out[rows] = np.max(np.abs(levels[rows] - centre) / half, axis=1)
    return out


def _embedding(fingerprint: Fingerprint, embeddings: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    """Per row, the mean over fold models of distance / threshold."""
    if not fingerprint.embedding:
        return np.full(n, np.nan)
    missing = [e.name for e in fingerprint.embedding if e.name not in embeddings]
    if missing:
        raise ValueError(f"no features for the fingerprint's model(s) {', '.join(missing)}")
    ratios = [e.distances(embeddings[e.name]) / e.threshold for e in fingerprint.embedding]
    return np.mean(ratios, axis=0)


def check_scans(
    fingerprint: Fingerprint,
    scans: pd.DataFrame,
    levels: np.ndarray,
    patterns: np.ndarray,
    embeddings: Mapping[str, np.ndarray],
) -> list[OodResult]:
    """The checks of the module docstring for each row of ``scans`` (rows of ``levels``, ``patterns``
    and of each ``embeddings`` array in the same order)."""
    n = len(scans)
    levels = np.asarray(levels, dtype=np.float64).reshape(n, len(fingerprint.percentiles))
    modalities = [category(m) for m in scans["modality"]]
    margin = fingerprint.margins["geometry"]
    pattern = fingerprint.pattern
    distances = {
        SPACING: _log_range(
            list(scans["spacing_mm"]), fingerprint.spacing_mm["min"], fingerprint.spacing_mm["max"], margin
        ),
        SHAPE: _log_range(list(scans["shape"]), fingerprint.shape["min"], fingerprint.shape["max"], margin),
        INTENSITY: _intensity(fingerprint, modalities, levels),
        PATTERN: np.full(n, np.nan) if pattern is None else pattern.distances(patterns) / pattern.threshold,
        EMBEDDING: _embedding(fingerprint, embeddings, n),
    }
    results = []
    for i, modality in enumerate(modalities):
        row = {name: float(values[i]) for name, values in distances.items()}
        flags = {FLAG_OF.get(name, name) for name, value in row.items() if value > 1}  # NaN is never > 1
        if modality not in fingerprint.modalities:
            flags.add(WRONG_MODALITY)
        finite = [v for v in row.values() if not np.isnan(v)]
        score = max(finite) if finite else float("nan")
        results.append(OodResult(score, tuple(f for f in FLAGS if f in flags), row))
    return results


def assess_scans(
    fingerprint: Fingerprint | None,
    scans: pd.DataFrame,
    scan_root: Path,
    models: Sequence[LoadedModel],
    index: pd.DataFrame,
    features: Mapping[str, np.ndarray] | None = None,
) -> list[OodResult]:
    """Check the scans of a preprocessed ``index`` (rows of ``scans``, the catalogue, matched by
    ``scan_id``) with ``models`` (the version's fold models); in ``index`` row order.
    Without a fingerprint every result is :data:`NOT_CHECKED` (score NaN, no flags)."""
    if fingerprint is None:
        return [NOT_CHECKED] * len(index)
    rows = scans.drop_duplicates("scan_id").set_index("scan_id").loc[list(index["scan_id"])].reset_index()
    levels = scan_percentiles([scan_root / p for p in rows["volume_path"]])
    patterns = input_patterns(scan_root, index)
    if features is None or any(m.model_id not in features for m in models):
        features = {m.model_id: f for m, f in zip(models, penultimate_features(models, scan_root, index), strict=True)}
    results = check_scans(fingerprint, rows, levels, patterns, features)
    flagged = sum(r.flagged for r in results)
    if flagged:
        log.info("out-of-distribution checks flagged %d of %d scans", flagged, len(results))
    return results


def champion_check(version: VersionFiles, models: Sequence[LoadedModel]) -> Callable[..., list[OodResult]] | None:
    """Scoring's out-of-distribution hook for a registry version: :func:`assess_scans` bound to the
    version's fingerprint and fold models, called as ``check(scans=..., scan_root=..., index=...)``
    (:data:`pipeline.scoring.score.OodCheck`). None for a version without a fingerprint (logged):
    its scores get ``ood_score`` NaN and no flags."""
    fingerprint = version_fingerprint(version)
    if fingerprint is None:
        log.warning(
            "model version %s has no training-data fingerprint: no out-of-distribution checks", version.root.name
        )
        return None
    names = sorted(e.name for e in fingerprint.embedding)
    if names != sorted(m.model_id for m in models):
        log.warning(
            "model version %s: its fingerprint is of other models: no out-of-distribution checks", version.root.name
        )
        return None
    return partial(assess_scans, fingerprint, models=list(models))


def flag_summary(results: Sequence[OodResult]) -> dict[str, Any]:
    """How many scans were flagged, their share, and the count of each flag."""
    n, flagged = len(results), sum(r.flagged for r in results)
    return {
        "n": n,
        "flagged": flagged,
        "rate": flagged / n if n else None,
        "by_flag": {f: sum(f in r.flags for r in results) for f in FLAGS},
    }
