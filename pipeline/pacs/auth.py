"""Authenticated HTTP sessions for DICOMweb (QIDO-RS, WADO-RS, STOW-RS).

Credentials come from the environment when a session is made, never from settings or command lines:

========  ==============================================
auth      environment variables
========  ==============================================
none      (nothing)
basic     ``SCANLENS_PACS_USER``, ``SCANLENS_PACS_PASSWORD``
bearer    ``SCANLENS_PACS_TOKEN``
========  ==============================================

TLS certificates are verified unless ``tls_verify`` is off (then a warning is logged once per
session); ``ca_bundle`` names a private CA's bundle.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import requests
from dicomweb_client.api import DICOMwebClient

from pipeline.errors import UserInputError
from pipeline.settings.pacs import PacsAuthSettings

log = logging.getLogger(__name__)
USER_ENV, PASSWORD_ENV, TOKEN_ENV = "SCANLENS_PACS_USER", "SCANLENS_PACS_PASSWORD", "SCANLENS_PACS_TOKEN"
#: Seconds to connect, and to wait for a response, on each DICOMweb request.
HTTP_TIMEOUT = (10.0, 120.0)


class _Bearer(requests.auth.AuthBase):
    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request


def _env(name: str, mode: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise UserInputError(f"DICOMweb authentication is {mode}, but ${name} is not set")
    return value


def http_session(settings: PacsAuthSettings) -> requests.Session:
    """A :class:`requests.Session` carrying the configured credentials and certificate checks."""
    session = requests.Session()
    if settings.auth == "basic":
        session.auth = (_env(USER_ENV, "basic"), _env(PASSWORD_ENV, "basic"))
    elif settings.auth == "bearer":
        session.auth = _Bearer(_env(TOKEN_ENV, "bearer"))
    if not settings.tls_verify:
        log.warning("TLS certificate verification of the DICOMweb server is off")
        session.verify = False
    elif settings.ca_bundle:
        bundle = Path(settings.ca_bundle)
        if not bundle.is_file():
            raise UserInputError(f"CA bundle not found: {bundle}")
        session.verify = str(bundle)
    return session


def dicomweb_client(url: str, settings: PacsAuthSettings) -> DICOMwebClient:
    """A dicomweb-client for the service at ``url`` (its base, e.g. ``http://pacs:8042/dicom-web``)."""
    if not url.startswith(("http://", "https://")):
        raise UserInputError(f"a DICOMweb URL starts with http:// or https://, not {url!r}")
    return DICOMwebClient(url.rstrip("/"), session=http_session(settings), timeout=HTTP_TIMEOUT)
