"""Score drift: the champion's recent scores against the out-of-fold (OOF) reference of its version.

What is compared:

- **recent**: the last ``window`` rows of the scores table whose ``model_version`` is the champion,
  in the order they were written (:func:`pipeline.scoring.table.read_scores` with ``write_order``);
- **reference**: the champion version's ``oof_predictions.parquet`` (each scan scored by the one
  fold model that never saw it), positive-class probability, passed through the version's
  ``metrics.json`` ``"recalibration"`` (:class:`pipeline.evaluate.recalibration.Recalibration`, the
  fit scoring applies), so both sides are calibrated probabilities. Scoring averages the fold
  models, which spreads the probabilities slightly less than one model's OOF probability: a small
  PSI remains without any drift.

**PSI** (population stability index) over ``B = 10`` bins whose inner edges are the reference's
deciles (the outer bins are open; tied deciles merge bins). With ``e_i`` and ``a_i`` the shares of
the reference and the recent scores in bin ``i``, each floored at ``eps = 1e-4`` (an empty bin
would make the logarithm infinite)::

    PSI = sum_i (a_i - e_i) * ln(a_i / e_i)

The usual reading: below 0.1 no meaningful shift; 0.1 to 0.25 a moderate shift, worth watching;
above 0.25 a major shift (the default ``psi_limit``). Sampling alone gives about
``(B - 1) (1/n + 1/m)`` for ``n`` recent and ``m`` reference scores (0.02 at n = 500, 0.09 at
n = 100), hence ``min_scores``: fewer recent scores are reported but not judged.

**Flag rate**: the share of recent scores with a non-empty ``ood_flags``
(:mod:`pipeline.scoring.ood`); ``None`` (unavailable) for a table without that column. **Refer
rate**: the share whose ``decision`` is ``refer``, beside the OOF referral rate of the version's
``metrics.json`` (``referral.oof_rate``) when it has one.

**Covariate shares**: ``modality`` and ``manufacturer`` of the recent scans (from their intake
catalogues ``W/scoring/intake/<key>/catalog.parquet``, newest first) and of the OOF scans (the work
folder's catalogue). A missing or empty value counts as ``unknown``; a scan found in no catalogue
is left out (and counted). Per covariate: each value's share on both sides and the value whose
share changed most (absolute difference).

Outputs: ``W/scoring/drift.json`` (the dict :func:`measure_drift` returns) and the plots
``drift_probabilities.png`` and ``drift_covariates.png``, written atomically under the work-folder
lock. No time stamp, so the same scores give the same bytes (Dagster records when it ran).
Pseudonymous ids never appear: only counts, shares and header categories.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.evaluate.classes import positive_class, probability_column
from pipeline.figures import plt, png_bytes
from pipeline.layout import VersionFiles, Workdir
from pipeline.locking import workdir_lock
from pipeline.registry import Registry
from pipeline.scoring.table import read_scores
from pipeline.settings.drift import DriftSettings
from pipeline.storage import read_parquet, write_bytes_if_changed

log = logging.getLogger(__name__)

BINS = 10
EPS = 1e-4
#: Equal-width bins of the probability histograms (plots only; PSI uses the reference's deciles).
PLOT_BINS = 20
COVARIATES = ("modality", "manufacturer")
UNKNOWN = "unknown"
PLOTS = ("probabilities", "covariates")


# --- the measures (pure) -------------------------------------------------------------------------
def decile_edges(reference: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Inner bin edges: the reference's quantiles at 1/bins, ..., (bins-1)/bins, ties merged."""
    return np.unique(np.quantile(np.asarray(reference, float), np.arange(1, bins) / bins))


def bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of ``values`` in each bin ``[edge_{i-1}, edge_i)`` (outer bins open); zeros when empty."""
    counts = np.bincount(np.searchsorted(edges, np.asarray(values, float), side="right"), minlength=len(edges) + 1)
    return counts / max(len(values), 1)


def psi(reference: np.ndarray, recent: np.ndarray, bins: int = BINS, eps: float = EPS) -> tuple[float, list[dict]]:
    """The population stability index of ``recent`` against ``reference`` (module docstring), and the
    bins: ``{"low", "high", "reference", "recent"}`` (``low``/``high`` of the outer bins: 0 and 1)."""
    edges = decile_edges(reference, bins)
    expected, actual = bin_shares(reference, edges), bin_shares(recent, edges)
    e, a = np.maximum(expected, eps), np.maximum(actual, eps)
    value = float(np.sum((a - e) * np.log(a / e)))
    bounds = [0.0, *edges.tolist(), 1.0]
    table = [
        {"low": bounds[i], "high": bounds[i + 1], "reference": float(expected[i]), "recent": float(actual[i])}
        for i in range(len(expected))
    ]
    return value, table


def shares(values: pd.Series) -> dict[str, float]:
    """Each value's share (missing or blank: ``unknown``), by value; empty for no values."""
    text = values.astype(object).where(values.notna(), UNKNOWN).astype(str).str.strip()
    text = text.where(text != "", UNKNOWN)
    counts = text.value_counts()
    return {str(k): float(counts[k] / len(text)) for k in sorted(counts.index)}


def largest_shift(reference: dict[str, float], recent: dict[str, float]) -> dict[str, Any] | None:
    """The value whose share changed most (``difference`` = recent - reference; of equal changes, the
    one that grew); None without both sides."""
    if not reference or not recent:
        return None
    values = sorted(set(reference) | set(recent))
    diffs = {v: recent.get(v, 0.0) - reference.get(v, 0.0) for v in values}
    worst = max(values, key=lambda v: (abs(diffs[v]), diffs[v] > 0, v))  # on a tie, the value that grew
    return {
        "value": worst,
        "reference": reference.get(worst, 0.0),
        "recent": recent.get(worst, 0.0),
        "difference": diffs[worst],
    }


def flag_rate(scores: pd.DataFrame) -> float | None:
    """Share of ``scores`` with a non-empty ``ood_flags``; None without that column or without rows."""
    if "ood_flags" not in scores.columns or scores.empty:
        return None
    flags = scores["ood_flags"].astype(object).where(scores["ood_flags"].notna(), "").astype(str).str.strip()
    return float((flags != "").mean())


def refer_rate(scores: pd.DataFrame) -> float | None:
    """Share of ``scores`` whose decision is ``refer``; None without rows."""
    if "decision" not in scores.columns or scores.empty:
        return None
    return float((scores["decision"].astype(str) == "refer").mean())


def compare(
    reference_p: np.ndarray,
    recent: pd.DataFrame,
    reference_covariates: pd.DataFrame,
    recent_covariates: pd.DataFrame,
    settings: DriftSettings,
) -> dict[str, Any]:
    """The drift record of ``recent`` scores (``probability``, and ``ood_flags``/``decision`` when the
    table has them) against the reference probabilities, with the covariates (``modality``,
    ``manufacturer`` per scan) of both sides, judged against ``settings``' limits."""
    n = len(recent)
    value, table = psi(reference_p, recent["probability"].to_numpy(float)) if n and len(reference_p) else (None, [])
    covariates: dict[str, Any] = {}
    for column in COVARIATES:
        ref = shares(reference_covariates[column]) if column in reference_covariates else {}
        now = shares(recent_covariates[column]) if column in recent_covariates else {}
        covariates[column] = {"reference": ref, "recent": now, "largest_shift": largest_shift(ref, now)}
    shifts = [(c, b["largest_shift"]) for c, b in covariates.items() if b["largest_shift"] is not None]
    worst = max(shifts, key=lambda s: abs(s[1]["difference"]), default=None)
    record: dict[str, Any] = {
        "n": n,
        "n_reference": len(reference_p),
        "window": settings.window,
        "psi": value,
        "psi_bins": table,
        "flag_rate": flag_rate(recent),
        "refer_rate": refer_rate(recent),
        "covariates": covariates,
        "largest_share_shift": {"covariate": worst[0], **worst[1]} if worst else None,
        "limits": {
            "psi": settings.psi_limit,
            "flag_rate": settings.flag_rate_limit,
            "share_shift": settings.share_shift_limit,
            "min_scores": settings.min_scores,
        },
    }
    record["exceeded"] = exceeded(record) if n >= settings.min_scores else []
    if n < settings.min_scores:
        record["verdict"] = f"not judged: {n} recent scores, fewer than min_scores {settings.min_scores}"
    else:
        record["verdict"] = "above limits" if record["exceeded"] else "within limits"
    return record


def exceeded(record: dict[str, Any]) -> list[str]:
    """One sentence per limit the record exceeds (empty: within every limit)."""
    limits, out = record["limits"], []
    if record["psi"] is not None and record["psi"] > limits["psi"]:
        out.append(f"PSI {record['psi']:.3f} > {limits['psi']:g}")
    if record["flag_rate"] is not None and record["flag_rate"] > limits["flag_rate"]:
        out.append(f"out-of-distribution flag rate {record['flag_rate']:.1%} > {limits['flag_rate']:.0%}")
    for column, block in record["covariates"].items():
        shift = block["largest_shift"]
        if shift is not None and abs(shift["difference"]) > limits["share_shift"]:
            out.append(
                f"{column} {shift['value']!r} share {shift['reference']:.0%} -> {shift['recent']:.0%} "
                f"(|change| > {limits['share_shift']:.0%})"
            )
    return out


def summary(record: dict[str, Any]) -> str:
    """One line: PSI, flag rate, n, window and the verdict (for logs, metadata and the report)."""
    if record.get("champion") is None:
        return "score drift: no champion, nothing scored to compare"
    flags = "unavailable" if record["flag_rate"] is None else f"{record['flag_rate']:.1%}"
    value = "n/a" if record["psi"] is None else f"{record['psi']:.3f}"
    verdict = record["verdict"] + (f" ({'; '.join(record['exceeded'])})" if record["exceeded"] else "")
    return (
        f"score drift of {record['champion']}: PSI {value}, out-of-distribution flag rate {flags}, "
        f"last {record['n']} scores (window {record['window']}): {verdict}"
    )


# --- the work folder ---------------------------------------------------------------------------
def recent_scores(workdir: Path, version: str, window: int) -> pd.DataFrame:
    """The last ``window`` scores of model ``version``, oldest first."""
    scores = read_scores(workdir, write_order=True)
    return scores[scores["model_version"] == version].tail(window).reset_index(drop=True)


def scan_covariates(catalogs: list[Path], scan_ids: list[str]) -> pd.DataFrame:
    """``scan_id`` and :data:`COVARIATES` of ``scan_ids`` from the first of ``catalogs`` holding each
    (read in the order given, until every scan is found); scans found nowhere are left out."""
    wanted, found = set(scan_ids), []
    for path in catalogs:
        if not wanted:
            break
        frame = read_parquet(path)
        if frame is None:
            continue
        hit = frame.loc[frame["scan_id"].isin(wanted), ["scan_id", *[c for c in COVARIATES if c in frame]]]
        found.append(hit)
        wanted -= set(hit["scan_id"])
    if not found:
        return pd.DataFrame(columns=["scan_id", *COVARIATES])
    return pd.concat(found, ignore_index=True).drop_duplicates("scan_id")


def intake_catalogs(wd: Workdir) -> list[Path]:
    """The scoring intakes' catalogues, newest first."""
    if not wd.intakes.is_dir():
        return []
    paths = [wd.intake(p.name).catalog for p in wd.intakes.iterdir() if p.is_dir()]
    return sorted((p for p in paths if p.is_file()), key=lambda p: p.stat().st_mtime_ns, reverse=True)


def reference_probabilities(files: VersionFiles, metrics: dict[str, Any]) -> tuple[pd.DataFrame, str]:
    """The version's OOF rows (``scan_id``, ``probability``: positive class, recalibrated as scoring
    does) and what was applied (``none``, the method, or why it was not)."""
    oof = pd.read_parquet(files.oof_predictions)
    p = oof[probability_column(positive_class(metrics["classes"]))].to_numpy(float)
    block, applied = metrics.get("recalibration"), "none"
    if block:
        try:
            from pipeline.evaluate.recalibration import Recalibration
        except ImportError:  # a ScanLens without recalibration never wrote the block
            applied = "not applied: pipeline.evaluate.recalibration is missing"
            log.warning("score drift: %s; the reference stays uncalibrated", applied)
        else:
            recalibration = Recalibration.from_dict(block)
            p, applied = recalibration.apply(p), recalibration.method
    return pd.DataFrame({"scan_id": oof["scan_id"].astype(str), "probability": p}), applied


def measure_drift(workdir: Path, settings: DriftSettings | None = None) -> dict[str, Any]:
    """Compare the champion's last ``settings.window`` scores with its OOF reference; write
    ``W/scoring/drift.json`` and the plots; return the record (``champion`` None: no champion yet)."""
    settings = settings or DriftSettings()
    wd = Workdir(Path(workdir))
    version = Registry(wd.root).champion() if wd.root.is_dir() else None
    if version is None:  # nothing trained or scored yet (a fresh work folder may not exist at all)
        record: dict[str, Any] = {"champion": None, "n": 0, "window": settings.window, "exceeded": []}
        record["verdict"] = "no champion"
        if wd.root.is_dir():
            _write(wd, record, {})
        return record
    files = wd.version(version)
    metrics = json.loads(files.evaluation_file(wd.metrics.name).read_text())
    reference, applied = reference_probabilities(files, metrics)
    recent = recent_scores(wd.root, version, settings.window)
    reference_covariates = scan_covariates([wd.catalog], reference["scan_id"].tolist())
    recent_covariates = scan_covariates(intake_catalogs(wd), recent["scan_id"].astype(str).tolist())
    record = {"champion": version, "reference_recalibration": applied}
    record |= compare(reference["probability"].to_numpy(), recent, reference_covariates, recent_covariates, settings)
    record["reference_refer_rate"] = (metrics.get("referral") or {}).get("oof_rate")
    record["n_without_catalogue"] = {"reference": len(reference) - len(reference_covariates)}
    record["n_without_catalogue"]["recent"] = len(recent) - len(recent_covariates)
    plots = {
        "probabilities": probability_plot(reference["probability"].to_numpy(), recent["probability"].to_numpy(float)),
        "covariates": covariate_plot(record["covariates"]),
    }
    record["plots"] = {name: wd.file_ref(wd.drift_plot(name)) for name in plots}
    _write(wd, record, plots)
    log.info(summary(record))
    return record


def _write(wd: Workdir, record: dict[str, Any], plots: dict[str, bytes]) -> None:
    with workdir_lock(wd.root, "drift"):
        for name in PLOTS:
            if name in plots:
                write_bytes_if_changed(wd.drift_plot(name), plots[name])
            else:  # no champion: an earlier champion's plots would mislead
                wd.drift_plot(name).unlink(missing_ok=True)
        write_bytes_if_changed(wd.drift, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())


def read_drift(workdir: Path) -> dict[str, Any] | None:
    """The last drift record written in ``workdir`` (``W/scoring/drift.json``), or None."""
    path = Workdir(Path(workdir)).drift
    return json.loads(path.read_text()) if path.is_file() else None


# --- plots -------------------------------------------------------------------------------------
def probability_plot(reference: np.ndarray, recent: np.ndarray) -> bytes:
    """Histograms (density) of the reference and the recent probabilities on equal-width bins."""
    figure, axis = plt.subplots(figsize=(6, 3.6), dpi=100)
    bins = np.linspace(0.0, 1.0, PLOT_BINS + 1).tolist()
    axis.hist(reference, bins=bins, density=True, alpha=0.45, label=f"out-of-fold reference (n={len(reference)})")
    if len(recent):
        axis.hist(recent, bins=bins, density=True, histtype="step", lw=2, label=f"last scores (n={len(recent)})")
    axis.set(xlabel="probability of the positive class (as scored)", ylabel="density", xlim=(0, 1))
    axis.set_title("Probabilities: out-of-fold reference against recent scores")
    axis.legend(fontsize=8)
    return png_bytes(figure)


def covariate_plot(covariates: dict[str, Any]) -> bytes:
    """Per covariate, grouped horizontal bars of each value's share: reference and recent."""
    figure, axes = plt.subplots(1, len(covariates), figsize=(4 * len(covariates), 3.6), dpi=100, squeeze=False)
    for axis, (column, block) in zip(axes[0], covariates.items(), strict=True):
        values = sorted(set(block["reference"]) | set(block["recent"]))
        y = np.arange(len(values))
        axis.barh(y - 0.2, [block["reference"].get(v, 0.0) for v in values], 0.4, label="reference")
        axis.barh(y + 0.2, [block["recent"].get(v, 0.0) for v in values], 0.4, label="recent")
        axis.set_yticks(y, [v[:24] for v in values], fontsize=8)
        axis.set(xlim=(0, 1), xlabel="share of scans")
        axis.set_title(f"{column} shares")
        axis.legend(fontsize=8, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.2))  # below: bars reach 1
    return png_bytes(figure)
