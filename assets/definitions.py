"""The one ``Definitions`` object of the ScanLens code location (loaded by ``workspace.yaml``)."""

from __future__ import annotations

import sys
from typing import Any

import dagster as dg

from assets.config import run_config
from assets.deployment import default_executor, job_executor
from assets.drift import score_drift, score_drift_within_limits
from assets.evaluation import FOLDS, cv_evaluation, cv_folds, fold_models
from assets.ingest import demo_studies, scan_catalog
from assets.interpretability import interpretability_report, saliency_maps
from assets.launcher import TrainingLauncher
from assets.operations import RETRAIN_CRON, champion_model, model_version
from assets.pacs import PacsConnection
from assets.pacs_sensor import pacs_sensor
from assets.resources import PseudonymSecret, ScanLensProject
from assets.scoring import ScoringInbox, inbox_sensor, scan_scores, score_new_scans
from assets.training import preprocessed_scans, trained_model
from pipeline.logsafety import install as install_log_redaction
from pipeline.settings.augment import AugmentConfig
from pipeline.settings.evaluate import CVSettings, EvaluationSettings
from pipeline.settings.explain import AttributionConfig, ExplainSettings
from pipeline.settings.preprocess import PreprocessSettings
from pipeline.settings.train import TrainConfig

# Library warnings and third-party log records in every process that loads this code location (the
# webserver, the daemon, each run's steps) go through ScanLens's redaction: no header value in a log.
install_log_redaction()

all_assets = [
    demo_studies,
    scan_catalog,
    preprocessed_scans,
    trained_model,
    cv_folds,
    fold_models,
    cv_evaluation,
    saliency_maps,
    interpretability_report,
    model_version,
    champion_model,
    scan_scores,
    score_drift,
]

TRAINING = (PreprocessSettings, TrainConfig, AugmentConfig)
#: The settings groups of each configurable asset that a profile can change.
PROFILED_ASSETS: dict[str, tuple[type, ...]] = {
    "preprocessed_scans": (PreprocessSettings,),
    "trained_model": TRAINING,
    "cv_folds": (CVSettings,),
    "fold_models": TRAINING,
    "cv_evaluation": (EvaluationSettings,),
    "saliency_maps": (ExplainSettings, AttributionConfig),
}


def profile_run_config(profile: str, assets: list[str]) -> dict[str, Any]:
    """Run config that applies ``profile`` to those of ``assets`` it concerns."""
    return run_config(profile, {name: PROFILED_ASSETS[name] for name in assets if name in PROFILED_ASSETS})


DEMO_JOB_ASSETS = ["preprocessed_scans", "trained_model"]
EVALUATION_JOB_ASSETS = ["cv_folds", "fold_models", "cv_evaluation", "saliency_maps"]

scanlens_demo = dg.define_asset_job(
    "scanlens_demo",
    selection=dg.AssetSelection.assets(demo_studies, scan_catalog, preprocessed_scans, trained_model),
    description="Ingest the bundled demo data and train one model kind (run once per partition: 2d, 3d), with "
    "the demo profile's settings.",
    # one process by default: the steps are sequential anyway, and start-up is paid once; one pod per step
    # under $SCANLENS_EXECUTOR=k8s (assets/deployment.py)
    executor_def=job_executor(),
    config=profile_run_config("demo", DEMO_JOB_ASSETS),
)

train_and_evaluate = dg.define_asset_job(
    "train_and_evaluate",
    selection=dg.AssetSelection.assets(
        demo_studies,
        scan_catalog,
        cv_folds,
        fold_models,
        cv_evaluation,
        saliency_maps,
        interpretability_report,
        model_version,
        champion_model,
        score_drift,
    ),
    description="The current champion's score drift (score_drift, a first step: nothing in the job feeds it); "
    "catalogue -> patient-grouped folds -> one model per fold -> pooled evaluation -> saliency maps -> "
    "review-board PDF -> registry version, gate, champion. Launch it over "
    f"the partition range {FOLDS.get_partition_keys()[0]}...{FOLDS.get_partition_keys()[-1]} to train every fold in one run. "
    "Launched by hand it starts from the demo profile's settings (edit them in the launchpad); the weekly "
    "schedule uses the default profile.",
    executor_def=job_executor(),
    config=profile_run_config("demo", EVALUATION_JOB_ASSETS),
)

FOLD_RANGE_TAGS = {
    "dagster/asset_partition_range_start": FOLDS.get_partition_keys()[0],
    "dagster/asset_partition_range_end": FOLDS.get_partition_keys()[-1],
}


@dg.schedule(
    name="weekly_retraining",
    job=train_and_evaluate,
    cron_schedule=RETRAIN_CRON,
    default_status=dg.DefaultScheduleStatus.STOPPED,
)  # shipped stopped: start it in the UI
def weekly_retraining(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Retrain and evaluate on the current catalogue (every fold in one run); the gate decides whether
    the challenger replaces the champion, with the default profile's settings. Cron from
    ``$SCANLENS_RETRAIN_CRON`` (default Mondays 03:00)."""
    return dg.RunRequest(
        run_key=None, tags=FOLD_RANGE_TAGS, run_config=profile_run_config("default", EVALUATION_JOB_ASSETS)
    )


defs = dg.Definitions(
    assets=all_assets,
    asset_checks=[score_drift_within_limits],
    jobs=[scanlens_demo, train_and_evaluate, score_new_scans],
    schedules=[weekly_retraining],
    sensors=[inbox_sensor, pacs_sensor],
    resources={
        "project": ScanLensProject(),
        "secret": PseudonymSecret(),
        "inbox": ScoringInbox(),
        # the archive pacs_sensor watches, where results are sent (assets/pacs.py; its type-checking stub has no defaults)
        "pacs": PacsConnection(),
        "launcher": TrainingLauncher(),  # where trained_model and fold_models train (assets/launcher.py)
    },
    executor=default_executor(),
)

#: The assets of each job that carries a profile as its run config.
JOB_PROFILE_ASSETS = {"scanlens_demo": DEMO_JOB_ASSETS, "train_and_evaluate": EVALUATION_JOB_ASSETS}


#: ``--no-baseline-gate``: the gate may promote a model that does not beat its pixel baseline. Only
#: ``make demo`` passes it: the demo trains for minutes on a laptop CPU, from random initialisation
#: where no ImageNet weights are cached, and its model is not expected to beat the baseline; its report
#: says whether it does, and the registry decision records that the rule was off. Launches from the UI,
#: the weekly schedule and the sensors keep the rule (``GateConfig.require_beats_baseline``).
NO_BASELINE_GATE = {"model_version": {"config": {"require_beats_baseline": False}}}


def main(argv: list[str]) -> int:
    """``python -m assets.definitions JOB PROFILE [--no-baseline-gate]`` prints JOB's run config under
    PROFILE as JSON (with :data:`NO_BASELINE_GATE` for ``train_and_evaluate`` when asked).

    ``dagster job execute`` starts a partitioned job with an empty run config (the job's per-partition
    config applies to launches from the UI, schedules and sensors only), so ``make demo`` passes this
    as a run config file (``-c``).
    """
    import json

    flags = [a for a in argv if a.startswith("--")]
    args = [a for a in argv if not a.startswith("--")]
    gate_off = flags == ["--no-baseline-gate"] and args[:1] == ["train_and_evaluate"]
    if len(args) != 2 or args[0] not in JOB_PROFILE_ASSETS or (flags and not gate_off):
        sys.stderr.write(
            f"usage: python -m assets.definitions {{{','.join(JOB_PROFILE_ASSETS)}}} PROFILE "
            "[--no-baseline-gate (train_and_evaluate only)]\n"
        )
        return 2
    config = profile_run_config(args[1], JOB_PROFILE_ASSETS[args[0]])
    if gate_off:
        config = {**config, "ops": {**config["ops"], **NO_BASELINE_GATE}}
    sys.stdout.write(json.dumps(config) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
