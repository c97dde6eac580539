"""The hospital PACS as a Dagster resource: where results are sent, and which archive is read.

``PacsConnection`` holds the settings of :mod:`pipeline.settings.pacs` (the same declarations as
``scanlens score --send-to/--stow-url`` and the ``--pacs-*`` flags) and what ``pacs_sensor`` searches.
Credentials are read from environment variables when a connection is made (see :mod:`pipeline.pacs.auth`).
"""

# No `from __future__ import annotations` here: Dagster reads resource field types from the annotations.

from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from assets.config import config_class, settings_from
from pipeline.settings.pacs import PacsAuthSettings, PacsSendSettings


class _PacsConnectionBase(dg.ConfigurableResource):
    """Methods of :class:`PacsConnection` (its fields are generated from the settings declarations)."""

    def send_settings(self) -> PacsSendSettings:
        return settings_from(self, PacsSendSettings)

    def auth_settings(self) -> PacsAuthSettings:
        return settings_from(self, PacsAuthSettings)

    def archive_url(self) -> str:
        """The DICOMweb service pacs_sensor searches (QIDO-RS) and retrieves from (WADO-RS)."""
        return str(getattr(self, "dicomweb_url", "") or getattr(self, "stow_url", ""))


_WATCH_FIELDS = {
    "dicomweb_url": (
        str,
        Field(default="", description="DICOMweb base URL pacs_sensor searches and retrieves from; empty: stow_url"),
    ),
    "watch_modality": (
        str,
        Field(default="", description="pacs_sensor: only studies with this modality (e.g. US, CT); empty: any"),
    ),
    "watch_description": (
        str,
        Field(default="", description="pacs_sensor: only studies whose description contains this word; empty: any"),
    ),
    "watch_lookback_days": (
        int,
        Field(
            default=7, description="pacs_sensor: also search this many days before its cursor's date (late arrivals)"
        ),
    ),
    "watch_max_studies": (
        int,
        Field(default=5, description="pacs_sensor: studies retrieved per evaluation at most (the rest wait a tick)"),
    ),
}

if TYPE_CHECKING:  # the class is made at import time; to a type checker it is a resource with these fields

    class PacsConnection(_PacsConnectionBase):
        send_to: str = ""
        stow_url: str = ""
        calling_ae: str = "SCANLENS"
        send_attempts: int = 3
        send_backoff_s: float = 2.0
        pacs_auth: str = "none"
        pacs_tls_verify: bool = True
        pacs_ca_bundle: str = ""
        dicomweb_url: str = ""
        watch_modality: str = ""
        watch_description: str = ""
        watch_lookback_days: int = 7
        watch_max_studies: int = 5
else:
    PacsConnection = config_class(
        "PacsConnection",
        PacsSendSettings,
        PacsAuthSettings,
        doc="The hospital PACS: C-STORE or STOW-RS destination of scoring's DICOM outputs, the DICOMweb archive "
        "pacs_sensor watches, and how to authenticate (credentials from $SCANLENS_PACS_USER/_PASSWORD/_TOKEN).",
        extra=_WATCH_FIELDS,
        base=_PacsConnectionBase,
    )
