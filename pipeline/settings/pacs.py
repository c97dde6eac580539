"""The ``pacs`` settings groups: where scoring sends its DICOM outputs, and how it authenticates.

Credentials are never settings: they are read from environment variables when a connection is made
(:mod:`pipeline.pacs.auth` names them), so neither a command line nor the Dagster launchpad shows them.
"""

from __future__ import annotations

from typing import Literal

from pydantic.dataclasses import dataclass

from pipeline.errors import UserInputError
from pipeline.settings.fields import SETTINGS, setting


@dataclass(frozen=True, config=SETTINGS)
class PacsAuthSettings:
    """How a DICOMweb connection authenticates and checks the server's certificate."""

    auth: Literal["none", "basic", "bearer"] = setting(
        "none",
        "DICOMweb authentication: none, basic ($SCANLENS_PACS_USER, $SCANLENS_PACS_PASSWORD) or bearer "
        "($SCANLENS_PACS_TOKEN); read from the environment when a connection is made",
        flag="--pacs-auth",
    )
    tls_verify: bool = setting(
        True, "verify the DICOMweb server's TLS certificate (https URLs)", flag="--pacs-tls-verify"
    )
    ca_bundle: str = setting(
        "", "CA bundle file that signs the DICOMweb server's certificate; empty: the system's", flag="--pacs-ca-bundle"
    )


@dataclass(frozen=True, config=SETTINGS)
class PacsSendSettings:
    """Where each scored scan's SR and Secondary Capture go, and how hard a failed send is retried.

    A send is tried ``send_attempts`` times, waiting ``send_backoff_s``, then twice that, and so on
    (seconds); an object still unsent stays in ``OUTBOX/failed/`` with its reason and is re-sent by the
    next run.
    """

    send_to: str = setting(
        "",
        "send the SR and Secondary Capture into the source study with C-STORE to AET@HOST:PORT; empty: do not send",
        metavar="AET@HOST:PORT",
    )
    stow_url: str = setting(
        "", "send them with DICOMweb STOW-RS to this base URL (e.g. http://pacs/dicom-web); empty: do not send"
    )
    calling_ae: str = setting("SCANLENS", "our AE title when sending with C-STORE", metavar="AET")
    send_attempts: int = setting(3, "tries per object before it is left in OUTBOX/failed/")
    send_backoff_s: float = setting(2.0, "seconds before the first retry; doubled before each further one")

    def __post_init__(self) -> None:
        if self.send_attempts < 1:
            raise UserInputError(f"send_attempts must be at least 1, not {self.send_attempts}")
        if self.send_backoff_s < 0:
            raise UserInputError(f"send_backoff_s must not be negative, not {self.send_backoff_s}")
        if not 1 <= len(self.calling_ae.strip()) <= 16:
            raise UserInputError(f"calling_ae must have 1 to 16 characters, not {self.calling_ae!r}")

    @property
    def sends(self) -> bool:
        return bool(self.send_to or self.stow_url)
