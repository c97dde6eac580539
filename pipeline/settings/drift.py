"""The ``drift`` settings group: how much of the champion's recent scoring is compared with its
out-of-fold reference, and the limits above which score drift is reported (:mod:`pipeline.scoring.drift`)."""

from __future__ import annotations

from pydantic.dataclasses import dataclass

from pipeline.errors import UserInputError
from pipeline.settings.fields import SETTINGS, setting


@dataclass(frozen=True, config=SETTINGS)
class DriftSettings:
    """``window``: the last N scores of the champion; ``min_scores``: fewer recent scores than this are
    reported but not judged (PSI is biased upwards by about 9/n with 10 bins); the limits are fractions
    (PSI is unitless)."""

    window: int = setting(500, "the champion's last N scores compared with its out-of-fold reference")
    min_scores: int = setting(100, "fewer recent scores than this are reported but not judged against the limits")
    psi_limit: float = setting(0.25, "population stability index of the probabilities above which drift is reported")
    flag_rate_limit: float = setting(
        0.10, "share of recent scans flagged out of distribution above which drift is reported"
    )
    share_shift_limit: float = setting(
        0.20, "largest change in the share of one modality or manufacturer above which drift is reported"
    )

    def __post_init__(self) -> None:
        if self.window < 1 or self.min_scores < 1:
            raise UserInputError("window and min_scores must be at least 1")
        if self.psi_limit <= 0:
            raise UserInputError("psi_limit must be above 0")
        if not (0 < self.flag_rate_limit <= 1 and 0 < self.share_shift_limit <= 1):
            raise UserInputError("flag_rate_limit and share_shift_limit must lie in (0, 1]")
