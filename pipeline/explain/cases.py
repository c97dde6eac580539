"""Which cases a review board sees: the most confident true positives and true negatives, and the
worst false positives and false negatives, at the pre-specified operating point."""

from __future__ import annotations

import pandas as pd

KINDS = ("TP", "TN", "FP", "FN")


def select_cases(predictions: pd.DataFrame, threshold: float, per_kind: int = 2) -> pd.DataFrame:
    """``predictions`` has ``label`` (0/1) and ``p`` (positive-class probability). Returns up to
    ``per_kind`` rows of each kind with a ``kind`` column: TP highest p, TN lowest p, FP highest p
    (most confidently wrong), FN lowest p. Ties break by ``scan_id``.

    >>> frame = pd.DataFrame({"scan_id": list("abcd"), "label": [1, 0, 0, 1], "p": [0.9, 0.1, 0.8, 0.2]})
    >>> select_cases(frame, 0.5, 1)[["scan_id", "kind"]].values.tolist()
    [['a', 'TP'], ['b', 'TN'], ['c', 'FP'], ['d', 'FN']]
    """
    called = predictions["p"] >= threshold
    positive = predictions["label"] == 1
    groups = {
        "TP": (positive & called, False),
        "TN": (~positive & ~called, True),
        "FP": (~positive & called, False),
        "FN": (positive & ~called, True),
    }
    chosen = []
    for kind, (mask, ascending) in groups.items():
        part = predictions[mask].sort_values(["p", "scan_id"], ascending=[ascending, True]).head(per_kind)
        chosen.append(part.assign(kind=kind))
    return pd.concat(chosen, ignore_index=True)
