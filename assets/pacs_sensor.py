"""``pacs_sensor``: new studies of the archive (DICOMweb), retrieved and scored like inbox studies.

Each evaluation searches the archive the ``pacs`` resource names (QIDO-RS) for studies new since the
cursor that match its filter (``watch_modality``, ``watch_description``), retrieves each (WADO-RS) into
the scoring intake (``<pacs_intake>/<stu_ pseudonym>/``) and requests one ``score_new_scans`` run for
it, under the same pseudonymous partition key scheme as ``inbox_sensor`` (a keyed pseudonym of the
folder name), so ``scan_scores`` finds the folder with ``ScoringInbox.study_folder``. The logic lives in
:mod:`pipeline.pacs.watch`; the cursor holds pseudonyms and request dates only.
"""

# No `from __future__ import annotations` here: Dagster reads resource types from the annotations.

import json
import time
from datetime import date

import dagster as dg

from assets.pacs import PacsConnection
from assets.resources import PseudonymSecret, ScanLensProject
from assets.scoring import INBOX_STUDIES, ScoringInbox, score_new_scans
from pipeline.deid import project_pseudonymizer
from pipeline.layout import StudyDrop
from pipeline.pacs.dicomweb import StudyFetch, archive_client, fetch_studies
from pipeline.pacs.watch import ArchiveFilter, poll_archive, record_retrievals
from pipeline.registry import Registry

#: Seconds of retrieval per evaluation after which no further study is started (the rest wait a tick):
#: Dagster stops a sensor evaluation after 60 s by default ($DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS).
FETCH_BUDGET_S = 30.0
#: Instances retrieved at once.
FETCH_WORKERS = 4


def _today() -> date:
    return date.today()


@dg.sensor(job=score_new_scans, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED)
def pacs_sensor(
    context: dg.SensorEvaluationContext,
    project: ScanLensProject,
    secret: PseudonymSecret,
    inbox: ScoringInbox,
    pacs: PacsConnection,
) -> dg.SensorResult | dg.SkipReason:
    """Retrieve each new matching study of the DICOMweb archive and request one scoring run for it.

    Shipped stopped: set the ``pacs`` resource's ``dicomweb_url`` (or ``stow_url``) and filter, then turn
    it on under Automation once a champion exists. A study is requested once; one whose retrieval
    failed is retried on the next evaluations.
    """
    url = pacs.archive_url()
    if not url:
        return dg.SkipReason("no DICOMweb archive configured: set dicomweb_url on the pacs resource")
    if Registry(project.workdir_path).champion() is None:
        return dg.SkipReason("no champion model yet: new studies wait in the archive")
    names = project_pseudonymizer(secret.secret, project.workdir_path)[1]
    client = archive_client(url, pacs.auth_settings())
    today = _today()
    poll = poll_archive(
        client,
        json.loads(context.cursor) if context.cursor else {},
        today,
        ArchiveFilter(pacs.watch_modality, pacs.watch_description),
        pacs.watch_lookback_days,
        pacs.watch_max_studies,
        names,
    )
    drop = StudyDrop(inbox.pacs_intake_path(project))
    retrieved: list[StudyFetch] = []
    failed: list[StudyFetch] = []
    started = time.monotonic()
    for study in poll.new:
        if time.monotonic() - started > FETCH_BUDGET_S:
            break  # not attempted: returned again by the next poll
        fetched = fetch_studies(client, drop, names, [study.uid], workers=FETCH_WORKERS).studies[0]
        (retrieved if fetched.complete else failed).append(fetched)
        if not fetched.complete:
            context.log.warning("%s not retrieved completely, retried next time: %s", study.key, fetched.summary())
    cursor = json.dumps(
        record_retrievals(poll, [s.key for s in retrieved], [s.key for s in failed], today), sort_keys=True
    )
    if not retrieved:
        return dg.SensorResult(
            skip_reason=dg.SkipReason(
                f"no new study retrieved ({len(failed)} failed, {poll.waiting} waiting) since {poll.searched_from}"
            ),
            cursor=cursor,
        )
    keys = [names.inbox(s.key) for s in retrieved]  # what ScoringInbox.study_folder resolves
    context.log.info("requesting scoring of %d archive studies: %s", len(keys), ", ".join(keys))
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=key, run_key=f"pacs:{key}") for key in keys],
        dynamic_partitions_requests=[INBOX_STUDIES.build_add_request(keys)],
        cursor=cursor,
    )
