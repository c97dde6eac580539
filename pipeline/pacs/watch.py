"""Watching the archive for new studies to score (the logic of ``pacs_sensor``, without Dagster).

Each poll searches the archive (QIDO-RS, :func:`pipeline.pacs.dicomweb.search_studies`) for studies
dated on or after the cursor's ``from`` date that match the :class:`ArchiveFilter`, and returns those
not requested before, at most ``max_studies``, oldest first (studies whose retrieval failed before go
after the others, so they cannot hold up new ones). The caller retrieves them and records what it
retrieved with :func:`record_retrievals`; a study whose retrieval failed is not recorded as requested,
so the next poll returns it again.

The cursor is JSON (the Dagster sensor's cursor, stored in the Dagster database), so it holds keyed
pseudonyms (``stu_<16 hex>``), never a UID, and no study's date:

* ``from``: the first study date searched (YYYYMMDD). It starts ``lookback_days`` before the first
  poll, follows today minus ``lookback_days`` (studies that reach the archive late, up to that many days
  after their study date, are still found) and never moves back; it waits for studies that matched but
  were not yet handed out (over ``max_studies``).
* ``requested``: pseudonym -> the date it was requested. A study is forgotten once ``from`` is more than
  a day past that date: its own date (at most a day after the request, later ones wait) is then out of
  every future search, so it is never requested twice.
* ``attempts``: pseudonym -> failed retrievals so far. A study that keeps failing is retried on every
  poll until ``from`` passes its date.

Studies without a StudyDate, or dated more than a day ahead, are never returned (the latter once the
date arrives).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from dicomweb_client.api import DICOMwebClient

from pipeline.deid import Pseudonymizer
from pipeline.errors import UserInputError
from pipeline.pacs.dicomweb import DATE_FORMAT, ArchiveStudy, parse_date, search_studies

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArchiveFilter:
    """Which studies are scored: ``modality`` among the study's modalities, ``description`` (a word) in
    its StudyDescription; both case-insensitive, empty: any."""

    modality: str = ""
    description: str = ""


@dataclass(frozen=True)
class NewStudy:
    """A study to retrieve: its UID (in memory only), pseudonym and date."""

    uid: str = field(repr=False)
    key: str
    study_date: str = field(repr=False)


@dataclass
class ArchivePoll:
    """What one poll found: studies to retrieve now (``new``), how many more wait, and what the next
    cursor is made of; :func:`record_retrievals` turns it into that cursor once ``new`` was retrieved."""

    new: list[NewStudy]
    waiting: int
    searched_from: str  # YYYYMMDD
    next_from: str  # where the next search starts once every study of ``new`` was attempted
    requested: dict[str, str] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)


def poll_archive(
    client: DICOMwebClient,
    cursor: dict[str, Any],
    today: date,
    archive_filter: ArchiveFilter,
    lookback_days: int,
    max_studies: int,
    pseudonymizer: Pseudonymizer,
) -> ArchivePoll:
    """Search the archive for studies not requested before (``cursor`` is not modified)."""
    if lookback_days < 0 or max_studies < 1:
        raise UserInputError(
            f"the look-back must be 0 days or more and max_studies at least 1, not {lookback_days}, {max_studies}"
        )
    start = parse_date(cursor["from"]) if cursor.get("from") else today - timedelta(days=lookback_days)
    requested: dict[str, str] = dict(cursor.get("requested", {}))
    attempts: dict[str, int] = dict(cursor.get("attempts", {}))
    latest = (today + timedelta(days=1)).strftime(DATE_FORMAT)
    found: list[ArchiveStudy] = search_studies(client, start, archive_filter.modality, archive_filter.description)
    candidates: list[tuple[int, ArchiveStudy, str]] = []
    for study in found:
        key = pseudonymizer.study(study.uid)
        if key not in requested and study.study_date <= latest:
            candidates.append((attempts.get(key, 0), study, key))
    candidates.sort(key=lambda c: (c[0], c[1].study_date, c[1].study_time, c[2]))
    chosen, rest = candidates[:max_studies], candidates[max_studies:]
    # ``from`` follows today minus the look-back, but waits for matching studies not handed out yet
    # (studies that failed before do not hold it: they are retried while they are still in the window).
    held = [parse_date(study.study_date) for n, study, _ in rest if n == 0]
    next_from = max(start, min([today, *held]) - timedelta(days=lookback_days))
    log.info(
        "archive poll from %s: %d matching studies, %d new now, %d waiting, %d requested before",
        start.strftime(DATE_FORMAT),
        len(found),
        len(chosen),
        len(rest),
        len(found) - len(candidates),
    )
    return ArchivePoll(
        new=[NewStudy(study.uid, key, study.study_date) for _, study, key in chosen],
        waiting=len(rest),
        searched_from=start.strftime(DATE_FORMAT),
        next_from=next_from.strftime(DATE_FORMAT),
        requested=requested,
        attempts={k: n for k, n in attempts.items() if k in {key for _, _, key in candidates}},
    )


def record_retrievals(poll: ArchivePoll, retrieved: list[str], failed: list[str], today: date) -> dict[str, Any]:
    """The cursor after ``poll``: the pseudonyms ``retrieved`` marked requested today, the ``failed``
    ones' attempts counted (they stay unrequested: the next poll returns them again). Studies of
    ``poll.new`` in neither list (not attempted) keep ``from`` where it was, so they are found again."""
    requested = dict(poll.requested)
    attempts = dict(poll.attempts)
    for key in retrieved:
        requested[key] = today.strftime(DATE_FORMAT)
        attempts.pop(key, None)
    for key in failed:
        attempts[key] = attempts.get(key, 0) + 1
    attempted = set(retrieved) | set(failed)
    start = poll.next_from if all(s.key in attempted for s in poll.new) else poll.searched_from
    return {
        "from": start,
        "requested": {k: d for k, d in requested.items() if parse_date(d) + timedelta(days=1) >= parse_date(start)},
        "attempts": attempts,
    }
