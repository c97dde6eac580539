"""Scenario: the PHI canaries of the scoring scenario, followed to the terminal. Canary-laden scans
are ingested, the work folder's status is shown, canary-laden inbox studies are scored and the
registry is listed, every command with ``-v`` (debug logging, the most a person would see). Some
inbox headers are odd in ways the libraries complain about: a referring physician named
``DRCNRYSMITH`` (highdicom warns that the string is unlikely to be a person name, quoting it) and
the impossible birth date ``19420231``. No canary appears on any command's stdout or stderr, every
command succeeds, the highdicom warning is shown without its text, and the scan with the
impossible birth date still gets its SR and Secondary Capture (with an empty birth date).

In-process, ``pipeline.logsafety.install()`` keeps the text of warnings from the header-reading
libraries and of their log records (with their tracebacks) away from every log handler."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import warnings
from pathlib import Path

import pandas as pd
import pydicom
import pydicom.config
import pytest

from tests.conftest import REPO, make_inbox
from tests.phi_canaries import plant_canaries, plant_into_existing

SECRET = "phi-stderr-secret"
PHYSICIAN = "DRCNRYSMITH"  # a single-component person name: highdicom warns, quoting it
BAD_BIRTH_DATE = "19420231"  # 31 February


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SCANLENS_SECRET": SECRET}
    return subprocess.run([sys.executable, "-m", "pipeline", "-v", *map(str, args)], check=False, cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def _rewrite(paths: list[Path], **values: str) -> None:
    previous = pydicom.config.settings.writing_validation_mode
    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
    try:
        for path in paths:
            ds = pydicom.dcmread(path)
            for keyword, value in values.items():
                setattr(ds, keyword, value)
            ds.save_as(path)
    finally:
        pydicom.config.settings.writing_validation_mode = previous


def _hits(outputs: dict[str, str], canaries: list[str]) -> dict[str, list[str]]:
    found = {place: [c for c in canaries if c in text] for place, text in outputs.items()}
    return {place: hits for place, hits in found.items() if hits}


def test_no_canary_reaches_any_commands_terminal_output(champion_workdir: Path, tmp_path: Path) -> None:
    from pipeline.demo import DemoArchive, prepare_demo_source
    from pipeline.registry import Registry

    # a labelled source with canaries in every Annex E attribute, and a canary CT series beside it
    source = prepare_demo_source([DemoArchive(REPO / "data" / "demo" / "breastmnist.npz", 3)], tmp_path / "src",
                                 tmp_path / "labels.csv", seed=21)
    canaries = plant_into_existing(source.folder) + plant_canaries(source.folder / "canary_ct")
    # an inbox of canary-laden studies, whose folder names are MRNs and accession numbers
    inbox = make_inbox(tmp_path, per_split=1, seed=17)
    studies = sorted(inbox.iterdir())
    canaries += plant_into_existing(inbox) + [p.name for p in studies] + [PHYSICIAN, "CNRYSMITH", BAD_BIRTH_DATE]
    _rewrite(sorted(inbox.rglob("*.dcm")), ReferringPhysicianName=PHYSICIAN)
    odd_study = studies[0]
    _rewrite(sorted(odd_study.rglob("*.dcm")), PatientBirthDate=BAD_BIRTH_DATE)
    odd_study_uid = pydicom.dcmread(next(odd_study.rglob("*.dcm")), stop_before_pixels=True).StudyInstanceUID
    workdir, scoring, outbox = tmp_path / "w", tmp_path / "scoring_w", tmp_path / "outbox"
    shutil.copytree(champion_workdir, scoring)
    version = Registry(scoring).champion()

    runs = {
        "ingest": _cli("ingest", source.folder, "--workdir", workdir, "--labels", source.labels),
        "status": _cli("status", "--workdir", workdir),
        "score": _cli("score", inbox, "--workdir", scoring, "--out", outbox, "--device", "cpu"),
        "registry list": _cli("registry", "list", "--workdir", scoring),
        "status (scoring)": _cli("status", "--workdir", scoring),
    }
    for name, run in runs.items():
        assert run.returncode == 0, f"{name}: {run.stderr[-3000:]}"
        assert "Traceback" not in run.stderr, name
    for name in ("ingest", "score"):  # -v took effect: the searched text is real
        assert "DEBUG " in runs[name].stderr, f"{name}: no debug logging"
    outputs = {f"{name} {stream}": getattr(run, stream) for name, run in runs.items() for stream in ("stdout", "stderr")}
    assert _hits(outputs, canaries) == {}

    # the runs did their work
    assert "9 scans catalogued" in runs["ingest"].stdout and "unlabeled=3" in runs["ingest"].stdout
    assert "(9 scans)" in runs["status"].stdout
    assert "3 scans scored" in runs["score"].stdout and "6 DICOM objects written" in runs["score"].stdout
    assert f"{version}  champion" in runs["registry list"].stdout
    assert len(pd.read_parquet(scoring / "scoring" / "scores.parquet")) == 3
    # the highdicom warning was raised, and shown without its text
    assert re.search(r"^WARNING py\.warnings: UserWarning from highdicom \(text withheld", runs["score"].stderr, re.MULTILINE)
    # the scan with the impossible birth date has its SR and SC, the date emptied; the others keep theirs
    outputs_by_study: dict[str, list[tuple[str, pydicom.Dataset]]] = {}
    for path in sorted(outbox.iterdir()):
        ds = pydicom.dcmread(path)
        outputs_by_study.setdefault(ds.StudyInstanceUID, []).append((path.name[-6:], ds))
    assert len(outputs_by_study) == 3
    odd = outputs_by_study[odd_study_uid]
    assert sorted(kind for kind, _ in odd) == ["sc.dcm", "sr.dcm"]
    assert all("PatientBirthDate" in ds and ds.PatientBirthDate == "" for _, ds in odd)
    others = [ds for uid, items in outputs_by_study.items() if uid != odd_study_uid for _, ds in items]
    assert len(others) == 4 and all(re.fullmatch(r"\d{8}", ds.PatientBirthDate) for ds in others)


CANARIES = ['"CNRY4242^PN"', "1.2.826.0.1.3680043.10.54321.77", BAD_BIRTH_DATE, PHYSICIAN]
MESSAGE = f"The string {CANARIES[0]} of {CANARIES[1]} born {CANARIES[2]}, referred by {CANARIES[3]}"


class _Texts(logging.Handler):
    """Every record as a handler would write it (message, and traceback when there is one)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))


def test_library_warnings_and_records_reach_no_handler_with_their_text(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline import logsafety

    site = Path(sysconfig.get_paths()["purelib"])
    handler, root = _Texts(), logging.getLogger()
    factory, level = logging.getLogRecordFactory(), root.level
    monkeypatch.setattr(logsafety, "_installed", False)  # pytest's own warning capture replaced it: install afresh
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        with warnings.catch_warnings():  # restores warnings.showwarning afterwards
            warnings.simplefilter("always")
            logsafety.install()
            for library in ("highdicom", "pydicom", "nibabel", "monai"):
                warnings.warn_explicit(MESSAGE, UserWarning, str(site / library / "valuerep.py"), 42)
            logging.getLogger("highdicom.x").warning("%s", MESSAGE)
            logging.getLogger("pydicom.filereader").warning(MESSAGE)
            try:
                raise ValueError(MESSAGE)
            except ValueError:
                logging.getLogger("highdicom.sr").exception("could not encode %s", CANARIES[3])
            logging.getLogger("urllib3.connectionpool").warning(  # another library: quoted text, UIDs, dates redacted
                'The string "%s" of %s born %s', PHYSICIAN, CANARIES[1], BAD_BIRTH_DATE)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        logging.setLogRecordFactory(factory)
    text = "\n".join(handler.texts)
    assert [c for c in CANARIES if c.strip('"') in text] == [], text
    for library in ("highdicom", "pydicom", "nibabel", "monai"):  # each warning arrived, as one withheld line
        assert f"WARNING py.warnings: UserWarning from {library} (text withheld" in text, text
    assert "WARNING highdicom.x: WARNING from highdicom (text withheld" in text
    # pydicom's records are withheld, or dropped altogether once pipeline.io.dicom has silenced its logger
    assert all("text withheld" in t for t in handler.texts if "pydicom.filereader" in t)
    assert "ERROR highdicom.sr: ERROR from highdicom (text withheld" in text and "Traceback" not in text
    assert 'urllib3.connectionpool: WARNING from urllib3: The string "<redacted>" of <uid> born <number>' in text

