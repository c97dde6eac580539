"""Print one work folder's cross-validation figures beside its pixel baseline (a benchmark helper).

Reads ``W/evaluation/metrics.json`` (``scanlens evaluate``) and prints one line per split: the
fold ensemble's AUROC with its patient-level bootstrap CI, the pixel baseline's AUROC, and the
paired difference with its CI; then whether the model beats the baseline (the registry gate's rule:
the pooled out-of-fold difference is above 0) and the calibration and referral figures.

Usage::

  python benchmarks/cv_summary.py W [--label NAME]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _ci(values: list[float] | None) -> str:
    return f"[{values[0]:.3f}, {values[1]:.3f}]" if values else "[n/a]"


def summary_lines(metrics: dict[str, Any], label: str) -> list[str]:
    """Human-readable lines for one evaluation's ``metrics.json``."""
    base = metrics.get("baseline", {})
    lines = []
    for split in ("oof", "test"):
        model = metrics.get(split) or {}
        if not model:
            continue
        diff = base.get("difference", {}).get(split, {})
        base_auc = (base.get(split) or {}).get("auroc")
        text = f"{label} {split:4s}: model AUROC {model['auroc']:.3f} {_ci(model.get('auroc_ci'))}"
        if base_auc is not None and diff.get("auroc_difference") is not None:
            text += f" | baseline {base_auc:.3f} | difference {diff['auroc_difference']:+.3f} {_ci(diff.get('ci'))}"
        lines.append(text)
    if "beats_baseline" in base:
        lines.append(f"{label} beats the baseline (pooled OOF): {base['beats_baseline']}; shown (CI > 0): {base['shown_to_beat']}")
    elif "note" in base:
        lines.append(f"{label} baseline: {base['note']}")
    before, after = metrics.get("calibration_before") or {}, metrics.get("calibration_after") or {}
    for split in ("oof", "test"):
        if split in before and split in after:
            lines.append(f"{label} ECE {split}: {before[split]['ece']:.3f} -> {after[split]['ece']:.3f} (calibrated)")
    referral = metrics.get("referral") or {}
    for split in ("oof", "test"):
        block = referral.get(split)
        if block:
            lines.append(
                f"{label} referral {split}: {block['rate']:.1%} referred; accuracy on the rest "
                f"{block['accuracy_non_referred']:.3f} vs {block['accuracy_all']:.3f} on all"
            )
    flagged = ((metrics.get("ood") or {}).get("reference") or {}).get("test")
    if flagged:
        lines.append(f"{label} out-of-distribution flags on the test split: {flagged['flagged']}/{flagged['n']}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    metrics = json.loads((args.workdir / "evaluation" / "metrics.json").read_text())
    for line in summary_lines(metrics, args.label or args.workdir.name):
        print(line)


if __name__ == "__main__":
    main()
