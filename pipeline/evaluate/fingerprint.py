"""A fingerprint of the data a model version was trained on, for out-of-distribution checks at scoring.

Computed when an evaluation is pooled (:func:`pipeline.evaluate.evaluation.evaluate_cv`) and stored
beside it, ``W/evaluation/fingerprint.json`` and ``fingerprint.npz``; the registry copies both into
each version (:class:`pipeline.layout.VersionFiles`), and :mod:`pipeline.scoring.ood` checks every
scored scan against the champion's. The training data are the fold assignment's non-test scans
(each fold model trained on all of them but its own fold). ``fingerprint.json`` holds:

- ``modalities``, ``manufacturers``: the catalogue's values and their scan counts (a missing value
  is ``"unknown"``);
- ``spacing_mm`` and ``shape``: per axis (the catalogue's RAS order), the minimum and maximum over
  the training scans;
- ``intensity``: per modality, each training scan's raw percentiles
  (:data:`pipeline.evaluate.scan_features.PERCENTILES` of the ingested volume's values, before any
  normalisation), then the minimum and maximum of each percentile over the training scans; and the
  distribution of the model inputs' coarse intensity patterns
  (:func:`pipeline.evaluate.scan_features.input_patterns`), whose threshold is the :data:`QUANTILE`
  of cross-fitted distances (fold k's scans measured against a fit on the other folds);
- ``embedding``: per fold model, its penultimate-layer features (the global-pooled input of ``fc``)
  of its training scans; the Mahalanobis distances of its out-of-fold scans give the reference, and
  its flag threshold is their :data:`QUANTILE`;
- ``margins``: how far beyond the training ranges a value may lie (see :mod:`pipeline.scoring.ood`);
- ``reference``: the checks' flag rate on the held-out test set (in distribution by construction);
- ``source_hash``: what it was computed from (fold assignment, fold models' weights); an unchanged
  evaluation reuses it.

Each distribution is a :class:`Distribution`: PCA to at most :data:`MAX_COMPONENTS` dimensions (fewer
for small data), then a Ledoit-Wolf covariance there (scikit-learn); its arrays are in
``fingerprint.npz`` under ``<name>_<array>`` (``pattern``, ``model<k>`` for the k-th fold model).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.covariance import LedoitWolf
from sklearn.decomposition import PCA

from pipeline.evaluate.folds import Folds
from pipeline.evaluate.scan_features import (
    PATTERN_EDGE,
    PERCENTILES,
    input_patterns,
    penultimate_features,
    scan_percentiles,
)
from pipeline.evaluate.splits import TEST
from pipeline.inference import load_model
from pipeline.layout import Workdir
from pipeline.preprocess import preprocess_catalog
from pipeline.storage import write_bytes_if_changed

log = logging.getLogger(__name__)

FINGERPRINT_VERSION = 1
#: PCA dimensions of the embedding statistics (fewer when a fold has fewer training scans).
MAX_COMPONENTS = 32
#: PCA dimensions of the intensity-pattern statistics.
PATTERN_COMPONENTS = 8
#: Quantile of the held-out distances that sets a distribution's flag threshold.
QUANTILE = 0.99
#: Allowed spacing and shape: [min / (1 + m), max x (1 + m)] per axis.
GEOMETRY_MARGIN = 0.25
#: Allowed raw percentile q: [min_q - m x span, max_q + m x span], span = the modality's max p99 - min p1.
INTENSITY_MARGIN = 0.10
UNKNOWN = "unknown"
_ARRAYS = ("mean", "components", "location", "precision")


@dataclass(frozen=True)
class Distribution:
    """Feature vectors' distribution: PCA, then Ledoit-Wolf; ``threshold`` is the flag limit of
    :meth:`distances` (the :data:`QUANTILE` of held-out distances)."""

    name: str  # a fold model's id, or "model input"
    mean: np.ndarray  # (F,) mean training vector
    components: np.ndarray  # (d, F) principal axes
    location: np.ndarray  # (d,) Ledoit-Wolf location in PCA space
    precision: np.ndarray  # (d, d) Ledoit-Wolf precision
    threshold: float = math.inf
    n_train: int = 0
    n_reference: int = 0

    @classmethod
    def fit(cls, name: str, train: np.ndarray, max_components: int = MAX_COMPONENTS) -> Distribution:
        """PCA (at most ``max_components`` dims, at most n - 1) and Ledoit-Wolf on ``train`` ``(n, F)``."""
        n_components = max(1, min(max_components, train.shape[0] - 1, train.shape[1]))
        pca = PCA(n_components=n_components, svd_solver="full").fit(train)
        covariance = LedoitWolf().fit(pca.transform(train))
        return cls(
            name,
            mean=np.asarray(pca.mean_, dtype=np.float64),
            components=np.asarray(pca.components_, dtype=np.float64),
            location=np.asarray(covariance.location_, dtype=np.float64),
            precision=np.asarray(covariance.precision_, dtype=np.float64),
            n_train=int(train.shape[0]),
        )

    def distances(self, vectors: np.ndarray) -> np.ndarray:
        """Mahalanobis distances (not squared) of ``vectors`` ``(n, F)``."""
        diff = (np.asarray(vectors, dtype=np.float64) - self.mean) @ self.components.T - self.location
        return np.sqrt(np.clip(np.einsum("ij,jk,ik->i", diff, self.precision, diff), 0.0, None))

    def with_threshold(self, held_out: np.ndarray, quantile: float = QUANTILE) -> Distribution:
        """This distribution with its threshold at ``quantile`` of the held-out ``distances``."""
        return replace(self, threshold=float(np.quantile(held_out, quantile)), n_reference=len(held_out))

    def meta(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n_components": int(self.components.shape[0]),
            "n_features": int(self.components.shape[1]),
            "threshold": self.threshold,
            "n_train": self.n_train,
            "n_reference": self.n_reference,
        }

    def arrays(self, key: str) -> dict[str, np.ndarray]:
        return {f"{key}_{a}": getattr(self, a) for a in _ARRAYS}

    @classmethod
    def from_stored(cls, meta: dict[str, Any], arrays: Any, key: str) -> Distribution:
        return cls(
            meta["name"],
            mean=np.asarray(arrays[f"{key}_mean"]),
            components=np.asarray(arrays[f"{key}_components"]),
            location=np.asarray(arrays[f"{key}_location"]),
            precision=np.asarray(arrays[f"{key}_precision"]),
            threshold=float(meta["threshold"]),
            n_train=int(meta["n_train"]),
            n_reference=int(meta["n_reference"]),
        )


@dataclass(frozen=True)
class Fingerprint:
    """A version's training-data fingerprint (see the module docstring for each field)."""

    dims: int
    n_scans: int
    modalities: dict[str, int]
    manufacturers: dict[str, int]
    spacing_mm: dict[str, list[float]]  # {"min": per axis, "max": per axis}
    shape: dict[str, list[float]]
    intensity: dict[str, dict[str, list[float]]]  # modality -> {"min": per percentile, "max": per percentile}
    pattern: Distribution | None  # the model inputs' intensity patterns
    embedding: list[Distribution]  # one per fold model, by fold
    margins: dict[str, float] = field(
        default_factory=lambda: {"geometry": GEOMETRY_MARGIN, "intensity": INTENSITY_MARGIN}
    )
    percentiles: tuple[float, ...] = PERCENTILES
    pattern_edge: int = PATTERN_EDGE
    source_hash: str = ""
    reference: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": FINGERPRINT_VERSION,
            "dims": self.dims,
            "n_scans": self.n_scans,
            "modalities": self.modalities,
            "manufacturers": self.manufacturers,
            "spacing_mm": self.spacing_mm,
            "shape": self.shape,
            "intensity": {
                "percentiles": list(self.percentiles),
                "per_modality": self.intensity,
                "pattern": None if self.pattern is None else self.pattern.meta(),
                "pattern_input": "the model input, area-downsampled to pattern_edge pixels per spatial axis",
                "pattern_edge": self.pattern_edge,
            },
            "embedding": {
                "features": "global-pooled penultimate layer (the input of fc)",
                "method": f"PCA (<= {MAX_COMPONENTS} dims) + Ledoit-Wolf Mahalanobis distance, per fold model",
                "threshold": f"{QUANTILE:g} quantile of the fold model's out-of-fold distances",
                "models": [e.meta() for e in self.embedding],
            },
            "margins": self.margins,
            "reference": self.reference,
            "source_hash": self.source_hash,
        }

    def save(self, json_path: Path, arrays_path: Path) -> None:
        arrays: dict[str, np.ndarray] = {}
        for k, distribution in enumerate(self.embedding):
            arrays |= distribution.arrays(f"model{k}")
        if self.pattern is not None:
            arrays |= self.pattern.arrays("pattern")
        buffer = io.BytesIO()
        np.savez(buffer, allow_pickle=False, **arrays)
        write_bytes_if_changed(arrays_path, buffer.getvalue())
        write_bytes_if_changed(json_path, json.dumps(self.to_json(), indent=2).encode())

    @classmethod
    def load(cls, json_path: Path, arrays_path: Path) -> Fingerprint:
        data = json.loads(json_path.read_text())
        intensity = data["intensity"]
        with np.load(arrays_path, allow_pickle=False) as arrays:
            models = data["embedding"]["models"]
            embedding = [Distribution.from_stored(m, arrays, f"model{k}") for k, m in enumerate(models)]
            pattern = (
                None
                if intensity["pattern"] is None
                else Distribution.from_stored(intensity["pattern"], arrays, "pattern")
            )
        return cls(
            dims=int(data["dims"]),
            n_scans=int(data["n_scans"]),
            modalities=data["modalities"],
            manufacturers=data["manufacturers"],
            spacing_mm=data["spacing_mm"],
            shape=data["shape"],
            intensity=intensity["per_modality"],
            pattern=pattern,
            embedding=embedding,
            margins=data["margins"],
            percentiles=tuple(intensity["percentiles"]),
            pattern_edge=int(intensity["pattern_edge"]),
            source_hash=data["source_hash"],
            reference=data.get("reference", {}),
        )


def load_fingerprint(json_path: Path, arrays_path: Path) -> Fingerprint | None:
    """The fingerprint stored at these paths, or None when there is none (an older evaluation) or it
    cannot be read (another format version, a damaged file; logged)."""
    if not json_path.exists() or not arrays_path.exists():
        return None
    try:
        return Fingerprint.load(json_path, arrays_path)
    except (KeyError, TypeError, ValueError, OSError, zipfile.BadZipFile) as error:
        log.warning(
            "the training-data fingerprint %s cannot be read (%s): ignored", json_path.name, type(error).__name__
        )
        return None


def category(value: object) -> str:
    """A catalogue value as the fingerprint counts it: a missing one is :data:`UNKNOWN`."""
    return value if isinstance(value, str) and value else UNKNOWN


def _source_hash(folds: Folds, records: list[dict[str, Any]]) -> str:
    payload = [FINGERPRINT_VERSION, PERCENTILES, PATTERN_EDGE, PATTERN_COMPONENTS, QUANTILE, MAX_COMPONENTS]
    payload += [GEOMETRY_MARGIN, INTENSITY_MARGIN, folds.folds_hash]
    payload += [[(r["fold"], r["model_id"], r.get("weights_sha256")) for r in records]]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()


def build_fingerprint(workdir: Path, folds: Folds, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Compute (or reuse, when its sources are unchanged) the evaluation's fingerprint, write it to
    ``W/evaluation/fingerprint.json`` and ``.npz``, and return the block ``metrics.json`` keeps
    (``ood``: where it is, the thresholds, the test set's flag rate; ``{"note": <why>}`` without the
    fold models' weights, when any earlier fingerprint is removed)."""
    wd = Workdir(workdir)
    missing = [r["model_id"] for r in records if not wd.model(r["model_id"]).weights.exists()]
    if missing:  # e.g. pooled predictions without their models: nothing to fingerprint with
        for stale in (wd.fingerprint, wd.fingerprint_arrays):  # never registered beside other models
            stale.unlink(missing_ok=True)
        return {"note": f"no fingerprint: fold model {missing[0]} has no weights in this work folder"}
    source = _source_hash(folds, records)
    fingerprint = load_fingerprint(wd.fingerprint, wd.fingerprint_arrays)
    if fingerprint is None or fingerprint.source_hash != source:
        fingerprint = _compute(workdir, folds, records, source)
        fingerprint.save(wd.fingerprint, wd.fingerprint_arrays)
    return {
        "fingerprint": wd.file_ref(wd.fingerprint),
        "modalities": sorted(fingerprint.modalities),
        "embedding_thresholds": [e.threshold for e in fingerprint.embedding],
        "reference": fingerprint.reference,
    }


def _ranges(values: pd.Series) -> dict[str, list[float]]:
    matrix = np.array([list(v) for v in values], dtype=np.float64)
    return {"min": matrix.min(0).tolist(), "max": matrix.max(0).tolist()}


def _cross_fitted(vectors: np.ndarray, fold: np.ndarray, name: str) -> Distribution:
    """A fit on every training row, thresholded on distances each fold's rows get from a fit on the
    other folds (so the threshold is measured on rows the fit did not see)."""
    training = fold != TEST
    held_out = [
        Distribution.fit(name, vectors[training & (fold != k)], PATTERN_COMPONENTS).distances(vectors[fold == k])
        for k in sorted(set(fold[training].tolist()))
    ]
    return Distribution.fit(name, vectors[training], PATTERN_COMPONENTS).with_threshold(np.concatenate(held_out))


def _compute(workdir: Path, folds: Folds, records: list[dict[str, Any]], source: str) -> Fingerprint:
    wd = Workdir(workdir)
    catalog = pd.read_parquet(wd.catalog)
    scans = catalog.merge(folds.frame[["scan_id", "fold"]], on="scan_id", how="inner").sort_values("scan_id")
    scans = scans.reset_index(drop=True)
    fold = scans["fold"].to_numpy()
    training = scans[fold != TEST]
    modality = training["modality"].map(category)
    levels = scan_percentiles([wd.root / p for p in scans["volume_path"]])
    intensity = {
        m: {"min": np.nanmin(rows, 0).tolist(), "max": np.nanmax(rows, 0).tolist()}
        for m in sorted(modality.unique())
        for rows in [levels[fold != TEST][(modality == m).to_numpy()]]
    }
    records = sorted(records, key=lambda r: r["fold"])
    models = [load_model(wd.model(r["model_id"]).root) for r in records]
    index = preprocess_catalog(workdir, models[0].preprocess, scans=scans.drop(columns="fold")).index
    if not index["scan_id"].equals(scans["scan_id"]):  # both sorted by scan_id: one row order for everything
        raise RuntimeError("the preprocessing index does not match the fold assignment's scans")
    patterns = input_patterns(wd.root, index)
    features = penultimate_features(models, wd.root, index)
    embedding = []
    for record, feats in zip(records, features, strict=True):
        k = int(record["fold"])
        fitted = Distribution.fit(record["model_id"], feats[(fold != k) & (fold != TEST)])
        embedding.append(fitted.with_threshold(fitted.distances(feats[fold == k])))
    fingerprint = Fingerprint(
        dims=int(models[0].preprocess.dims),
        n_scans=len(training),
        modalities={str(k): int(v) for k, v in modality.value_counts().sort_index().items()},
        manufacturers={
            str(k): int(v) for k, v in training["manufacturer"].map(category).value_counts().sort_index().items()
        },
        spacing_mm=_ranges(training["spacing_mm"]),
        shape=_ranges(training["shape"]),
        intensity=intensity,
        pattern=_cross_fitted(patterns, fold, "model input"),
        embedding=embedding,
        source_hash=source,
    )
    from pipeline.scoring.ood import check_scans, flag_summary  # scoring imports evaluation: import at call time

    test = fold == TEST
    reference: dict[str, Any] = {"test": None}
    if test.any():
        by_model = {e.name: f[test] for e, f in zip(embedding, features, strict=True)}
        results = check_scans(fingerprint, scans[test].reset_index(drop=True), levels[test], patterns[test], by_model)
        reference["test"] = flag_summary(results)
        log.info("out-of-distribution checks flag %s of the test set", f"{reference['test']['rate']:.1%}")
    return replace(fingerprint, reference=reference)
