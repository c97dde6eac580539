"""Watching the archive (pipeline.pacs.watch): each study once, oldest first, a cursor without identifiers."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from pipeline.deid import Pseudonymizer
from pipeline.pacs.dicomweb import archive_client
from pipeline.pacs.watch import ArchiveFilter, ArchivePoll, poll_archive, record_retrievals
from pipeline.settings.pacs import PacsAuthSettings
from tests.orthanc import Orthanc
from tests.pipeline.pacs.conftest import upload_study

NAMES = Pseudonymizer(b"test-secret")
D = date(2024, 3, 10)
CT = ArchiveFilter(modality="CT")


def _day(offset: int) -> str:
    return (D + timedelta(days=offset)).strftime("%Y%m%d")


class Watcher:
    """Polls as the sensor does; every study handed out is recorded as retrieved unless told otherwise."""

    def __init__(self, server: Orthanc, archive_filter: ArchiveFilter = CT, lookback: int = 3, max_studies: int = 5):
        self.client = archive_client(server.dicomweb_url, PacsAuthSettings())
        self.filter, self.lookback, self.max_studies = archive_filter, lookback, max_studies
        self.cursor: dict[str, Any] = {}

    def poll(self, today: date) -> ArchivePoll:
        return poll_archive(self.client, self.cursor, today, self.filter, self.lookback, self.max_studies, NAMES)

    def tick(self, today: date, fail: tuple[str, ...] = ()) -> list[str]:
        """One poll; the UIDs handed out (``fail``: those whose retrieval fails)."""
        poll = self.poll(today)
        keys = [s.key for s in poll.new]
        failed = [NAMES.study(uid) for uid in fail]
        self.cursor = record_retrievals(poll, [k for k in keys if k not in failed], failed, today)
        json.dumps(self.cursor)  # the sensor stores it as JSON
        return [s.uid for s in poll.new]


def test_each_matching_study_is_handed_out_once_oldest_first(archive: Orthanc, tmp_path: Path) -> None:
    a = upload_study(archive, tmp_path / "a", study_date=_day(-2))
    b = upload_study(archive, tmp_path / "b", study_date=_day(-1))
    c = upload_study(archive, tmp_path / "c", study_date=_day(0))
    mr = upload_study(archive, tmp_path / "mr", study_date=_day(0), modality="MR")
    watcher = Watcher(archive, max_studies=2)
    first = watcher.poll(D)
    assert [s.uid for s in first.new] == [a, b] and first.waiting == 1
    assert watcher.tick(D) == [a, b]
    assert watcher.tick(D) == [c]
    assert watcher.tick(D) == [] and watcher.tick(D + timedelta(days=1)) == []
    text = json.dumps(watcher.cursor)
    assert sorted(watcher.cursor["requested"]) == sorted(NAMES.study(u) for u in (a, b, c))
    for uid in (a, b, c, mr):
        assert uid not in text
    assert set(watcher.cursor["requested"].values()) == {_day(0)}  # when each was requested, not its own date
    mr_watcher = Watcher(archive, ArchiveFilter(modality="mr"))
    assert mr_watcher.tick(D) == [mr]


def test_the_description_word_filters_and_ignores_case(archive: Orthanc, tmp_path: Path) -> None:
    chest = upload_study(archive, tmp_path / "a", study_date=_day(0), description="Low-dose CHEST")
    upload_study(archive, tmp_path / "b", study_date=_day(0), description="abdomen")
    assert Watcher(archive, ArchiveFilter("CT", "chest")).tick(D) == [chest]


def test_a_failed_retrieval_is_retried_after_the_fresh_studies(archive: Orthanc, tmp_path: Path) -> None:
    a = upload_study(archive, tmp_path / "a", study_date=_day(-1))
    b = upload_study(archive, tmp_path / "b", study_date=_day(0))
    watcher = Watcher(archive, max_studies=1)
    assert watcher.tick(D, fail=(a,)) == [a]
    assert watcher.cursor["attempts"] == {NAMES.study(a): 1} and NAMES.study(a) not in watcher.cursor["requested"]
    assert watcher.tick(D) == [b]  # the fresh study first, though younger
    assert watcher.tick(D) == [a]
    assert watcher.tick(D) == [] and watcher.cursor["attempts"] == {}


def test_late_arrivals_within_the_look_back_are_found_and_old_requests_forgotten(
    archive: Orthanc, tmp_path: Path
) -> None:
    watcher = Watcher(archive, lookback=7)
    assert watcher.tick(D) == [] and watcher.cursor["from"] == _day(-7)
    late = upload_study(archive, tmp_path / "late", study_date=_day(-3))  # reaches the archive 4 days late
    assert watcher.tick(D + timedelta(days=1)) == [late]
    assert watcher.cursor["from"] == _day(-6) and NAMES.study(late) in watcher.cursor["requested"]
    normal = upload_study(archive, tmp_path / "normal", study_date=_day(2))
    ahead = upload_study(archive, tmp_path / "ahead", study_date=_day(12))  # dated ahead of the clock
    assert watcher.tick(D + timedelta(days=10)) == [normal]
    assert watcher.cursor["from"] == _day(3) and watcher.cursor["requested"] == {NAMES.study(normal): _day(10)}
    assert watcher.tick(D + timedelta(days=10)) == []  # `late` was forgotten: its date is out of every search
    assert watcher.tick(D + timedelta(days=11)) == [ahead]  # once its date is at most a day away
    upload_study(archive, tmp_path / "older", study_date=_day(1))  # later than the look-back allows
    assert watcher.tick(D + timedelta(days=11)) == []


def test_the_search_window_waits_for_studies_not_handed_out_yet(archive: Orthanc, tmp_path: Path) -> None:
    uids = [upload_study(archive, tmp_path / str(n), study_date=_day(n)) for n in (-3, -2, 0)]
    watcher = Watcher(archive, lookback=3, max_studies=1)
    watcher.cursor = {"from": _day(-3)}
    later = D + timedelta(days=5)  # the sensor was stopped for a while: the window would have moved on
    assert [watcher.tick(later) for _ in range(4)] == [[uids[0]], [uids[1]], [uids[2]], []]
    assert watcher.cursor["from"] == _day(2)


def test_studies_not_attempted_keep_the_search_window(archive: Orthanc, tmp_path: Path) -> None:
    uid = upload_study(archive, tmp_path / "a", study_date=_day(-3))
    watcher = Watcher(archive, lookback=3)
    watcher.cursor = {"from": _day(-3)}
    poll = watcher.poll(D + timedelta(days=5))
    assert [s.uid for s in poll.new] == [uid] and poll.next_from == _day(2)
    cursor = record_retrievals(poll, [], [], D + timedelta(days=5))  # out of time before it was started
    assert cursor["from"] == _day(-3)
    watcher.cursor = cursor
    assert watcher.tick(D + timedelta(days=5)) == [uid]
