"""What identifies a scan: the one definition of which source files form one scan.

A scan's ``scan_id`` is the keyed pseudonym (:meth:`pipeline.deid.Pseudonymizer.scan`) of the
string :func:`scan_identity` returns. Ingest computes it once per file, when the file is probed;
grouping, incremental rebuilds and the NIfTI study/series pseudonyms all use that value.
"""

from __future__ import annotations

from pipeline.deid import DicomInstance
from pipeline.ingest.series import DEFAULT_ORIENTATION
from pipeline.io.dicom import PROJECTION_MODALITIES


def scan_identity(relpath: str, instance: DicomInstance | None) -> str:
    """The identity of the scan the file at ``relpath`` (relative to SRC) belongs to.

    A NIfTI file (``instance`` is None) is a scan of its own. A DICOM instance belongs to a scan
    within its (pseudonymous) series: a series mixing orientations, matrix sizes or pixel spacings
    splits into one scan per geometry, and position-less single images of projection modalities
    (CR, DX, US, SC, ...) are scans of their own.
    """
    if instance is None:
        return f"nifti|{relpath}"
    image = instance.image
    first = image.frames[0]
    orientation = first.orientation or DEFAULT_ORIENTATION
    spacing = first.pixel_spacing or (0.0, 0.0)
    key = (
        f"{instance.series_id}|iop={','.join(f'{v:.4f}' for v in orientation)}"
        f"|size={image.rows}x{image.cols}x{image.samples_per_pixel}"
        f"|px={spacing[0]:.4f},{spacing[1]:.4f}"
    )
    if image.n_frames == 1 and first.position is None and instance.modality in PROJECTION_MODALITIES:
        key += f"|file={instance.relpath}"
    return key
