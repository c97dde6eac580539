"""Reading the archive over DICOMweb: QIDO-RS searches and WADO-RS retrieval into a study drop.

:func:`search_studies` finds studies (by date, modality and a study-description keyword);
:func:`fetch_studies` lists each study's instances (QIDO-RS) and retrieves them (WADO-RS), a bounded
number at a time, into a :class:`~pipeline.layout.StudyDrop`: ``<stu_ key>/<ins_ key>.dcm``, keyed
pseudonyms of the Study and SOP Instance UIDs, so a file name never carries an identifier. An instance
whose file is already there is not requested again, so a second run only retrieves what is missing.

UIDs stay in memory: results name studies by pseudonym, logs carry pseudonyms, counts and error types
(``HTTP 404``, ``ConnectionError``), never a UID or an exception's message (which may quote a URL or a
header). A failed instance is counted and the run goes on; a server that cannot be reached or refuses
our credentials stops it with a one-line :class:`~pipeline.errors.UserInputError`.

Archives differ in how they match wildcards (Orthanc 1.10 with its DICOMweb plug-in 1.7 finds nothing
for a percent-encoded ``*``, which is how dicomweb-client sends it), so the description keyword is
matched here (case-insensitive, anywhere in StudyDescription); dates and modality are matched by the
archive and checked again here.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from urllib.parse import urlparse

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient

from pipeline.deid import Pseudonymizer
from pipeline.errors import UserInputError
from pipeline.layout import StudyDrop
from pipeline.pacs.auth import dicomweb_client
from pipeline.settings.pacs import PacsAuthSettings
from pipeline.storage import atomic_write

log = logging.getLogger(__name__)
# dicomweb-client logs every request at INFO (with UIDs; pipeline.logsafety withholds its text anyway):
# show only its warnings, or a retrieval of a thousand instances writes a thousand lines.
logging.getLogger("dicomweb_client").setLevel(logging.WARNING)

#: Results asked for per QIDO-RS request; pages are requested until one comes back empty.
PAGE_SIZE = 500
#: Pages of one search at most (a server that ignores ``offset`` is caught earlier: no new results).
MAX_PAGES = 1000
DATE_FORMAT = "%Y%m%d"
#: Tries per request when the connection fails (see :func:`archive_client`).
ATTEMPTS = 3

STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"
STUDY_DATE, STUDY_TIME, MODALITIES, DESCRIPTION = "00080020", "00080030", "00080061", "00081030"
STUDY_FIELDS = ("StudyInstanceUID", "StudyDate", "StudyTime", "ModalitiesInStudy", "StudyDescription")


@dataclass(frozen=True)
class ArchiveStudy:
    """One study a search found. ``uid`` and ``description`` stay in memory (never logged or stored)."""

    uid: str = field(repr=False)
    study_date: str  # YYYYMMDD, "" when the archive has none
    study_time: str = field(default="", repr=False)
    modalities: tuple[str, ...] = ()
    description: str = field(default="", repr=False)


@dataclass
class StudyFetch:
    """What one study's retrieval did, by its pseudonym ``key`` (``stu_<16 hex>``).

    ``found`` instances were listed; each was ``retrieved``, ``skipped`` (its file was already there)
    or failed (``failed``: error type -> count; a failed listing counts under ``search <type>``).
    """

    key: str
    found: int = 0
    retrieved: int = 0
    skipped: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    series_uids: set[str] = field(default_factory=set, repr=False)  # in memory only (the labels file)

    @property
    def n_failed(self) -> int:
        return sum(self.failed.values())

    @property
    def complete(self) -> bool:
        """Every instance of the study is on disk (and the archive has the study)."""
        return self.found > 0 and self.n_failed == 0

    def summary(self) -> str:
        """One line: pseudonym, counts and error types (no UID)."""
        why = ", ".join(f"{kind}: {n}" for kind, n in sorted(self.failed.items()))
        text = f"{self.key}: {self.found} found, {self.retrieved} retrieved, {self.skipped} already on disk"
        if self.found == 0 and not self.failed:
            return f"{self.key}: not found in the archive"
        return text + (f"; {self.n_failed} failed ({why})" if self.failed else "")


@dataclass
class FetchResult:
    """Every study's :class:`StudyFetch`, in the order asked for."""

    studies: list[StudyFetch] = field(default_factory=list)

    def total(self, what: str) -> int:
        """Sum of ``found``, ``retrieved``, ``skipped`` or ``n_failed`` over the studies."""
        return sum(int(getattr(s, what)) for s in self.studies)

    @property
    def incomplete(self) -> list[StudyFetch]:
        return [s for s in self.studies if not s.complete]


def archive_client(url: str, settings: PacsAuthSettings) -> DICOMwebClient:
    """:func:`pipeline.pacs.auth.dicomweb_client` for reading an archive, with shorter retries.

    A request that fails to connect or times out (or is answered 408, 429, 503 or 504) is tried
    :data:`ATTEMPTS` times, 1 s and then 2 s apart: dicomweb-client's own default (5 tries over 30 s)
    would outlast a sensor evaluation and keep ``fetch`` silent for half a minute on a mistyped URL.
    """
    client = dicomweb_client(url, settings)
    client.set_http_retry_params(retry=True, max_attempts=ATTEMPTS, wait_exponential_multiplier=500)
    return client


def server_name(client: DICOMwebClient) -> str:
    """``host:port`` of the client's server (no credentials, no path)."""
    parts = urlparse(str(client.base_url))
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def error_kind(exc: BaseException) -> str:
    """An exception as a short kind without its message: ``HTTP 404``, ``ConnectionError``."""
    response = getattr(exc, "response", None)
    if isinstance(exc, requests.HTTPError) and response is not None:
        return f"HTTP {response.status_code}"
    return type(exc).__name__


def _archive_error(client: DICOMwebClient, exc: BaseException) -> UserInputError | None:
    """A one-line error when ``exc`` means nothing can be read from the server (unreachable, TLS, auth)."""
    where, kind = server_name(client), error_kind(exc)
    if isinstance(exc, requests.exceptions.SSLError):
        return UserInputError(
            f"TLS check of the DICOMweb server {where} failed ({kind}): give its CA with --pacs-ca-bundle"
        )
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return UserInputError(f"cannot reach the DICOMweb server {where} ({kind})")
    if kind in ("HTTP 401", "HTTP 403"):
        return UserInputError(
            f"the DICOMweb server {where} refused the request ({kind}): check --pacs-auth and "
            "$SCANLENS_PACS_USER/$SCANLENS_PACS_PASSWORD or $SCANLENS_PACS_TOKEN"
        )
    return None


def _first(record: dict[str, Any], tag: str) -> str:
    values = record.get(tag, {}).get("Value") or [""]
    return str(values[0])


def _paged(search: Callable[..., list[dict[str, Any]]], key_tag: str, **kwargs: Any) -> list[dict[str, Any]]:
    """Every result of a QIDO-RS search, page by page (``limit``/``offset``), deduplicated by ``key_tag``."""
    results: dict[str, dict[str, Any]] = {}
    offset = 0
    for _ in range(MAX_PAGES):
        page = search(limit=PAGE_SIZE, offset=offset, **kwargs)
        fresh = {_first(r, key_tag): r for r in page if _first(r, key_tag) not in results}
        if not fresh:  # an empty page, or a server that ignores offset and sends the first page again
            break
        results.update(fresh)
        offset += len(page)
    return list(results.values())


def _date_or_empty(text: str) -> str:
    """``text`` when it is a valid YYYYMMDD date, else "" (an archive's malformed date counts as none)."""
    try:
        return parse_date(text).strftime(DATE_FORMAT) if text else ""
    except UserInputError:
        return ""


def parse_date(text: str) -> date:
    """``YYYYMMDD`` as a date, or a one-line :class:`UserInputError`."""
    try:
        if re.fullmatch(r"\d{8}", text.strip()):
            return datetime.strptime(text.strip(), DATE_FORMAT).date()
    except ValueError:
        pass
    raise UserInputError(f"expected a date YYYYMMDD, not {text!r}")


def search_studies(
    client: DICOMwebClient,
    since: date | None = None,
    modality: str = "",
    description_keyword: str = "",
) -> list[ArchiveStudy]:
    """Studies of the archive dated ``since`` or later (undated ones only without ``since``), with
    ``modality`` among their modalities and ``description_keyword`` in their description (both
    case-insensitive; empty: any), oldest first."""
    filters: dict[str, str] = {}
    if since is not None:
        filters["StudyDate"] = f"{since.strftime(DATE_FORMAT)}-"
    if modality:
        filters["ModalitiesInStudy"] = modality.strip().upper()
    try:
        records = _paged(client.search_for_studies, STUDY_UID, fields=STUDY_FIELDS, search_filters=filters)
    except (requests.RequestException, ValueError) as exc:
        raise (_archive_error(client, exc) or UserInputError(f"study search failed ({error_kind(exc)})")) from None
    found, keyword = [], description_keyword.strip().casefold()
    for record in records:
        uid = _first(record, STUDY_UID)
        study = ArchiveStudy(
            uid=uid,
            study_date=_date_or_empty(_first(record, STUDY_DATE)),
            study_time=_first(record, STUDY_TIME),
            modalities=tuple(str(m).upper() for m in record.get(MODALITIES, {}).get("Value") or ()),
            description=_first(record, DESCRIPTION),
        )
        if not uid:
            continue
        if since is not None and (not study.study_date or study.study_date < since.strftime(DATE_FORMAT)):
            continue  # the archive ignored the date range, or the study has no date
        if modality and study.modalities and modality.strip().upper() not in study.modalities:
            continue
        if keyword and keyword not in study.description.casefold():
            continue
        found.append(study)
    log.info("study search: %d studies match (%d returned by the archive)", len(found), len(records))
    return sorted(found, key=lambda s: (s.study_date, s.study_time, s.uid))


@dataclass(frozen=True)
class _Task:
    study: StudyFetch
    study_uid: str
    series_uid: str
    sop_uid: str
    instance_key: str


def _list_instances(
    client: DICOMwebClient, drop: StudyDrop, pseudonymizer: Pseudonymizer, study_uid: str, fetch: StudyFetch
) -> Iterator[_Task]:
    """The study's instances not yet on disk (counting the others as skipped)."""
    try:
        records = _paged(client.search_for_instances, SOP_UID, study_instance_uid=study_uid)
    except (requests.RequestException, ValueError) as exc:
        fatal = _archive_error(client, exc)
        if fatal is not None:
            raise fatal from None
        fetch.failed[f"search {error_kind(exc)}"] += 1
        log.warning("%s: instance search failed (%s)", fetch.key, error_kind(exc))
        return
    for record in records:
        series_uid, sop_uid = _first(record, SERIES_UID), _first(record, SOP_UID)
        if not series_uid or not sop_uid:
            fetch.failed["incomplete search result"] += 1
            continue
        fetch.found += 1
        fetch.series_uids.add(series_uid)
        instance_key = pseudonymizer.instance(sop_uid)
        if drop.instance(fetch.key, instance_key).is_file():
            fetch.skipped += 1
        else:
            yield _Task(fetch, study_uid, series_uid, sop_uid, instance_key)


def _retrieve(client: DICOMwebClient, drop: StudyDrop, task: _Task) -> None:
    """Retrieve one instance (WADO-RS, its stored transfer syntax) and write it atomically (DICOM Part 10)."""
    dataset = client.retrieve_instance(task.study_uid, task.series_uid, task.sop_uid)
    if str(dataset.get("SOPInstanceUID", "")) != task.sop_uid:
        raise ValueError("the archive sent another instance than the one asked for")
    atomic_write(
        drop.instance(task.study.key, task.instance_key),
        lambda tmp: pydicom.dcmwrite(tmp, dataset, enforce_file_format=True),
    )


def fetch_studies(
    client: DICOMwebClient,
    drop: StudyDrop,
    pseudonymizer: Pseudonymizer,
    study_uids: Iterable[str],
    workers: int = 4,
) -> FetchResult:
    """Retrieve every instance of each study into ``drop`` (``<stu_ key>/<ins_ key>.dcm``), at most
    ``workers`` requests at a time; files already there are not requested. Studies are listed one
    after the other while earlier ones download."""
    if workers < 1:
        raise UserInputError(f"workers must be at least 1, not {workers}")
    result = FetchResult()
    by_key: dict[str, StudyFetch] = {}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wado") as pool:
        pending: list[tuple[_Task, Future[None]]] = []
        for uid in study_uids:
            key = pseudonymizer.study(uid)
            if key in by_key:
                continue
            by_key[key] = fetch = StudyFetch(key)
            result.studies.append(fetch)
            for task in _list_instances(client, drop, pseudonymizer, uid, fetch):
                pending.append((task, pool.submit(_retrieve, client, drop, task)))
        for task, future in pending:
            exc = future.exception()  # counted here, in this thread, in the order submitted
            if exc is None:
                task.study.retrieved += 1
            else:
                task.study.failed[error_kind(exc)] += 1
                log.warning("%s: instance %s not retrieved (%s)", task.study.key, task.instance_key, error_kind(exc))
    for fetch in result.studies:
        (log.info if fetch.complete else log.warning)("%s", fetch.summary())
    return result
