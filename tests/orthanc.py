"""A real PACS for tests: Debian's Orthanc with its DICOMweb plug-in, started on free loopback ports.

Each :class:`Orthanc` runs its own ``Orthanc`` process from a JSON config written into a temporary
folder that also holds its storage; the system service is never touched. Tests use the fixtures in
``tests/conftest.py`` (``orthanc``, ``orthanc_factory``); they skip where Orthanc is not installed and
fail instead under CI (``make test`` installs it as root, see ``make system-deps``).

The REST API (``/instances``, ``/modalities/<name>/store``, ``/tools/find``) seeds and inspects the
server; what ScanLens itself uses is DIMSE (port :attr:`dicom_port`) and DICOMweb (:attr:`dicomweb_url`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import requests

BINARY = shutil.which("Orthanc") or "/usr/sbin/Orthanc"  # Debian installs it in /usr/sbin
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false")


def require_orthanc() -> None:
    """Skip (fail under CI) unless Orthanc and its DICOMweb plug-in are installed."""
    missing = [
        what
        for what, ok in (("orthanc", Path(BINARY).exists()), ("orthanc-dicomweb", DICOMWEB_PLUGIN.exists()))
        if not ok
    ]
    if missing:
        message = f"Debian package(s) {', '.join(missing)} not installed (make system-deps installs them as root)"
        if IN_CI:
            pytest.fail(message + "; CI must run the PACS tests")
        pytest.skip(message)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_listener(
    inbox: Path, port: int, log_file: Path, *options: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``scanlens listen --inbox INBOX --port PORT OPTIONS...`` as a subprocess (its stderr to ``log_file``),
    once it listens."""
    repo = Path(__file__).resolve().parents[1]
    with open(log_file, "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "listen", "--inbox", str(inbox), "--port", str(port), *options],
            cwd=repo,
            env=env if env is not None else dict(os.environ),
            stderr=stderr,
        )
    deadline = time.monotonic() + 30
    while "listening as" not in log_file.read_text() and time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"scanlens listen exited with {proc.returncode}: {log_file.read_text()}")
        time.sleep(0.1)
    return proc


class Orthanc:
    """One Orthanc server on loopback. ``users`` turns HTTP basic authentication on."""

    def __init__(self, root: Path, aet: str = "ORTHANC", users: dict[str, str] | None = None) -> None:
        self.root = root
        self.aet = aet
        self.http_port, self.dicom_port = free_port(), free_port()
        self.users = users or {}
        self.process: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "scanlens-test",
            "StorageDirectory": str(root / "storage"),
            "IndexDirectory": str(root / "storage"),
            "HttpPort": self.http_port,
            "HttpBindAddress": "127.0.0.1",  # Orthanc >= 1.10: never listen beyond loopback
            "DicomPort": self.dicom_port,
            "DicomAet": aet,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowEcho": True,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": self.users,
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "StudiesMetadata": "Full"},
            "StableAge": 1,
            "ConcurrentJobs": 2,
            "SaveJobs": False,
            "DicomScuTimeout": 5,
            "DicomAssociationCloseDelay": 0,
        }
        self.config = root / "orthanc.json"
        self.config.write_text(json.dumps(config, indent=1))

    # --- process ------------------------------------------------------------------------------
    def start(self, timeout: float = 20.0) -> Orthanc:
        """Start the server and wait until its REST API answers (ports stay the same across restarts)."""
        with open(self.root / "orthanc.log", "ab") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                [BINARY, str(self.config)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}: {self.log_tail()}")
            try:
                if self.get("/system").get("DicomPort") == self.dicom_port:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"Orthanc did not answer within {timeout} s: {self.log_tail()}")

    def stop(self, kill: bool = False) -> None:
        """Stop the server: SIGTERM (a clean shutdown, about 3 s; it can start again on its storage),
        or SIGKILL with ``kill`` (at the end of a test, when its storage is thrown away)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def log_tail(self, n: int = 20) -> str:
        path = self.root / "orthanc.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""

    # --- addresses ----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def node(self) -> str:
        """``AET@HOST:PORT`` of its DICOM port."""
        return f"{self.aet}@127.0.0.1:{self.dicom_port}"

    # --- REST ---------------------------------------------------------------------------------
    def _auth(self) -> tuple[str, str] | None:
        return next(iter(self.users.items())) if self.users else None

    def get(self, path: str) -> Any:
        response = requests.get(self.url + path, auth=self._auth(), timeout=10)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: Any, timeout: float = 60) -> Any:
        data = body if isinstance(body, bytes) else json.dumps(body)
        response = requests.post(self.url + path, data=data, auth=self._auth(), timeout=timeout)
        response.raise_for_status()
        return response.json()

    def upload(self, files: Iterable[Path]) -> list[str]:
        """Store DICOM files through REST; the Orthanc ids of their studies."""
        studies = []
        for path in files:
            studies.append(self.post("/instances", path.read_bytes())["ParentStudy"])
        return sorted(set(studies))

    def add_modality(self, name: str, aet: str, port: int, host: str = "127.0.0.1") -> None:
        response = requests.put(
            f"{self.url}/modalities/{name}",
            json={"AET": aet, "Host": host, "Port": port},
            auth=self._auth(),
            timeout=10,
        )
        response.raise_for_status()

    def store_to(self, modality: str, resources: list[str], timeout: float = 120) -> Any:
        """C-STORE ``resources`` (Orthanc ids) to ``modality``, synchronously (Orthanc is the SCU)."""
        return self.post(f"/modalities/{modality}/store", {"Resources": resources, "Synchronous": True}, timeout)

    def study_ids(self) -> list[str]:
        return list(self.get("/studies"))

    def instances_of_study(self, study_uid: str) -> list[dict[str, Any]]:
        """Every instance of the study ``study_uid`` with its main tags (``/tools/find``, expanded)."""
        return list(
            self.post("/tools/find", {"Level": "Instance", "Expand": True, "Query": {"StudyInstanceUID": study_uid}})
        )

    def instance_file(self, orthanc_id: str) -> bytes:
        response = requests.get(f"{self.url}/instances/{orthanc_id}/file", auth=self._auth(), timeout=30)
        response.raise_for_status()
        return response.content
