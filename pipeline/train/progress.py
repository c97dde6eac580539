"""The training loop's progress and its model-selection metric.

Each epoch is scored by validation AUROC when the validation set holds both classes, and by the
negative validation loss (``neg_val_loss``; higher is better) when AUROC is undefined. The best
epoch's score is kept with the *name* of the metric it measures, so a loss is never reported as
an AUROC. Progress is saved as ``checkpoint["loop"]``: a plain dict, so ``weights_only`` loads it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

#: Selection metric names, as the model card records them.
VAL_AUROC, NEG_VAL_LOSS = "val_auroc", "neg_val_loss"


def selection_score(record: dict[str, Any]) -> tuple[str, float]:
    """The metric that ranks one epoch's ``record`` (a history entry), and its value (higher is better)."""
    auroc = float(record["val_auroc"])
    return (VAL_AUROC, auroc) if not math.isnan(auroc) else (NEG_VAL_LOSS, -float(record["val_loss"]))


@dataclass
class Progress:
    """Epochs and optimiser steps done, the best epoch so far (1-based; -1 before any) and its
    score, epochs without improvement, and one history entry per epoch."""

    epoch: int = 0
    step: int = 0
    best_score: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def observe(self, record: dict[str, Any]) -> bool:
        """Append one finished epoch's ``record``; True when it is the best so far (weights worth keeping)."""
        self.history.append(record)
        _, score = selection_score(record)
        improved = score > self.best_score
        if improved:
            self.best_score, self.best_epoch, self.bad_epochs = score, int(record["epoch"]), 0
        else:
            self.bad_epochs += 1
        self.epoch = int(record["epoch"])
        return improved

    def finished(self, epochs: int, patience: int) -> bool:
        """All ``epochs`` done, or stopped early after ``patience`` epochs without improvement."""
        return self.epoch >= epochs or self.bad_epochs >= patience

    def early_stopped(self, epochs: int, patience: int) -> bool:
        return self.bad_epochs >= patience and self.epoch < epochs

    @property
    def _best(self) -> dict[str, Any] | None:
        return self.history[self.best_epoch - 1] if 0 < self.best_epoch <= len(self.history) else None

    @property
    def selection_metric(self) -> str | None:
        """:data:`VAL_AUROC` or :data:`NEG_VAL_LOSS` (what :attr:`best_score` measures); None before any epoch."""
        best = self._best
        return None if best is None else selection_score(best)[0]

    @property
    def best_value(self) -> float | None:
        return None if self.best_score == -math.inf else self.best_score

    @property
    def best_auroc(self) -> float | None:
        """The best epoch's validation AUROC, or None where it is undefined (a one-class validation set)."""
        best = self._best
        return None if best is None or math.isnan(best["val_auroc"]) else float(best["val_auroc"])

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> Progress:
        """Progress from :meth:`as_dict`, or from a checkpoint written before the score was renamed
        (``best_auroc`` then held the score, whatever metric it measured)."""
        values = dict(saved)
        if "best_auroc" in values:
            values["best_score"] = values.pop("best_auroc")
        return cls(**values)
