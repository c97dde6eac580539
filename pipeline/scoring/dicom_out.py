"""DICOM objects a PACS can file: a Comprehensive SR with the score, a Secondary Capture of the overlay.

Both are made with highdicom from the source instances' headers, read only here and only in memory:
they copy the Patient and Study modules of the source study (so the PACS files them into it) and
the SR lists every source instance as evidence. This is the one place where original identifiers
leave ScanLens, on purpose; the file names in the outbox are pseudonymous
(``<scan_id>_<model version>_sr.dcm`` and ``..._sc.dcm``).

UIDs of the outputs are derived from the pseudonymisation secret, the scan and the model version,
so re-making an output after a crash yields the same SOP Instance UID (a PACS keeps one copy).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from pipeline.layout import Outbox
from pipeline.storage import atomic_write

log = logging.getLogger(__name__)
# highdicom logs the source StudyInstanceUID at INFO while it copies the study module: keep that
# identifier out of every log (the DICOM outputs are the one place it may appear).
logging.getLogger("highdicom").setLevel(logging.WARNING)

MANUFACTURER = "ScanLens"
#: Local coding scheme for concepts no standard terminology names (PS3.16 allows "99" prefixes).
SCHEME = "99SCANLENS"
DISCLAIMER = "Research use only. Not for diagnostic use. Output of an automated classifier; a clinician decides."
#: How the SR describes the probability's calibration, by method (``metrics.json["recalibration"]``).
CALIBRATION_TEXT = {
    "temperature": "temperature scaling fitted on pooled out-of-fold predictions",
    "platt": "Platt scaling fitted on pooled out-of-fold predictions",
    "none": "uncalibrated",
}


@dataclass(frozen=True)
class ScoreOutputs:
    """What one scored scan puts into the outbox."""

    sr: Path
    sc: Path | None


@dataclass(frozen=True)
class ScoredScan:
    """The figures an SR carries (no identifiers: those come from the source headers).

    ``probability`` is the calibrated ensemble probability of ``positive_class`` (``calibration``
    names the method), ``uncertainty`` the std of the fold models' calibrated probabilities,
    ``decision`` positive, negative or refer, ``refer_reason`` why (empty unless referred), and
    ``ood_score`` the out-of-distribution score (NaN: not checked)."""

    scan_id: str
    model_version: str
    probability: float
    threshold: float
    decision: str
    positive_class: str
    uncertainty: float = float("nan")
    refer_reason: str = ""
    calibration: str = "none"
    ood_score: float = float("nan")


def _uid(seed: bytes, *parts: str) -> str:
    return generate_uid(entropy_srcs=[seed.hex(), *parts])


#: What the outputs take from a source instance: the Patient and General Study modules (so that a
#: PACS files them into the study) and the instance's own identity (for the SR's evidence).
REFERENCE_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "Modality",
)
_TIME = re.compile(r"^([01]\d|2[0-3])([0-5]\d([0-5]\d(\.\d{1,6})?)?)?$")


def valid_date(value: str) -> bool:
    """A DICOM DA value (YYYYMMDD) that is a real calendar date: ``19420231`` is not.

    >>> valid_date("19420228"), valid_date("19420231"), valid_date("1942-02-28")
    (True, False, False)
    """
    if len(value) != 8 or not value.isdigit():
        return False
    try:
        dt.datetime.strptime(value, "%Y%m%d")
    except ValueError:
        return False
    return True


def valid_time(value: str) -> bool:
    """A DICOM TM value (HH[MM[SS[.FFFFFF]]]) within the clock: ``246000`` is not.

    >>> valid_time("123456.5"), valid_time("246000")
    (True, False)
    """
    return bool(_TIME.match(value))


_VALID = {
    "PatientSex": lambda v: v in ("M", "F", "O"),
    "PatientBirthDate": valid_date,
    "StudyDate": valid_date,
    "StudyTime": valid_time,
}


#: Type 2 attributes of the Patient and General Study modules: present, empty when unknown.
_TYPE_2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def reference_dataset(source: Dataset) -> Dataset:
    """The source instance reduced to :data:`REFERENCE_KEYWORDS`. Values the standard does not allow
    there (a PatientSex of "unknown", a malformed date), which highdicom would reject, become empty,
    as does a missing Type 2 attribute."""
    ref = Dataset()
    for keyword in REFERENCE_KEYWORDS:
        value = source.get(keyword)
        check = _VALID.get(keyword)
        if value is not None and value != "" and (check is None or check(str(value))):
            setattr(ref, keyword, value)
        elif keyword in _TYPE_2:
            setattr(ref, keyword, None)
    return ref


def read_source_headers(paths: list[Path]) -> list[Dataset]:
    """Reference datasets (:func:`reference_dataset`) of the source instances of one scan, in a stable order."""
    return [reference_dataset(pydicom.dcmread(p, stop_before_pixels=True)) for p in sorted(paths)]


def _concept(value: str, meaning: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value=value, scheme_designator=SCHEME, meaning=meaning)


def _content(scored: ScoredScan) -> hd.sr.ContainerContentItem:
    root = hd.sr.ContainerContentItem(
        name=_concept("classification-result", "ScanLens classification result"), template_id=None
    )
    contains = hd.sr.RelationshipTypeValues.CONTAINS
    unitless = hd.sr.CodedConcept(value="1", scheme_designator="UCUM", meaning="no units")
    root.ContentSequence = hd.sr.ContentSequence(
        [
            hd.sr.TextContentItem(
                name=codes.DCM.AlgorithmName, value="ScanLens ResNet-50 ensemble", relationship_type=contains
            ),
            hd.sr.TextContentItem(
                name=codes.DCM.AlgorithmVersion, value=scored.model_version, relationship_type=contains
            ),
            hd.sr.NumContentItem(
                name=_concept("probability", f"Probability of class {scored.positive_class}"),
                value=round(scored.probability, 6),
                unit=unitless,
                relationship_type=contains,
            ),
            hd.sr.NumContentItem(
                name=_concept("threshold", "Operating-point threshold"),
                value=round(scored.threshold, 6),
                unit=unitless,
                relationship_type=contains,
            ),
            *_optional_numbers(scored, unitless),
            hd.sr.TextContentItem(
                name=_concept("calibration", "Probability calibration"),
                value=CALIBRATION_TEXT.get(scored.calibration, scored.calibration),
                relationship_type=contains,
            ),
            hd.sr.TextContentItem(
                name=_concept("decision", "Decision at the operating point"),
                value=scored.decision,
                relationship_type=contains,
            ),
            *(
                [
                    hd.sr.TextContentItem(
                        name=_concept("refer-reason", "Reason for referral"),
                        value=scored.refer_reason,
                        relationship_type=contains,
                    )
                ]
                if scored.refer_reason
                else []
            ),
            hd.sr.TextContentItem(
                name=_concept("disclaimer", "Intended use"), value=DISCLAIMER, relationship_type=contains
            ),
        ]
    )
    return root


def _optional_numbers(scored: ScoredScan, unit: hd.sr.CodedConcept) -> list[hd.sr.NumContentItem]:
    """The uncertainty and the out-of-distribution score, where they are known (finite)."""
    items = []
    for value, code, meaning in (
        (scored.uncertainty, "uncertainty", "Ensemble uncertainty (std of the fold models' probabilities)"),
        (scored.ood_score, "ood-score", "Out-of-distribution score (above 1: outside the training data)"),
    ):
        if np.isfinite(value):
            items.append(
                hd.sr.NumContentItem(
                    name=_concept(code, meaning),
                    value=round(float(value), 6),
                    unit=unit,
                    relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
                )
            )
    return items


def make_score_sr(sources: list[Dataset], scored: ScoredScan, seed: bytes) -> Dataset:
    """A Comprehensive SR in the source study, referencing every source instance as evidence."""
    return hd.sr.ComprehensiveSR(
        evidence=sources,
        content=_content(scored),
        series_instance_uid=_uid(seed, scored.scan_id, scored.model_version, "sr-series"),
        series_number=9001,
        sop_instance_uid=_uid(seed, scored.scan_id, scored.model_version, "sr"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description="ScanLens score",
    )


def make_overlay_sc(source: Dataset, rgb: np.ndarray, scored: ScoredScan, seed: bytes) -> Dataset:
    """A Secondary Capture (RGB, 8 bit) of the overlay figure in the source study."""
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=np.ascontiguousarray(rgb[..., :3], dtype=np.uint8),
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=_uid(seed, scored.scan_id, scored.model_version, "sc-series"),
        series_number=9002,
        sop_instance_uid=_uid(seed, scored.scan_id, scored.model_version, "sc"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        patient_orientation=("L", "P"),
    )
    sc.SeriesDescription = "ScanLens GradCAM overlay"
    sc.ImageComments = (
        f"{DISCLAIMER} Model {scored.model_version}; p={scored.probability:.3f}, decision {scored.decision}."
    )
    sc.BurnedInAnnotation = "NO"
    return sc


def write_score_outputs(
    outbox: Path, sources: list[Dataset], scored: ScoredScan, overlay_rgb: np.ndarray | None, seed: bytes
) -> ScoreOutputs:
    """Write the SR (and, given an overlay, the Secondary Capture) atomically into ``outbox``."""
    files = Outbox(outbox)
    sr_path = files.sr(scored.scan_id, scored.model_version)
    sr = make_score_sr(sources, scored, seed)
    atomic_write(sr_path, lambda tmp: sr.save_as(tmp, enforce_file_format=True))
    sc_path = None
    if overlay_rgb is not None:
        sc = make_overlay_sc(sources[0], overlay_rgb, scored, seed)
        sc_path = files.sc(scored.scan_id, scored.model_version)
        atomic_write(sc_path, lambda tmp: sc.save_as(tmp, enforce_file_format=True))
    log.info("wrote DICOM outputs for %s (%s)", scored.scan_id, "SR + SC" if sc_path else "SR")
    return ScoreOutputs(sr_path, sc_path)
