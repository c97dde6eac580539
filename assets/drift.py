"""Group ``scoring``: ``score_drift``, the champion's recent scores against its out-of-fold reference,
and the check ``score_drift_within_limits``, which warns when a drift limit is exceeded.

The measures, their formulas and files are :mod:`pipeline.scoring.drift`'s; the limits are the
``drift`` settings group (:class:`pipeline.settings.drift.DriftSettings`). The weekly retraining
(``train_and_evaluate``) materialises ``score_drift`` as one of its first steps, and
``model_version`` records the result beside the gate's decision.
"""

# No `from __future__ import annotations` here: Dagster reads Config/resource types from the annotations.

from typing import TYPE_CHECKING, Any

import dagster as dg

from assets.common import IO_RETRY, OWNER, markdown_image, user_errors_are_final
from assets.config import config_class, settings_from
from assets.resources import ScanLensProject
from assets.scoring import scan_scores
from pipeline.layout import Workdir
from pipeline.scoring.drift import PLOTS, measure_drift, read_drift, summary
from pipeline.settings.drift import DriftSettings

if TYPE_CHECKING:  # the class is made at import time; to a type checker it is a Dagster config

    class ScoreDriftConfig(dg.Config):
        window: int
else:
    ScoreDriftConfig = config_class(
        "ScoreDriftConfig", DriftSettings, doc="How many recent scores are compared, and the drift limits."
    )


def _number(value: float | None) -> Any:
    return dg.MetadataValue.null() if value is None else dg.MetadataValue.float(float(value))


@dg.asset(
    group_name="scoring",
    owners=[OWNER],
    kinds={"python"},
    deps=[scan_scores],
    retry_policy=IO_RETRY,
)
def score_drift(config: ScoreDriftConfig, project: ScanLensProject) -> dg.MaterializeResult:
    """The champion's last ``window`` scores against the out-of-fold predictions of its version
    (``W/scoring/drift.json``): PSI of the probabilities (10 bins on the reference's deciles), the
    out-of-distribution flag rate, the refer rate, and the shares of modality and manufacturer, with
    a histogram and a share plot. Without a champion it records that there is nothing to compare."""
    with user_errors_are_final():
        record = measure_drift(project.workdir_path, settings_from(config, DriftSettings))
    wd = Workdir(project.workdir_path)
    plots = [wd.drift_plot(name) for name in PLOTS]
    shown = "\n\n".join(markdown_image(p, p.stem) for p in plots if p.is_file())
    metadata: dict[str, Any] = {
        "champion": record["champion"] or "none",
        "verdict": record["verdict"],
        "summary": summary(record),
        "n": record["n"],
        "window": record["window"],
        "exceeded": dg.MetadataValue.json(record["exceeded"]),
        "drift_json": dg.MetadataValue.path(str(wd.drift)),
    }
    if record["champion"] is not None:
        metadata |= {
            "psi": _number(record["psi"]),
            "flag_rate": _number(record["flag_rate"]),
            "refer_rate": _number(record["refer_rate"]),
            "largest_share_shift": dg.MetadataValue.json(record["largest_share_shift"] or {}),
            "reference_recalibration": record["reference_recalibration"],
            "plots": dg.MetadataValue.md(shown or "no plots"),
        }
    return dg.MaterializeResult(metadata=metadata)


@dg.asset_check(
    asset=score_drift,
    description="the champion's recent scores are within the drift limits (PSI, out-of-distribution flag "
    "rate, modality and manufacturer shares); warns otherwise",
)
def score_drift_within_limits(project: ScanLensProject) -> dg.AssetCheckResult:
    """Read ``W/scoring/drift.json`` as ``score_drift`` last wrote it: passes within every limit (or
    with too few scores to judge, or no champion), warns (severity WARN) naming each limit exceeded."""
    record = read_drift(project.workdir_path)
    if record is None and not project.workdir_path.is_dir():
        return dg.AssetCheckResult(passed=True, description="no work folder yet: nothing has been scored")
    if record is None:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description="no drift record: materialise score_drift",
        )
    return dg.AssetCheckResult(
        passed=not record["exceeded"],
        severity=dg.AssetCheckSeverity.WARN,
        description=summary(record),
        metadata={"verdict": record["verdict"], "exceeded": dg.MetadataValue.json(record["exceeded"])},
    )
