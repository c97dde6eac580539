"""DICOM network addresses, and what the listener accepts (SOP classes and transfer syntaxes).

An application entity is written ``AET@HOST:PORT`` (``SCANLENS@10.0.0.5:11112``); AE titles are 1-16
characters of the default character repertoire without backslash or control characters (PS3.5 6.2).

>>> DicomNode.parse("ORTHANC@127.0.0.1:4242")
DicomNode(ae_title='ORTHANC', host='127.0.0.1', port=4242)
>>> str(DicomNode.parse("PACS@[::1]:104"))
'PACS@[::1]:104'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydicom import uid
from pynetdicom import sop_class

from pipeline.errors import UserInputError

_ADDRESS = re.compile(r"^(?P<aet>[^@]{1,16})@(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>\d{1,5})$")
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # printable ASCII without backslash


def check_ae_title(title: str, what: str = "AE title") -> str:
    """``title`` stripped of padding, or a :class:`UserInputError` when it is not a legal AE title."""
    stripped = title.strip()
    if not _AE_TITLE.match(stripped):
        raise UserInputError(f"{what} must be 1 to 16 printable ASCII characters without backslash: {title!r}")
    return stripped


@dataclass(frozen=True)
class DicomNode:
    """A peer application entity: its AE title, host name or address, and TCP port."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> DicomNode:
        """``AET@HOST:PORT`` (an IPv6 host in brackets), or a one-line :class:`UserInputError`."""
        match = _ADDRESS.match(text.strip())
        if match is None:
            raise UserInputError(f"expected AET@HOST:PORT (e.g. PACS@10.0.0.5:104), not {text!r}")
        port = int(match["port"])
        if not 1 <= port <= 65535:
            raise UserInputError(f"port must be 1-65535, not {port} in {text!r}")
        return cls(check_ae_title(match["aet"]), match["host"].strip("[]"), port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.ae_title}@{host}:{self.port}"


#: Transfer syntaxes ingest decodes (pydicom with pylibjpeg's libjpeg, openjpeg and RLE plug-ins).
TRANSFER_SYNTAXES: tuple[str, ...] = (
    uid.ExplicitVRLittleEndian,
    uid.ImplicitVRLittleEndian,
    uid.DeflatedExplicitVRLittleEndian,
    uid.ExplicitVRBigEndian,
    uid.JPEGBaseline8Bit,
    uid.JPEGExtended12Bit,
    uid.JPEGLossless,
    uid.JPEGLosslessSV1,
    uid.JPEGLSLossless,
    uid.JPEGLSNearLossless,
    uid.JPEG2000Lossless,
    uid.JPEG2000,
    uid.RLELossless,
)

#: Image storage SOP classes the listener accepts: CT, MR, PET, CR, DX, MG, US, Secondary Capture,
#: and their enhanced and multi-frame forms (what ingest reads as 2D images or 3D volumes).
IMAGE_STORAGE_CLASSES: tuple[str, ...] = tuple(
    str(getattr(sop_class, name))
    for name in (
        "CTImageStorage",
        "EnhancedCTImageStorage",
        "LegacyConvertedEnhancedCTImageStorage",
        "MRImageStorage",
        "EnhancedMRImageStorage",
        "EnhancedMRColorImageStorage",
        "LegacyConvertedEnhancedMRImageStorage",
        "PositronEmissionTomographyImageStorage",
        "EnhancedPETImageStorage",
        "LegacyConvertedEnhancedPETImageStorage",
        "ComputedRadiographyImageStorage",
        "DigitalXRayImageStorageForPresentation",
        "DigitalXRayImageStorageForProcessing",
        "DigitalMammographyXRayImageStorageForPresentation",
        "DigitalMammographyXRayImageStorageForProcessing",
        "UltrasoundImageStorage",
        "UltrasoundMultiFrameImageStorage",
        "SecondaryCaptureImageStorage",
        "MultiFrameGrayscaleByteSecondaryCaptureImageStorage",
        "MultiFrameGrayscaleWordSecondaryCaptureImageStorage",
        "MultiFrameSingleBitSecondaryCaptureImageStorage",
        "MultiFrameTrueColorSecondaryCaptureImageStorage",
    )
)
