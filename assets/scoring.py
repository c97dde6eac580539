"""Group ``scoring``: new studies from an inbox folder, scored with the champion.

``inbox_sensor`` polls the inbox; each study folder whose file list has been stable for
``stable_seconds`` becomes a dynamic partition of ``scan_scores`` (a keyed pseudonym of the folder
name, never the name itself) and one run of ``score_new_scans``. The sensor's cursor remembers what
it requested, and each run key names the study and its file list, so a study is requested once.
"""

# No `from __future__ import annotations` here: Dagster reads Config/resource types from the annotations.

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from assets.common import IO_RETRY, OWNER, user_errors_are_final
from assets.config import config_class, settings_from
from assets.operations import champion_model
from assets.pacs import PacsConnection
from assets.resources import PseudonymSecret, ScanLensProject
from pipeline.deid import Pseudonymizer, project_pseudonymizer
from pipeline.layout import Workdir
from pipeline.pacs.send import Destination, send_objects
from pipeline.registry import Registry
from pipeline.scoring import ScoreSettings, warm_scorer
from pipeline.scoring.inbox import find_study, poll_inbox

#: One partition per inbox study; keys are ``inbox_<16 hex>`` pseudonyms.
INBOX_STUDIES = dg.DynamicPartitionsDefinition(name="inbox_studies")


class ScoringInbox(dg.ConfigurableResource):
    """Where new studies arrive and where the DICOM outputs go. Empty fields take their defaults at run
    time: ``$SCANLENS_INBOX`` or ``<demo root>/inbox``; ``$SCANLENS_OUTBOX`` or ``<demo root>/outbox``;
    a study counts as complete when its files have not changed for ``$SCANLENS_INBOX_STABLE_SECONDS``
    (default 60) seconds."""

    inbox: str = Field(
        default="", description="inbox folder, one folder per study; empty: $SCANLENS_INBOX, else <demo root>/inbox"
    )
    outbox: str = Field(
        default="", description="outbox for DICOM outputs; empty: $SCANLENS_OUTBOX, else <demo root>/outbox"
    )
    pacs_intake: str = Field(
        default="",
        description="where pacs_sensor retrieves studies to score, one folder per study; empty: "
        "$SCANLENS_PACS_INTAKE, else <demo root>/pacs_intake",
    )
    stable_seconds: float | None = Field(
        default=None, description="quiet time before a study is scored; null: $SCANLENS_INBOX_STABLE_SECONDS, else 60"
    )

    def inbox_path(self, project: ScanLensProject) -> Path:
        return Path(self.inbox or os.environ.get("SCANLENS_INBOX") or project.demo_inbox)

    def outbox_path(self, project: ScanLensProject) -> Path:
        return Path(self.outbox or os.environ.get("SCANLENS_OUTBOX") or project.demo_outbox)

    def pacs_intake_path(self, project: ScanLensProject) -> Path:
        return Path(self.pacs_intake or os.environ.get("SCANLENS_PACS_INTAKE") or project.demo_pacs_intake)

    def study_folder(self, project: ScanLensProject, key: str, pseudonymizer: Pseudonymizer) -> Path:
        """The study folder whose pseudonym is ``key``: in the inbox, else among pacs_sensor's retrievals."""
        intake = self.pacs_intake_path(project)
        if intake.is_dir() and any(pseudonymizer.inbox(p.name) == key for p in intake.iterdir() if p.is_dir()):
            return find_study(intake, key, pseudonymizer)
        return find_study(self.inbox_path(project), key, pseudonymizer)

    def quiet_seconds(self) -> float:
        if self.stable_seconds is not None:
            return self.stable_seconds
        return float(os.environ.get("SCANLENS_INBOX_STABLE_SECONDS") or 60)


if TYPE_CHECKING:  # the class is made at import time; to a type checker it is a Dagster config

    class ScanScoresConfig(dg.Config):
        dicom_outputs: bool
else:
    ScanScoresConfig = config_class(
        "ScanScoresConfig",
        ScoreSettings,
        doc="What scoring writes besides the scores.",
        extra={
            "dicom_outputs": (
                bool,
                Field(default=True, description="write a DICOM SR (and Secondary Capture) per scan to the outbox"),
            )
        },
    )


def _pseudonymizer(project: ScanLensProject, secret: PseudonymSecret) -> Pseudonymizer:
    return project_pseudonymizer(secret.secret, project.workdir_path)[1]


@dg.asset(
    group_name="scoring",
    owners=[OWNER],
    kinds={"pytorch", "dicom", "parquet"},
    partitions_def=INBOX_STUDIES,
    deps=[champion_model],
    retry_policy=IO_RETRY,
)
def scan_scores(
    context: dg.AssetExecutionContext,
    config: ScanScoresConfig,
    project: ScanLensProject,
    secret: PseudonymSecret,
    inbox: ScoringInbox,
    pacs: PacsConnection,
) -> dg.MaterializeResult:
    """Scores of one inbox study's scans by the champion (``W/scoring/scores.parquet``): pseudonymous ids,
    calibrated probability, uncertainty (fold-ensemble spread), decision (positive, negative or refer, with
    the reason), model version; a GradCAM overlay per scan;
    a DICOM SR and Secondary Capture per scan in the outbox, filed into the source study.

    The study is ingested and de-identified like any source (unreadable files are quarantined with a
    reason); scans already scored by the current champion are skipped. With the ``pacs`` resource's
    ``send_to``/``stow_url`` set, the SR and SC go back into the source study (C-STORE / STOW-RS); what
    cannot be sent waits in ``OUTBOX/failed/`` and the next scoring run re-sends it.
    """
    workdir = project.workdir_path
    with user_errors_are_final():
        settings = settings_from(config, ScoreSettings)
        send = pacs.send_settings()
        if send.sends and not config.dicom_outputs:
            raise dg.Failure("the pacs resource sends DICOM outputs, but dicom_outputs is off", allow_retries=False)
        Destination.all_of(send)  # a malformed address fails before any scoring
        folder = inbox.study_folder(project, context.partition_key, _pseudonymizer(project, secret))
        scorer = warm_scorer(workdir, settings.device)  # champion, ingest workers, table index: kept per process
        done = scorer.score_study(
            folder,
            context.partition_key,
            inbox.outbox_path(project) if config.dicom_outputs else None,
            secret.secret,
            overlays=settings.overlays,
        )
        sent = (
            send_objects(inbox.outbox_path(project), done.dicom_outputs, send, pacs.auth_settings())
            if send.sends
            else None
        )
    if sent is not None and sent.failed:
        context.log.warning(
            "%d DICOM objects could not be sent (%s); they wait in the outbox's failed/ folder for the next run",
            len(sent.failed),
            sent.summary()["failed_by_reason"],
        )
    shown = ["scan_id", "probability", "uncertainty", "decision", "refer_reason"]
    table = done.scores[shown].to_markdown(index=False) if len(done.scores) else ""
    return dg.MaterializeResult(
        metadata={
            "model_version": done.model_version,
            "source_files": done.n_files,
            "scans": done.n_scans,
            "scored": len(done.scores),
            "already_scored": done.n_skipped,
            "other_dimensions": done.n_incompatible,
            "not_scored_because": dg.MetadataValue.json(done.not_scored),
            "quarantined_by_reason": dg.MetadataValue.json(done.quarantine_by_reason),
            "dicom_objects": len(done.dicom_outputs),
            "dicom_output_failures": dg.MetadataValue.json(done.dicom_failures),
            "scored_from_nifti_without_dicom_output": done.n_without_dicom_source,
            "scores": dg.MetadataValue.md(table or "nothing new to score"),
            "seconds": dg.MetadataValue.json({k: round(v, 3) for k, v in done.seconds.items()}),
            "scores_table": dg.MetadataValue.path(str(Workdir(workdir).scores)),
            "sent_to_pacs": dg.MetadataValue.json(sent.summary() if sent is not None else {"configured": False}),
        }
    )


score_new_scans = dg.define_asset_job(
    "score_new_scans",
    selection=dg.AssetSelection.assets(scan_scores),
    description="Score one inbox study (a partition of scan_scores) with the champion; launched by inbox_sensor.",
    executor_def=dg.in_process_executor,
)


@dg.sensor(job=score_new_scans, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.STOPPED)
def inbox_sensor(
    context: dg.SensorEvaluationContext, project: ScanLensProject, secret: PseudonymSecret, inbox: ScoringInbox
) -> dg.SensorResult | dg.SkipReason:
    """Request one scoring run per complete new inbox study (files unchanged for ``stable_seconds``).

    Shipped stopped: turn it on under Automation once a champion exists. Studies wait while there is
    no champion.
    """
    folder = inbox.inbox_path(project)
    if not folder.is_dir():
        return dg.SkipReason(f"inbox folder {folder} does not exist")
    if Registry(project.workdir_path).champion() is None:
        return dg.SkipReason("no champion model yet: new studies wait in the inbox")
    state = json.loads(context.cursor) if context.cursor else {}
    poll = poll_inbox(folder, state, time.time(), inbox.quiet_seconds(), _pseudonymizer(project, secret))
    if poll.loose_files:
        context.log.warning(
            "%d files lie directly in the inbox: put each study in its own folder to score it", poll.loose_files
        )
    cursor = json.dumps(poll.state, sort_keys=True)
    if not poll.ready:
        return dg.SensorResult(
            skip_reason=dg.SkipReason(f"no complete new study ({poll.waiting} still being written or empty)"),
            cursor=cursor,
        )
    keys = [study.key for study in poll.ready]
    context.log.info("requesting scoring of %d studies: %s", len(keys), ", ".join(keys))
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=s.key, run_key=s.run_key) for s in poll.ready],
        dynamic_partitions_requests=[INBOX_STUDIES.build_add_request(keys)],
        cursor=cursor,
    )
