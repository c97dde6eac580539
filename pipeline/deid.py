"""De-identification at ingest (DICOM PS3.15 Annex E, Basic Application Level Confidentiality Profile).

ScanLens does not edit DICOM files; it decides what leaves ingest, here and nowhere else:
:func:`deidentify` turns a parsed header (:class:`pipeline.io.dicom.DicomHeader`) into a
:class:`DicomInstance`, and :func:`nifti_pseudonyms` names a NIfTI scan's study and series.
Nothing leaves except

* keyed pseudonyms: ``HMAC-SHA256(secret, kind + ":" + value)`` of PatientID, Study/Series
  Instance UIDs, truncated to 16 hex digits and prefixed (``pat_``, ``stu_``, ``ser_``, ``scan_``);
* the explicit allow-list :data:`ALLOWED_ATTRIBUTES` of non-identifying attributes;
* PatientSex and PatientAge, only when ``keep_demographics`` is configured.

Dates and times are dropped entirely, not shifted: no downstream step needs them.
Pseudonyms are stable for a given secret, so a re-ingest links the same patient.

>>> p = Pseudonymizer(b"k")
>>> p.patient("12345") == p.patient("12345") and p.patient("12345").startswith("pat_")
True
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset

if TYPE_CHECKING:
    from pipeline.io.dicom import DicomHeader, DicomImage

log = logging.getLogger(__name__)

SECRET_ENV = "SCANLENS_SECRET"

#: Attributes copied to the catalogue. None of them is listed in PS3.15 Annex E (a test checks this).
ALLOWED_ATTRIBUTES: tuple[str, ...] = (
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "BodyPartExamined",
    "KVP",
    "MagneticFieldStrength",
    "PhotometricInterpretation",
    "BitsStored",
)

#: Annex E attributes kept only when ``keep_demographics`` is set.
DEMOGRAPHIC_ATTRIBUTES: tuple[str, ...] = ("PatientSex", "PatientAge")


class Pseudonymizer:
    """Keyed pseudonyms for identifiers (HMAC-SHA256 with the project secret)."""

    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise ValueError("the pseudonymisation secret must not be empty")
        self._secret = secret

    def _digest(self, kind: str, value: str) -> str:
        return hmac.new(self._secret, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()[:16]

    def patient(self, patient_id: str) -> str:
        return "pat_" + self._digest("patient", patient_id)

    def study(self, study_uid: str) -> str:
        return "stu_" + self._digest("study", study_uid)

    def series(self, series_uid: str) -> str:
        return "ser_" + self._digest("series", series_uid)

    def scan(self, identity: str) -> str:
        return "scan_" + self._digest("scan", identity)

    def instance(self, sop_instance_uid: str) -> str:
        """Name of a received or retrieved instance's file (``ins_<16 hex>``; the UID itself never is)."""
        return "ins_" + self._digest("instance", sop_instance_uid)

    def inbox(self, folder_name: str) -> str:
        """Key of an inbox study folder (folder names often hold a name or an accession number)."""
        return "inbox_" + self._digest("inbox", folder_name)

    def fingerprint(self) -> str:
        """A value that changes when the secret changes, without revealing it."""
        return self._digest("fingerprint", "scanlens")


def project_pseudonymizer(explicit: str | None, workdir: Path) -> tuple[bytes, Pseudonymizer]:
    """The key of the project whose work folder is ``workdir`` (see :func:`load_secret`) and its
    :class:`Pseudonymizer`: the one way a command or an asset gets both."""
    from pipeline.layout import Workdir

    key = load_secret(explicit, Workdir(workdir).secret_file)
    return key, Pseudonymizer(key)


def load_secret(explicit: str | None, secret_file: Path) -> bytes:
    """Return the pseudonymisation key: explicit config, then ``$SCANLENS_SECRET``, then a key file.

    The key file (``W/.scanlens/secret.key``, mode 0600) is created with 32 random bytes on first
    use so that a demo runs out of the box; production deployments should set the secret explicitly
    and keep it outside the work folder.
    """
    if explicit:
        return explicit.encode()
    env = os.environ.get(SECRET_ENV)
    if env:
        return env.encode()
    if secret_file.exists():
        return secret_file.read_bytes().strip()
    log.warning(
        "no pseudonymisation secret configured (config or $%s); created a random key in the work folder",
        SECRET_ENV,
    )
    secret_file.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32).encode()
    fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key


_NUMERIC_ATTRIBUTES = frozenset({"KVP", "MagneticFieldStrength", "BitsStored"})


def allowed_metadata(ds: Dataset, keep_demographics: bool = False) -> dict[str, str | float | None]:
    """Copy the allow-listed attributes (and, if configured, sex and age) out of a data set.

    Numeric attributes come back as floats, the rest as stripped strings; absent or empty ones as None.
    """
    names = ALLOWED_ATTRIBUTES + (DEMOGRAPHIC_ATTRIBUTES if keep_demographics else ())
    out: dict[str, str | float | None] = {}
    for name in names:
        value: Any = ds.get(name)
        if value is None or str(value).strip() == "":
            out[name] = None
        elif name in _NUMERIC_ATTRIBUTES:
            try:
                out[name] = float(value)
            except (TypeError, ValueError):
                out[name] = None
        else:
            out[name] = str(value).strip()
    return out


@dataclass
class DicomInstance:
    """One DICOM file as it leaves de-identification: keyed pseudonyms, allow-listed attributes, image facts.

    This is all series assembly and the catalogue get from a file: no PHI in here.
    """

    relpath: str
    instance_key: str  # keyed hash of SOPInstanceUID: copies of one instance share it
    patient_id: str | None
    study_id: str
    series_id: str
    image: DicomImage
    metadata: dict[str, str | float | None] = field(default_factory=dict)

    @property
    def modality(self) -> str:
        return str(self.metadata.get("Modality") or "OT")


def deidentify(
    header: DicomHeader, relpath: str, pseudonymizer: Pseudonymizer, keep_demographics: bool
) -> DicomInstance:
    """Pseudonymise a parsed header's identifiers and keep only its allow-listed attributes.

    A file without StudyInstanceUID, SeriesInstanceUID or SOPInstanceUID is keyed on its path
    (relative to SRC) instead: it is its own study, series and instance.
    """
    ids = header.identifiers
    return DicomInstance(
        relpath=relpath,
        instance_key=pseudonymizer.scan(f"instance|{ids.sop_instance_uid or relpath}"),
        patient_id=pseudonymizer.patient(ids.patient_id) if ids.patient_id else None,
        study_id=pseudonymizer.study(ids.study_uid or f"no-study:{relpath}"),
        series_id=pseudonymizer.series(ids.series_uid or f"no-series:{relpath}"),
        image=header.image,
        metadata=allowed_metadata(header.dataset, keep_demographics),
    )


def nifti_pseudonyms(identity: str, pseudonymizer: Pseudonymizer) -> dict[str, str]:
    """``study_id`` and ``series_id`` of a NIfTI scan: it has no UIDs, so both are keyed on its scan identity."""
    return {"study_id": pseudonymizer.study(identity), "series_id": pseudonymizer.series(identity)}
