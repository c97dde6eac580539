"""Scoring catalogued scans with the champion: probabilities, uncertainty, decisions, GradCAM overlays.

The champion is the registry's champion version: its fold models (the "members"), its preprocessing
config, its recalibration, its pre-specified threshold and referral limits (all fitted on pooled
out-of-fold predictions when it was evaluated: :mod:`pipeline.evaluate.calibrated`). Per scan:

- each member's positive-class probability is recalibrated (**calibrate, then average**, as the
  evaluation did on the test set); ``probability`` is the mean of the calibrated members,
  ``raw_probability`` the mean of the uncalibrated ones, ``uncertainty`` the population std (ddof 0)
  of the calibrated members;
- the decision is ``refer`` when the probability lies in the referral band around the threshold, the
  uncertainty is above its limit (:class:`pipeline.evaluate.referral.ReferralLimits`), or the
  out-of-distribution check flags the scan; otherwise ``positive`` (probability >= threshold) or
  ``negative``. ``refer_reason`` lists the reasons (joined by ``"; "``);
- ``ood_score`` and ``ood_flags`` come from the out-of-distribution hook (:data:`OodCheck`, the
  champion's ``ood`` or :func:`score_scans`'s ``ood`` argument; :mod:`pipeline.scoring.ood`): NaN and
  ``""`` without one.

A registry version from before calibration and referral (its record and ``metrics.json`` have no
``recalibration``/``referral``) scores with the identity calibration and no referral band or
uncertainty limit (logged once per version).

``W/scoring/scores.parquet`` holds one row per (scan, model version), columns
:data:`pipeline.scoring.table.SCORE_COLUMNS` (a folder of parts, one per call:
:mod:`pipeline.scoring.table`). A scan already scored by the current champion is skipped; a new
champion scores it again (the old row stays, for audit).
``W/scoring/overlays/<scan_id>_<version>.png`` is the ensemble's GradCAM over the scan.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch

from pipeline.errors import UserInputError
from pipeline.evaluate.classes import positive_class
from pipeline.evaluate.recalibration import Recalibration
from pipeline.evaluate.referral import ReferralLimits, decisions
from pipeline.explain.attribution import attribute, importance
from pipeline.explain.render import ScanOverlay
from pipeline.inference import LoadedModel, load_model, predict_members
from pipeline.layout import VersionFiles, Workdir
from pipeline.locking import writes_workdir
from pipeline.preprocess import preprocess_catalog
from pipeline.registry import Registry
from pipeline.scoring.ood import champion_check
from pipeline.scoring.table import SCORE_COLUMNS, ScoresTable
from pipeline.storage import write_bytes_if_changed

log = logging.getLogger(__name__)
__all__ = ["SCORE_COLUMNS", "Champion", "OodCheck", "ScoreResult", "load_champion", "score_scans"]
OOD_REASON_PREFIX = "out of distribution: "


class OodOutcome(Protocol):
    """What the out-of-distribution hook returns per scan (e.g. :class:`pipeline.scoring.ood.OodResult`)."""

    @property
    def score(self) -> float: ...  # NaN when no check applied

    @property
    def flags(self) -> tuple[str, ...]: ...  # flag names; empty when in distribution


#: The out-of-distribution hook: called as ``ood(scans=rows, scan_root=root, index=index, features=f)``
#: with the catalogue rows being scored, the folder their ``volume_path`` is relative to, their
#: preprocessing index (``cache_path`` relative to ``scan_root``) and each fold model's penultimate
#: features ``{model_id: (n, F)}``, caught on scoring's own forward pass; returns one outcome per index
#: row, in the index's order. Bind the champion's fingerprint and models beforehand (``functools.partial``).
OodCheck = Callable[..., Sequence[OodOutcome]]
_warned_versions: set[str] = set()


@dataclass(frozen=True)
class Champion:
    """A registry version ready to score. ``recalibration`` (identity by default) and ``referral``
    (None: no band, no uncertainty limit) come from the version's record; ``ood`` is the
    out-of-distribution hook (:data:`OodCheck`), None without a fingerprint."""

    version: str
    models: list[LoadedModel]
    threshold: float
    classes: list[str]
    recalibration: Recalibration = field(default_factory=Recalibration)
    referral: ReferralLimits | None = None
    ood: OodCheck | None = None

    @property
    def dims(self) -> int:
        """2 or 3: the scans this champion reads (its preprocessing's spatial dimensions)."""
        return int(self.models[0].preprocess.dims)


@dataclass(frozen=True)
class ScoreResult:
    scores: pd.DataFrame  # rows written in this call
    n_skipped: int  # already scored by this champion
    table: Path
    n_incompatible: int = 0  # scans of other dimensions than the champion reads (not scored)
    #: wall seconds per phase: preprocess, inference, overlays, outputs, table (the append to the scores table)
    seconds: dict[str, float] = field(default_factory=dict)


def load_champion(workdir: Path, device: str = "auto") -> Champion:
    """The registry's champion, ready to score; a clear error when there is none."""
    registry = Registry(workdir)
    version = registry.champion()
    if version is None:
        raise UserInputError(f"no champion in {registry.root}: promote a model version first")
    record = registry.entry(version).record
    folder = Workdir(workdir).version(version)
    models = [load_model(folder.model(model_id).root, device) for model_id in record["model_ids"]]
    recalibration, referral = uncertainty_record(version, record, folder)
    return Champion(
        version,
        models,
        float(record["operating_point"]["threshold"]),
        list(record["classes"]),
        recalibration,
        referral,
        champion_check(folder, models),
    )


def uncertainty_record(
    version: str, record: dict[str, Any], folder: VersionFiles
) -> tuple[Recalibration, ReferralLimits | None]:
    """A version's recalibration and referral limits: from its record (``version.json``), else from its
    copy of ``metrics.json``; a version from before either has the identity and no referral (logged once)."""
    if "recalibration" not in record:
        metrics_path = folder.evaluation_file(Workdir.REGISTERED_EVALUATION[0])
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        record = {**record, **{k: metrics[k] for k in ("recalibration", "referral") if k in metrics}}
    referral = record.get("referral")
    if "recalibration" not in record and version not in _warned_versions:
        _warned_versions.add(version)
        log.warning(
            "model version %s has no recalibration or referral limits (registered before them): "
            "uncalibrated probabilities, no referral",
            version,
        )
    limits = None if not referral else ReferralLimits.from_dict(referral)
    return Recalibration.from_dict(record.get("recalibration")), limits


@writes_workdir("score")
def score_scans(
    workdir: Path,
    scans: pd.DataFrame,
    champion: Champion | None = None,
    overlays: bool = True,
    scan_root: Path | None = None,
    on_scored: Callable[[pd.DataFrame], None] | None = None,
    table: ScoresTable | None = None,
    ood: OodCheck | None = None,
) -> ScoreResult:
    """Score catalogue rows ``scans`` (labels not needed) unless the champion already scored them.

    ``scan_root`` is the work folder the rows' ``volume_path`` is relative to (default ``workdir``;
    scoring an inbox study uses its own intake folder); their preprocessing cache goes there too.
    Scans of other dimensions than the champion reads are counted in ``n_incompatible``, not scored.
    ``on_scored(rows)`` runs after the overlays and before the rows join the table, so that what it
    writes (DICOM outputs) exists whenever the table says a scan is scored. ``table``: the scores
    table to check and append to, kept by a long-running scorer (it remembers what it has read).
    ``ood``: the out-of-distribution hook (:data:`OodCheck`; default: the champion's).
    """
    champion = champion or load_champion(workdir)
    scan_root = scan_root or workdir
    table = table or ScoresTable(workdir)
    table_path = table.path
    compatible = scans[scans["dims"].astype(int) == champion.dims]
    clock = time.perf_counter()
    done = table.scored(champion.version, compatible["scan_id"])
    checked = time.perf_counter() - clock
    todo = compatible[~compatible["scan_id"].isin(done)]
    n_incompatible, n_skipped = len(scans) - len(compatible), len(compatible) - len(todo)
    if todo.empty:
        empty = pd.DataFrame(columns=SCORE_COLUMNS)
        return ScoreResult(empty, n_skipped, table_path, n_incompatible, {"table": checked})
    pre = champion.models[0].preprocess
    clock = time.perf_counter()
    index = preprocess_catalog(scan_root, pre, scans=todo.assign(label=0)).index
    seconds = {"preprocess": time.perf_counter() - clock}
    clock = time.perf_counter()
    check = ood or champion.ood
    raw, features = member_probabilities(champion, scan_root, index, features=check is not None)
    seconds["inference"] = time.perf_counter() - clock
    clock = time.perf_counter()
    outcomes = (
        list(check(scans=todo, scan_root=scan_root, index=index, features=features)) if check is not None else None
    )
    if check is not None:
        seconds["ood"] = time.perf_counter() - clock
    study = todo.set_index("scan_id")["study_id"]
    rows = pd.DataFrame(
        {
            "scan_id": index["scan_id"],
            "patient_id": index["patient_id"],
            "study_id": [study[s] for s in index["scan_id"]],
            **score_columns(champion, raw, outcomes),
            "threshold": champion.threshold,
            "model_version": champion.version,
        }
    )[SCORE_COLUMNS]
    clock = time.perf_counter()
    if overlays:
        catalog_rows = todo.set_index("scan_id")
        for row, scored in zip(index.itertuples(index=False), rows.itertuples(index=False), strict=True):
            _overlay(
                workdir,
                champion,
                row.scan_id,
                scan_root / row.cache_path,
                scan_root / catalog_rows.loc[row.scan_id, "volume_path"],
                catalog_rows.loc[row.scan_id],
                scored,
            )
    seconds["overlays"] = time.perf_counter() - clock
    clock = time.perf_counter()
    if on_scored is not None:
        on_scored(rows)
    seconds["outputs"] = time.perf_counter() - clock
    clock = time.perf_counter()
    written = table.append(rows)  # one part; concurrent scoring runs append in turn
    seconds["table"] = checked + time.perf_counter() - clock
    n_skipped += len(rows) - len(written)  # scored by another run meanwhile: its rows are in the table
    log.info(
        "scored %d scans with %s (%d already scored, %d of other dimensions)",
        len(written),
        champion.version,
        n_skipped,
        n_incompatible,
    )
    return ScoreResult(written.reset_index(drop=True), n_skipped, table_path, n_incompatible, seconds)


def member_probabilities(
    champion: Champion, scan_root: Path, index: pd.DataFrame, features: bool = False
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(n, K)``: each fold model's (member's) uncalibrated positive-class probability for the rows of
    a preprocessed ``index`` (``cache_path`` relative to ``scan_root``), and with ``features`` each
    member's penultimate features by model id, from the same forward pass (else an empty dict)."""
    positive = champion.models[0].classes.index(int(positive_class(champion.classes)))
    members = predict_members(champion.models, scan_root, index, features=features)
    caught = members.features or []
    return members.probabilities[:, :, positive].T, {
        m.model_id: f for m, f in zip(champion.models, caught, strict=False)
    }


def score_columns(champion: Champion, raw: np.ndarray, outcomes: Sequence[OodOutcome] | None = None) -> dict[str, Any]:
    """The scores table's probability, uncertainty, decision and out-of-distribution columns for
    members' uncalibrated probabilities ``raw`` ``(n, K)`` (see the module docstring)."""
    calibrated = champion.recalibration.apply(raw)
    p, u = calibrated.mean(axis=1), calibrated.std(axis=1, ddof=0)
    n = len(p)
    reasons = champion.referral.reasons(p, u) if champion.referral is not None else [[] for _ in range(n)]
    scores, flags = np.full(n, np.nan), [""] * n
    if outcomes is not None and len(outcomes) != n:
        raise ValueError(f"the out-of-distribution check returned {len(outcomes)} results for {n} scans")
    for i, outcome in enumerate(outcomes or ()):
        scores[i] = outcome.score
        flags[i] = ",".join(outcome.flags)
        if outcome.flags:
            reasons[i] = [*reasons[i], OOD_REASON_PREFIX + ", ".join(outcome.flags)]
    return {
        "probability": p,
        "raw_probability": raw.mean(axis=1),
        "uncertainty": u,
        "decision": decisions(p, champion.threshold, reasons),
        "refer_reason": ["; ".join(r) for r in reasons],
        "ood_score": scores,
        "ood_flags": flags,
    }


def _overlay(
    workdir: Path, champion: Champion, scan_id: str, cache: Path, volume: Path, scan: pd.Series, scored: Any
) -> None:
    x = torch.from_numpy(np.load(cache))[None]
    target = champion.models[0].classes.index(int(positive_class(champion.classes)))
    signed = np.mean(
        [attribute(m.model, x.to(m.device.device), target, "gradcam").signed for m in champion.models], axis=0
    )
    pre = champion.models[0].preprocess
    overlay = ScanOverlay.load(volume, pre.effective(scan["modality"], int(scan["dims"])))
    title = (
        f"{scored.decision}: p={scored.probability:.3f}, spread {scored.uncertainty:.3f} "
        f"(threshold {champion.threshold:.3f})\nGradCAM, model {champion.version}"
    )
    png, _, _ = overlay.render(importance(signed, "gradcam"), title)
    write_bytes_if_changed(Workdir(workdir).overlay(scan_id, champion.version), png)
