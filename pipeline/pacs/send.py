"""Sending scoring's DICOM outputs (SR, Secondary Capture) into their source study in the PACS.

Two ways, one behaviour: C-STORE to ``AET@HOST:PORT`` (pynetdicom) or STOW-RS to a DICOMweb base URL
(dicomweb-client). Each object is tried up to ``send_attempts`` times, waiting ``send_backoff_s``
seconds and doubling the wait before each further try. An object still unsent is copied to
``OUTBOX/failed/<name>.dcm`` with ``<name>.json`` saying why (an error type or a DIMSE/HTTP status,
never a header value), and the next send to that destination tries it again first.

What was sent is appended to ``OUTBOX/sent.jsonl`` (SOP Instance UID of the *output*, which ScanLens
made; the destination; the file name; the time), under a lock, as soon as the PACS acknowledged it:
an object already in the ledger for a destination is never sent there again, even across crashes
and re-runs. The outputs' UIDs are derived from the scan and the model version
(:mod:`pipeline.scoring.dicom_out`), so re-made outputs are recognised too.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests
from pydicom import Dataset, dcmread
from pydicom.uid import (
    ComprehensiveSRStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
)
from pynetdicom import AE, _config

from pipeline.errors import UserInputError
from pipeline.layout import Outbox
from pipeline.pacs.auth import dicomweb_client
from pipeline.pacs.node import DicomNode
from pipeline.settings.pacs import PacsAuthSettings, PacsSendSettings
from pipeline.storage import atomic_write, atomic_write_bytes, file_lock

log = logging.getLogger(__name__)

#: C-STORE statuses that mean "stored" (PS3.4 B.2.3: success and the warnings).
STORED = {0x0000, 0xB000, 0xB006, 0xB007}


@dataclass(frozen=True)
class Destination:
    """Where outputs go: a DICOM node (C-STORE) or a DICOMweb service (STOW-RS)."""

    label: str  # "dimse:AET@HOST:PORT" or "stow:URL": what the ledger records
    node: DicomNode | None = None
    url: str = ""

    @classmethod
    def all_of(cls, settings: PacsSendSettings) -> list[Destination]:
        out = []
        if settings.send_to:
            node = DicomNode.parse(settings.send_to)
            out.append(cls(f"dimse:{node}", node=node))
        if settings.stow_url:
            if not settings.stow_url.startswith(("http://", "https://")):
                raise UserInputError(f"--stow-url must start with http:// or https://, not {settings.stow_url!r}")
            out.append(cls(f"stow:{settings.stow_url.rstrip('/')}", url=settings.stow_url))
        return out


@dataclass
class SendReport:
    """What one send did (counts and pseudonymous file names only)."""

    sent: list[str] = field(default_factory=list)  # file names
    already_sent: int = 0
    resent_from_failed: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # file name -> reason

    def merge(self, other: SendReport) -> None:
        self.sent += other.sent
        self.already_sent += other.already_sent
        self.resent_from_failed += other.resent_from_failed
        self.failed.update(other.failed)

    def summary(self) -> dict[str, object]:
        reasons = Counter(self.failed.values())
        return {
            "sent": len(self.sent),
            "already_sent": self.already_sent,
            "resent_from_failed": self.resent_from_failed,
            "failed": len(self.failed),
            "failed_by_reason": dict(sorted(reasons.items())),
        }


# --- the ledger -------------------------------------------------------------------------------
def sent_uids(outbox: Outbox, destination: str) -> set[str]:
    """SOP Instance UIDs already acknowledged by ``destination`` (a partial last line is ignored)."""
    if not outbox.sent_ledger.exists():
        return set()
    done = set()
    for line in outbox.sent_ledger.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a crash mid-append
            continue
        if entry.get("destination") == destination:
            done.add(str(entry["sop_instance_uid"]))
    return done


def _record(outbox: Outbox, destination: str, uid: str, name: str) -> None:
    line = json.dumps(
        {
            "sop_instance_uid": uid,
            "destination": destination,
            "file": name,
            "sent_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        },
        sort_keys=True,
    )
    with file_lock(outbox.ledger_lock), open(outbox.sent_ledger, "a") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())


# --- transports -------------------------------------------------------------------------------
def _c_store(node: DicomNode, calling_ae: str, datasets: list[Dataset]) -> dict[int, str]:
    """C-STORE each dataset in one association; ``{index: reason}`` of those not stored."""
    _config.LOG_HANDLER_LEVEL = "none"
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for sop in {str(ds.SOPClassUID) for ds in datasets} | {ComprehensiveSRStorage, SecondaryCaptureImageStorage}:
        ae.add_requested_context(sop, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate(node.host, node.port, ae_title=node.ae_title)
    if not assoc.is_established:
        why = "association rejected" if assoc.is_rejected else "no association (unreachable or aborted)"
        return dict.fromkeys(range(len(datasets)), why)
    failed = {}
    try:
        for i, ds in enumerate(datasets):
            try:
                status = assoc.send_c_store(ds)
            except (ValueError, RuntimeError) as exc:  # no accepted context, or the association dropped
                failed[i] = type(exc).__name__
                continue
            code = int(status.Status) if status is not None and "Status" in status else None
            if code is None:
                failed[i] = "no C-STORE response (connection lost)"
            elif code not in STORED:
                failed[i] = f"C-STORE status 0x{code:04X}"
    finally:
        if assoc.is_established:
            assoc.release()
    return failed


def _stow(url: str, auth: PacsAuthSettings, datasets: list[Dataset]) -> dict[int, str]:
    client = dicomweb_client(url, auth)
    failed = {}
    for i, ds in enumerate(datasets):
        try:
            client.store_instances([ds])
        except requests.HTTPError as exc:
            code = exc.response.status_code if exc.response is not None else "?"
            failed[i] = f"STOW-RS HTTP {code}"
        except requests.RequestException as exc:
            failed[i] = f"STOW-RS {type(exc).__name__}"
    return failed


def _transmit(
    destination: Destination, settings: PacsSendSettings, auth: PacsAuthSettings, datasets: list[Dataset]
) -> dict[int, str]:
    if destination.node is not None:
        return _c_store(destination.node, settings.calling_ae, datasets)
    return _stow(destination.url, auth, datasets)


# --- sending ----------------------------------------------------------------------------------
def _read(path: Path) -> Dataset | None:
    try:
        return dcmread(path)
    except Exception:  # noqa: BLE001 (a damaged output file: reported as failed, not fatal)
        return None


def send_objects(
    outbox_folder: Path,
    objects: list[Path],
    settings: PacsSendSettings,
    auth: PacsAuthSettings | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> SendReport:
    """Send ``objects`` (files in the outbox) and everything waiting in ``OUTBOX/failed/`` to every
    configured destination, with retries; record what was sent; leave the rest in ``failed/``."""
    outbox, auth = Outbox(outbox_folder), auth or PacsAuthSettings()
    report = SendReport()
    destinations = Destination.all_of(settings)
    for destination in destinations:
        report.merge(_send_to(outbox, destination, objects, settings, auth, sleep))
    _clear_delivered(outbox, [d.label for d in destinations])
    return report


def _send_to(
    outbox: Outbox,
    destination: Destination,
    objects: list[Path],
    settings: PacsSendSettings,
    auth: PacsAuthSettings,
    sleep: Callable[[float], None],
) -> SendReport:
    report = SendReport()
    retry = sorted(outbox.failed.glob("*.dcm")) if outbox.failed.is_dir() else []
    candidates = {p.name: p for p in [*objects, *retry]}  # a name in both: the same object
    if not candidates:
        return report  # nothing new, nothing waiting: the ledger need not be read
    done = sent_uids(outbox, destination.label)
    pending: dict[str, tuple[Path, Dataset]] = {}
    for name, path in sorted(candidates.items()):
        ds = _read(path)
        if ds is None or "SOPInstanceUID" not in ds:
            report.failed[name] = "unreadable output file"
            continue
        if str(ds.SOPInstanceUID) in done:
            report.already_sent += 1
            continue
        pending[name] = (path, ds)
    wait = settings.send_backoff_s
    reasons: dict[str, str] = {}
    for attempt in range(1, settings.send_attempts + 1):
        if not pending:
            break
        if attempt > 1:
            log.info(
                "retrying %d object(s) to %s in %.1f s (try %d of %d)",
                len(pending),
                destination.label,
                wait,
                attempt,
                settings.send_attempts,
            )
            sleep(wait)
            wait *= 2
        names = sorted(pending)
        failed = _transmit(destination, settings, auth, [pending[n][1] for n in names])
        for i, name in enumerate(names):
            if i in failed:
                reasons[name] = failed[i]
                continue
            path, ds = pending.pop(name)
            _record(outbox, destination.label, str(ds.SOPInstanceUID), name)
            report.sent.append(name)
            if path.parent == outbox.failed or outbox.failed_object(name).exists():
                report.resent_from_failed += 1
    for name, (path, _) in pending.items():
        report.failed[name] = reasons[name]
        _keep_failure(outbox, path, name, destination.label, reasons[name], settings.send_attempts)
    if report.sent or report.failed:
        log.info(
            "sent %d object(s) to %s (%d re-sent from failed/); %d failed: %s",
            len(report.sent),
            destination.label,
            report.resent_from_failed,
            len(report.failed),
            dict(Counter(report.failed.values())) or "none",
        )
    return report


def _keep_failure(outbox: Outbox, path: Path, name: str, destination: str, reason: str, attempts: int) -> None:
    """Copy the object into ``failed/`` (once) and record, per destination, why it is there."""
    target = outbox.failed_object(name)
    if path != target:
        atomic_write(target, lambda tmp: shutil.copyfile(path, tmp))
    notes_file = outbox.failure_reason(name)
    notes = json.loads(notes_file.read_text()) if notes_file.exists() else {}
    notes[destination] = {
        "reason": reason,
        "attempts": attempts,
        "failed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    atomic_write_bytes(notes_file, json.dumps(notes, indent=1, sort_keys=True).encode())
    log.warning("%s left in %s: %s after %d tries to %s", name, outbox.failed, reason, attempts, destination)


def _clear_delivered(outbox: Outbox, destinations: list[str]) -> None:
    """Remove from ``failed/`` what every destination has acknowledged."""
    waiting = sorted(outbox.failed.glob("*.dcm")) if outbox.failed.is_dir() else []
    if not waiting or not destinations:
        return
    done = [sent_uids(outbox, d) for d in destinations]
    for path in waiting:
        ds = _read(path)
        if ds is not None and all(str(ds.get("SOPInstanceUID", "")) in uids for uids in done):
            path.unlink()
            outbox.failure_reason(path.name).unlink(missing_ok=True)
