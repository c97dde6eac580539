"""The ``folds`` and ``evaluation`` settings groups: cross-validation and its pooled statistics."""

from __future__ import annotations

from typing import Literal

from pydantic.dataclasses import dataclass

from pipeline.errors import UserInputError
from pipeline.settings.fields import SETTINGS, setting


@dataclass(frozen=True, config=SETTINGS)
class CVSettings:
    """Patient-grouped cross-validation (the ``folds`` settings group): K folds, a held-out test set
    (the catalogue's ``test`` split, else a patient-grouped ``test_fraction``), for models of ``dims``
    (which decides which scans take part), seeded."""

    n_folds: int = setting(
        5,
        "number of folds K (Dagster: the fold_models partitions, $SCANLENS_CV_FOLDS)",
        flag="--folds",
        metavar="K",
        asset=False,
    )
    test_fraction: float = setting(0.2, "test share of patients when the catalogue has no test split")
    seed: int = setting(0, "random seed (splits, initialisation, augmentation)")
    dims: int = setting(
        2, "spatial dims of the model (from --dims, or the model_kind of cv_folds)", cli=False, asset=False
    )

    def __post_init__(self) -> None:
        if self.n_folds < 2:
            raise UserInputError("cross-validation needs at least 2 folds")
        if not 0 < self.test_fraction < 1:
            raise UserInputError("test fraction must be between 0 and 1")
        if self.dims not in (2, 3):
            raise UserInputError("dims must be 2 or 3")


@dataclass(frozen=True, config=SETTINGS)
class EvaluationSettings:
    """Pooled statistics (the ``evaluation`` settings group): patient-level bootstrap CIs, the
    operating point pre-specified on out-of-fold predictions, and subgroup tables."""

    n_resamples: int = setting(
        2000, "patient-level bootstrap resamples per CI (at least 2000 for reports)", flag="--resamples"
    )
    level: float = setting(0.95, "confidence level of the intervals")
    seed: int = setting(0, "random seed (splits, initialisation, augmentation)")
    target_sensitivity: float | None = setting(
        None, "operating point: the highest threshold reaching this OOF sensitivity (none: Youden's J)"
    )
    subgroups: tuple[str, ...] = setting(
        (),
        "catalogue columns for subgroup tables, e.g. manufacturer,patient_sex,"
        "age_band (the last two need keep_demographics at ingest)",
        metavar="COLS",
    )
    min_subgroup_patients: int = setting(5, "subgroups with fewer patients are reported without statistics")
    calibration: Literal["temperature", "platt", "none"] = setting(
        "temperature",
        "recalibration fitted on the pooled out-of-fold probabilities (binary tasks): temperature scaling, "
        "Platt scaling or none; the operating point is chosen on the calibrated probabilities",
    )
    referral_rate: float = setting(
        0.10,
        "target share of scans decided 'refer' (probability near the threshold or high fold-ensemble spread), "
        "its limits pre-specified on out-of-fold predictions (0: no referral)",
    )

    def __post_init__(self) -> None:
        if self.n_resamples < 1:
            raise UserInputError("resamples must be at least 1")
        if not 0 < self.level < 1:
            raise UserInputError("the confidence level must be between 0 and 1")
        if self.target_sensitivity is not None and not 0 < self.target_sensitivity <= 1:
            raise UserInputError("target sensitivity must be in (0, 1]")
        if not 0 <= self.referral_rate <= 0.5:
            raise UserInputError("the referral rate must be between 0 and 0.5")
