"""PHI canaries: distinct strings planted in every PS3.15 Annex E attribute, in private tags and in
nested sequences of a small series, and a search for them in every file of a work folder."""

from __future__ import annotations

import datetime as dt
import gzip
from pathlib import Path

import pyarrow.parquet as pq
import pydicom
import pydicom.config
from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector
from pydicom.datadict import DicomDictionary, dictionary_VR
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from tests.dicom_factory import write_series, z_positions

#: Attributes ScanLens needs to assemble the series; none of them may be an Annex E attribute.
GEOMETRY_TAGS = {0x00200032, 0x00200037, 0x00280030, 0x00280010, 0x00280011, 0x7FE00010, 0x00080016}
PER_INSTANCE = {0x00080018}  # SOPInstanceUID differs per slice


def annex_e_tags() -> list[int]:
    """Every single-tag attribute of the Basic Profile table known to pydicom's dictionary."""
    table = dicom_anonymization_database_selector("dicomfields_2026c")["ALL_TAGS"]
    tags = sorted({(t[0] << 16) | t[1] for t in table if len(t) == 2})
    return [t for t in tags if t in DicomDictionary]


def _value(vr: str, n: int) -> object:
    if vr == "DA":
        return (dt.date(1901, 1, 1) + dt.timedelta(days=n)).strftime("%Y%m%d")
    if vr == "TM":
        return f"123456.{n:06d}"
    if vr == "DT":
        return f"19020101123456.{n:06d}"
    if vr == "UI":
        return f"1.2.826.0.1.3680043.10.54321.{n}"
    if vr == "DS":
        return f"7{n:05d}.13579"
    if vr == "IS":
        return f"7{n:06d}3"
    if vr == "AS":
        return "097Y"
    if vr == "PN":
        return f"CNRY{n:04d}^PN"
    if vr == "UR":
        return f"http://cnry{n:04d}.invalid/"
    if vr in ("OB", "UN"):
        return f"CNRY{n:04d}".encode()
    return f"CNRY{n:04d}"


def plant_canaries(folder: Path, n_slices: int = 3) -> list[str]:
    """Write a CT series whose headers carry canaries; returns every canary string to search for."""
    canaries: list[str] = []
    # Group 0000 (command set) cannot be stored in a file; group 0002 is the file meta, set below.
    tags = [t for t in annex_e_tags() if t not in GEOMETRY_TAGS and t >> 16 not in (0x0000, 0x0002)]
    numbered = {tag: i + 1 for i, tag in enumerate(tags)}

    def nested_item(n: int) -> Dataset:
        item = Dataset()
        item.PatientName = f"CNRY{n:04d}^NESTED"
        inner = Dataset()
        inner.InstitutionName = f"CNRY{n + 1:04d}"
        item.ReferencedPatientSequence = Sequence([inner])
        return item

    def mutate(ds: Dataset, k: int) -> None:
        for tag in tags:
            vr = dictionary_VR(tag)
            n = numbered[tag] + (5000 * k if tag in PER_INSTANCE else 0)
            if vr in ("US", "SS", "UL", "SL", "FL", "FD", "AT", "OW", "OF", "OD", "OL", "OV", "SV", "UV"):
                continue  # binary numbers cannot carry a searchable string
            if vr == "SQ":
                ds.add_new(tag, "SQ", Sequence([nested_item(7000 + numbered[tag])]))
                continue
            ds.add_new(tag, vr, _value(vr, n))
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        block = ds.private_block(0x0011, "CNRY PRIVATE CREATOR", create=True)
        block.add_new(0x01, "LO", "CNRY9001")
        block.add_new(0x02, "SQ", Sequence([nested_item(9002)]))

    previous = pydicom.config.settings.writing_validation_mode
    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
    try:
        write_series(folder, z_positions(n_slices), mutate=mutate)
    finally:
        pydicom.config.settings.writing_validation_mode = previous
    for tag in tags:
        vr = dictionary_VR(tag)
        if vr in ("US", "SS", "UL", "SL", "FL", "FD", "AT", "OW", "OF", "OD", "OL", "OV", "SV", "UV"):
            continue
        if vr == "SQ":
            canaries += [f"CNRY{7000 + numbered[tag]:04d}", f"CNRY{7001 + numbered[tag]:04d}"]
        elif tag in PER_INSTANCE:
            canaries += [str(_value(vr, numbered[tag] + 5000 * k)) for k in range(n_slices)]
        else:
            value = _value(vr, numbered[tag])
            canaries.append(value.decode() if isinstance(value, bytes) else str(value))
    canaries += ["CNRY9001", "CNRY9002", "CNRY9003", "CNRY PRIVATE CREATOR"]
    return sorted(set(canaries))


def texts_of(path: Path) -> list[str]:
    """What a person or a program could read out of a file: raw bytes, gunzipped bytes, Parquet cells."""
    raw = path.read_bytes()
    texts = [raw.decode("latin-1")]
    if path.name.endswith(".gz"):
        texts.append(gzip.decompress(raw).decode("latin-1"))
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        texts.append(repr(table.to_pylist()))
        texts.append(repr(table.schema.metadata))
    return texts


#: Files that hold only numbers by construction (torch state dicts and checkpoints, NumPy arrays):
#: searching hundreds of MB of weights for hundreds of strings costs minutes and cannot find a name.
NUMERIC_SUFFIXES = (".pt", ".npy")


def find_canaries(root: Path, canaries: list[str], extra_texts: dict[str, str] | None = None,
                  skip: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Map each place (file under root, or a named extra text) to the canaries found in it. Files
    with :data:`NUMERIC_SUFFIXES` and the relative paths in ``skip`` are not searched."""
    hits: dict[str, list[str]] = {}
    places = {str(p.relative_to(root)): texts_of(p) for p in sorted(root.rglob("*"))
              if p.is_file() and p.suffix not in NUMERIC_SUFFIXES and str(p.relative_to(root)) not in skip}
    places.update({name: [text] for name, text in (extra_texts or {}).items()})
    for place, texts in places.items():
        found = [c for c in canaries if any(c in text for text in texts)]
        if found:
            hits[place] = found
    return hits


#: Attributes that group files into patients, studies and series: kept (their original values become canaries).
STRUCTURAL = {0x00100020, 0x0020000D, 0x0020000E, 0x00080018, 0x00200052}


def plant_into_existing(folder: Path) -> list[str]:
    """Add canaries to every DICOM file under ``folder`` in place (same canary per attribute in every
    file), keeping the grouping attributes; returns the canaries plus every original identifying value
    (patient IDs and names, UIDs, dates) so that a search also catches the source's own identifiers."""
    tags = [t for t in annex_e_tags() if t not in GEOMETRY_TAGS | STRUCTURAL and t >> 16 not in (0x0000, 0x0002)]
    binary = ("US", "SS", "UL", "SL", "FL", "FD", "AT", "OW", "OF", "OD", "OL", "OV", "SV", "UV", "SQ")
    planted = {t: _value(dictionary_VR(t), i + 1) for i, t in enumerate(tags) if dictionary_VR(t) not in binary}
    originals: set[str] = set()
    previous = pydicom.config.settings.writing_validation_mode
    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
    try:
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".csv")):
            try:
                ds = pydicom.dcmread(path)
            except Exception:  # noqa: BLE001 (not DICOM: leave it)
                continue
            for keyword in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
                value = str(ds.get(keyword, "") or "")
                if len(value) >= 6:
                    originals.add(value)
            for tag, value in planted.items():
                ds.add_new(tag, dictionary_VR(tag), value)
            ds.save_as(path)
    finally:
        pydicom.config.settings.writing_validation_mode = previous
    texts = {v.decode() if isinstance(v, bytes) else str(v) for v in planted.values()}
    return sorted(texts | originals)
