"""No identifier reaches a log: third-party warnings and log records are captured and redacted.

Libraries that read headers quote them in their messages (highdicom warns ``The string "DOE^JOHN"
is unlikely to represent the intended person name``; pydicom warns about invalid dates with the
date in the text). ScanLens's own loggers (``pipeline``, ``assets``) never log header values, and
Dagster's carry ScanLens's own metadata. Everything else is rewritten as the record is created:

* warnings (``warnings.warn`` from any library) go to the logger ``py.warnings`` instead of
  straight to stderr, like :func:`logging.captureWarnings`, as one line naming the category and
  the library that raised it;
* messages from the libraries that read DICOM or NIfTI headers (:data:`WITHHELD`) are withheld
  entirely: only the library, the level or category, and that a message was withheld, remain;
* messages from any other library are kept with quoted text, UIDs and long digit runs redacted
  (:func:`redact`).

:func:`install` is idempotent; the command line, the Dagster definitions and the isolated ingest
workers call it.

>>> redact('value "DOE^JOHN" of 1.2.840.10008.5.1 on 19420231')
'value "<redacted>" of <uid> on <number>'
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Callable
from pathlib import PurePath
from typing import Any, TextIO

#: Libraries that see header values: their messages are never shown, whatever they say.
WITHHELD = frozenset(
    {
        "pydicom",
        "highdicom",
        "nibabel",
        "monai",
        "pylibjpeg",
        "openjpeg",
        "libjpeg",
        "rle",
        "jpeg_ls",
        "pyjpegls",
        "pynetdicom",
        "dicomweb_client",
        "dicomanonymizer",
    }
)
#: Loggers whose records are left alone: ScanLens's own (which never log header values) and Dagster's.
OURS = ("pipeline", "assets", "scanlens", "dagster", "py.warnings")
WARNINGS_LOGGER = "py.warnings"

_QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'")
_UID = re.compile(r"\b\d+(?:\.\d+){3,}\b")
_DIGITS = re.compile(r"\d{6,}")
_installed = False


def redact(text: str) -> str:
    """Replace quoted text, UIDs and runs of six or more digits (dates, record numbers) by placeholders."""
    text = _QUOTED.sub(lambda m: f"{m.group(0)[0]}<redacted>{m.group(0)[0]}", text)
    text = _UID.sub("<uid>", text)
    return _DIGITS.sub("<number>", text)


def library_of(filename: str) -> str:
    """The top-level package a source file belongs to (the folder after site-packages), else its stem."""
    parts = PurePath(filename).parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts and parts.index(marker) + 1 < len(parts):
            return PurePath(parts[parts.index(marker) + 1]).stem
    if "pipeline" in parts or "assets" in parts:
        return "pipeline"
    return PurePath(filename).stem


def _library_of_logger(name: str) -> str:
    return name.split(".", 1)[0]


def safe_text(library: str, text: str, what: str) -> str:
    """What may be shown of ``text`` from ``library``: withheld for header readers, redacted otherwise."""
    if library in WITHHELD:
        return f"{what} from {library} (text withheld: it may quote a header value)"
    return f"{what} from {library}: {redact(text)}"


def _showwarning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    library = library_of(filename)
    if library == "pipeline":
        text = f"{category.__name__}: {message}"
    else:
        text = safe_text(library, str(message), category.__name__)
    logging.getLogger(WARNINGS_LOGGER).warning("%s", text)


class _RedactingFactory:
    """A log-record factory wrapping ``base`` that redacts third-party records as they are created.

    The class attribute ``scanlens_redacting`` marks an installed factory, so :func:`install` wraps once.
    """

    scanlens_redacting = True

    def __init__(self, base: Callable[..., logging.LogRecord]) -> None:
        self.base = base

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.base(*args, **kwargs)
        if not isinstance(record.name, str) or record.name.startswith(OURS):  # makeLogRecord({}) has no name
            return record
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 (a library's malformed format string)
            text = str(record.msg)
        record.msg = safe_text(_library_of_logger(record.name), text, record.levelname)
        record.args = ()
        if _library_of_logger(record.name) in WITHHELD:
            record.exc_info, record.exc_text, record.stack_info = None, None, None
        return record


def install() -> None:
    """Route warnings into logging and redact third-party records.

    Idempotent: the record factory is wrapped once per process, however often this is called;
    ``warnings.showwarning`` is set again each time (a test runner's warning capture replaces it).
    """
    global _installed
    warnings.showwarning = _showwarning
    if not getattr(logging.getLogRecordFactory(), "scanlens_redacting", False):
        logging.setLogRecordFactory(_RedactingFactory(logging.getLogRecordFactory()))
    _installed = True
