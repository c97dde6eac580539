"""Polling the inbox: complete studies once, incomplete ones wait, keys are pseudonyms."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.deid import Pseudonymizer
from pipeline.errors import UserInputError
from pipeline.scoring.inbox import find_study, poll_inbox, settled_studies

NAMES = Pseudonymizer(b"inbox-test")


def _study(inbox: Path, name: str, files: int = 2) -> Path:
    folder = inbox / name / "series1"
    folder.mkdir(parents=True)
    for k in range(files):
        (folder / f"{k}.dcm").write_bytes(b"x" * (k + 1))
    return inbox / name


def test_a_study_is_ready_once_after_it_has_been_stable(tmp_path: Path) -> None:
    _study(tmp_path, "DOE^JANE 12345")
    first = poll_inbox(tmp_path, {}, now=1000.0, stable_seconds=60, pseudonymizer=NAMES)
    assert first.ready == [] and first.waiting == 1  # just seen: not yet known to be stable
    early = poll_inbox(tmp_path, first.state, now=1059.0, stable_seconds=60, pseudonymizer=NAMES)
    assert early.ready == []
    ready = poll_inbox(tmp_path, early.state, now=1060.0, stable_seconds=60, pseudonymizer=NAMES)
    assert [s.key for s in ready.ready] == [NAMES.inbox("DOE^JANE 12345")] and ready.ready[0].n_files == 2
    assert "DOE" not in ready.ready[0].key and "DOE" not in repr(ready.state)  # keys and state are pseudonymous
    for later in (1061.0, 5000.0):  # never requested twice
        assert poll_inbox(tmp_path, ready.state, now=later, stable_seconds=60, pseudonymizer=NAMES).ready == []


def test_a_study_still_being_written_waits_and_the_clock_restarts(tmp_path: Path) -> None:
    study = _study(tmp_path, "study-a")
    state = poll_inbox(tmp_path, {}, now=0.0, stable_seconds=30, pseudonymizer=NAMES).state
    (study / "series1" / "2.dcm").write_bytes(b"arriving")  # a new slice lands at t=20
    waiting = poll_inbox(tmp_path, state, now=20.0, stable_seconds=30, pseudonymizer=NAMES)
    assert waiting.ready == [] and waiting.waiting == 1
    assert poll_inbox(tmp_path, waiting.state, now=45.0, stable_seconds=30, pseudonymizer=NAMES).ready == []
    done = poll_inbox(tmp_path, waiting.state, now=50.0, stable_seconds=30, pseudonymizer=NAMES)
    assert len(done.ready) == 1 and done.ready[0].n_files == 3


def test_files_added_after_scoring_request_the_study_again_with_a_new_run_key(tmp_path: Path) -> None:
    study = _study(tmp_path, "study-b")
    state = poll_inbox(tmp_path, {}, now=0.0, stable_seconds=0, pseudonymizer=NAMES)
    assert len(state.ready) == 1
    (study / "series2").mkdir()
    (study / "series2" / "0.dcm").write_bytes(b"late series")
    again = poll_inbox(tmp_path, state.state, now=1.0, stable_seconds=0, pseudonymizer=NAMES)
    assert [s.key for s in again.ready] == [state.ready[0].key]
    assert again.ready[0].run_key != state.ready[0].run_key


def test_loose_files_hidden_entries_and_empty_folders_are_not_studies(tmp_path: Path) -> None:
    (tmp_path / "loose.dcm").write_bytes(b"x")
    (tmp_path / ".rsync-tmp").mkdir()
    (tmp_path / ".rsync-tmp" / "a").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    poll = poll_inbox(tmp_path, {}, now=0.0, stable_seconds=0, pseudonymizer=NAMES)
    assert poll.ready == [] and poll.loose_files == 1 and poll.waiting == 1


def test_settled_studies_uses_file_age_and_find_study_maps_keys_back(tmp_path: Path) -> None:
    old, new = _study(tmp_path, "old"), _study(tmp_path, "new")
    for path in old.rglob("*"):
        os.utime(path, (1_000, 1_000))
    poll = settled_studies(tmp_path, NAMES, now=1_000 + 120, min_age_seconds=60)
    assert [s.folder for s in poll.ready] == [old] and poll.waiting == 1
    assert find_study(tmp_path, NAMES.inbox("new"), NAMES) == new
    with pytest.raises(UserInputError, match="no folder"):
        find_study(tmp_path, "inbox_0000000000000000", NAMES)
    with pytest.raises(UserInputError, match="does not exist"):
        poll_inbox(tmp_path / "missing", {}, 0.0, 0, NAMES)
