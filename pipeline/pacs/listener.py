"""A DICOM Storage SCP (pynetdicom): studies sent by a modality or a PACS land in an inbox folder.

Each received instance is written to ``DIR/<stu_ key>/<ins_ key>.dcm`` (:class:`pipeline.layout.StudyDrop`),
the keys being keyed pseudonyms of its StudyInstanceUID and SOPInstanceUID, so no name carries PHI.
The inbox sensor (or ``scanlens score``) scores a study once its folder has been quiet for
``stable_seconds``. The dataset is stored as received, without decoding it: a malformed one is still
kept, and ingest quarantines it later with a reason. One whose StudyInstanceUID cannot be read goes
to a study folder keyed by its association.

What is accepted: C-ECHO, and C-STORE of :data:`~pipeline.pacs.node.IMAGE_STORAGE_CLASSES` in the
:data:`~pipeline.pacs.node.TRANSFER_SYNTAXES` ingest decodes; other presentation contexts are rejected
when the association is negotiated (abstract syntax not supported), and so is a calling AE title
outside ``allow`` (when given).

Limits: the maximum PDU size we receive; the maximum size of one instance (bytes; a bigger one is
answered ``0xA700`` Out of Resources and discarded); and a free-disk floor on the inbox's file system
(below it every C-STORE is answered ``0xA700`` and nothing is written). Datasets are streamed to
``DIR/.incoming/`` while they arrive (pynetdicom's chunked receive), never held whole in memory, and
renamed into place when complete: a study folder never holds a partial file.

Logs name calling AE titles and pseudonyms only. :meth:`StorageListener.serve` stops on SIGTERM or
SIGINT: it accepts no new association, lets the current ones finish, and returns.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from pydicom import dcmread
from pydicom.uid import UID
from pynetdicom import AE, _config, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.transport import ThreadedAssociationServer

from pipeline.deid import Pseudonymizer
from pipeline.errors import UserInputError
from pipeline.layout import StudyDrop
from pipeline.pacs.node import IMAGE_STORAGE_CLASSES, TRANSFER_SYNTAXES, check_ae_title

log = logging.getLogger(__name__)

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # PS3.4 Annex B.2.3: Refused, Out of Resources
VERIFICATION = "1.2.840.10008.1.1"  # the Verification SOP Class (C-ECHO)


@dataclass(frozen=True)
class ListenerSettings:
    """Where and how the Storage SCP listens. Sizes in bytes, times in seconds."""

    ae_title: str = "SCANLENS"
    host: str = "127.0.0.1"
    port: int = 11112
    allow: tuple[str, ...] = ()  # calling AE titles allowed to associate; empty: any
    max_pdu: int = 262_144  # largest PDU we receive (0: unlimited, per PS3.8)
    max_instance_bytes: int = 2 * 1024**3
    min_free_bytes: int = 1024**3  # free space the inbox's file system must keep
    max_associations: int = 8
    network_timeout: float = 60.0
    shutdown_grace: float = 300.0  # how long SIGTERM waits for running associations

    def __post_init__(self) -> None:
        object.__setattr__(self, "ae_title", check_ae_title(self.ae_title, "--ae-title"))
        object.__setattr__(self, "allow", tuple(check_ae_title(a, "--allow") for a in self.allow))
        if not 0 <= self.port <= 65535:
            raise UserInputError(f"--port must be 0-65535, not {self.port}")
        if self.max_pdu < 0 or self.max_instance_bytes <= 0 or self.min_free_bytes < 0:
            raise UserInputError("--max-pdu, --max-instance-mb and --min-free-mb must not be negative")


@dataclass
class ListenerStats:
    """What the listener did since it started (counts; safe to log)."""

    stored: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # reason -> count
    unreadable_headers: int = 0  # stored in an association-keyed study folder
    associations: int = 0
    studies: set[str] = field(default_factory=set)  # stu_ keys


class StorageListener:
    """The Storage SCP of ``settings`` writing into ``inbox``, naming with ``pseudonymizer``."""

    def __init__(self, inbox: Path, settings: ListenerSettings, pseudonymizer: Pseudonymizer) -> None:
        self.drop = StudyDrop(inbox)
        self.settings = settings
        self.names = pseudonymizer
        self.stats = ListenerStats()
        self._lock = threading.Lock()
        self._server: ThreadedAssociationServer | None = None
        self._previous_tempdir: str | None = None
        self._ae = self._make_ae()

    def _make_ae(self) -> AE:
        _config.LOG_HANDLER_LEVEL = "none"  # pynetdicom's standard handlers log dataset identifiers
        _config.STORE_RECV_CHUNKED_DATASET = True  # stream each dataset to a file, never whole in memory
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
        ae = AE(ae_title=self.settings.ae_title)
        ae.maximum_pdu_size = self.settings.max_pdu
        ae.maximum_associations = self.settings.max_associations
        ae.network_timeout = self.settings.network_timeout
        ae.require_calling_aet = list(self.settings.allow)
        ae.add_supported_context(UID(VERIFICATION))
        for uid in IMAGE_STORAGE_CLASSES:
            ae.add_supported_context(uid, list(TRANSFER_SYNTAXES))
        return ae

    # --- life cycle ---------------------------------------------------------------------------
    def start(self) -> tuple[str, int]:
        """Start listening in background threads; the (host, port) bound (port 0 picks a free one)."""
        self.drop.root.mkdir(parents=True, exist_ok=True)
        self.drop.incoming.mkdir(exist_ok=True)
        # pynetdicom's chunked receive writes to tempfile's folder: make it the inbox's, so a finished
        # instance is renamed (not copied) into its study folder, and the disk floor covers it.
        self._previous_tempdir, tempfile.tempdir = tempfile.tempdir, str(self.drop.incoming)
        handlers: list[Any] = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_RELEASED, self._on_closed, ["released"]),
            (evt.EVT_ABORTED, self._on_closed, ["aborted"]),
        ]
        try:
            server = self._ae.start_server((self.settings.host, self.settings.port), block=False, evt_handlers=handlers)
        except OSError as exc:
            tempfile.tempdir = self._previous_tempdir
            raise UserInputError(
                f"cannot listen on {self.settings.host}:{self.settings.port}: {exc.strerror or exc}"
            ) from None
        self._server = server
        assert server is not None  # block=False returns the server
        host, port = server.server_address[:2]
        log.info(
            "listening as %s on %s:%d (calling AE titles allowed: %s); studies go to %s",
            self.settings.ae_title,
            host,
            port,
            ", ".join(self.settings.allow) or "any",
            self.drop.root,
        )
        return str(host), int(port)

    def active_associations(self) -> int:
        return 0 if self._server is None else len(self._server.active_associations)

    def stop(self, grace: float | None = None) -> None:
        """Accept no new association, wait up to ``grace`` seconds for the running ones, then close."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.shutdown()  # the listening socket closes; running associations continue
        deadline = time.monotonic() + (self.settings.shutdown_grace if grace is None else grace)
        running = len(server.active_associations)
        if running:
            log.info("finishing %d association(s) before stopping", running)
        while server.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        for assoc in server.active_associations:  # past the grace period
            log.warning("aborting an association from %s still open at shutdown", assoc.requestor.ae_title)
            assoc.abort()
        tempfile.tempdir = self._previous_tempdir
        log.info(
            "stopped: %d instances stored in %d studies over %d associations; refused %s",
            self.stats.stored,
            len(self.stats.studies),
            self.stats.associations,
            dict(self.stats.refused) or "none",
        )

    def serve(self) -> int:
        """Listen until SIGTERM or SIGINT, finish the running associations, return 0."""
        stop = threading.Event()

        def on_signal(signum: int, _frame: Any) -> None:
            log.info("%s received: accepting no new association", signal.Signals(signum).name)
            stop.set()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            while not stop.wait(0.5):
                pass
            self.stop()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return 0

    # --- event handlers (pynetdicom's threads) -------------------------------------------------
    def _on_accepted(self, event: evt.Event) -> None:
        with self._lock:
            self.stats.associations += 1
        log.info("association from %s accepted", event.assoc.requestor.ae_title)

    def _on_rejected(self, event: evt.Event) -> None:
        with self._lock:
            self.stats.refused["association rejected"] += 1
        log.warning("association from %s rejected", event.assoc.requestor.ae_title)

    def _on_closed(self, event: evt.Event, how: str) -> None:
        log.info("association from %s %s", event.assoc.requestor.ae_title, how)

    def _refuse(self, path: Path, reason: str, calling: str) -> int:
        path.unlink(missing_ok=True)
        with self._lock:
            self.stats.refused[reason] += 1
        log.warning("C-STORE from %s refused (out of resources): %s", calling, reason)
        return OUT_OF_RESOURCES

    def _on_store(self, event: evt.Event) -> int:
        calling = str(event.assoc.requestor.ae_title)
        received = Path(event.dataset_path)
        if shutil.disk_usage(self.drop.root).free < self.settings.min_free_bytes:
            return self._refuse(received, "free disk below the floor", calling)
        size = received.stat().st_size
        if size > self.settings.max_instance_bytes:
            return self._refuse(received, f"instance of {size} bytes over the limit", calling)
        request = cast(C_STORE, event.request)
        sop_uid = str(request.AffectedSOPInstanceUID or "")
        study_uid = self._study_uid(received)
        if study_uid is None:
            association = f"unreadable:{calling}:{id(event.assoc)}:{event.assoc.native_id}"
            study_key = self.names.study(association)
            with self._lock:
                self.stats.unreadable_headers += 1
            log.warning("an instance from %s has no readable StudyInstanceUID: kept in %s", calling, study_key)
        else:
            study_key = self.names.study(study_uid)
        instance_key = self.names.instance(sop_uid or f"{study_key}:{received.name}")
        target = self.drop.instance(study_key, instance_key)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(received, target)  # same file system (.incoming/): atomic
        except OSError as exc:
            received.unlink(missing_ok=True)
            with self._lock:
                self.stats.refused["write failed"] += 1
            log.error("could not store an instance from %s into %s: %s", calling, study_key, type(exc).__name__)
            return OUT_OF_RESOURCES
        with self._lock:
            self.stats.stored += 1
            self.stats.studies.add(study_key)
        log.debug("stored %s/%s from %s", study_key, instance_key, calling)
        return SUCCESS

    @staticmethod
    def _study_uid(path: Path) -> str | None:
        """The StudyInstanceUID of a received file, or None when its header does not yield one."""
        try:
            ds = dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
            uid = str(ds.get("StudyInstanceUID", "") or "").strip()
        except Exception:  # noqa: BLE001 (any malformed header: the file is kept for ingest to judge)
            return None
        return uid or None
