"""The model registry under ``W/registry/``.

* ``versions/<version>/``: one evaluated model version: every fold model's ``weights.pt`` and
  ``model_card.json`` (``models/<model_id>/``), ``metrics.json``, ``oof_predictions.parquet``,
  ``folds.parquet``, ``sanity.json``, the training-data fingerprint (``fingerprint.json``, ``.npz``),
  the report PDF (``report.pdf``) and ``version.json`` (model ids, data-manifest hashes, fold hash,
  operating point, preprocessing, recalibration and referral limits). Written to a temporary
  folder and renamed into place, so a version is complete or absent.
* ``index.json``: ``{"champion": <version> | null}``. Promotion replaces it with one atomic rename:
  there is exactly one champion at any time.
* ``history.jsonl``: append-only; one JSON line per registration, promotion, retirement or
  rejection, with its reason and a UTC timestamp. A version's status is read from it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import UserInputError
from pipeline.layout import ModelFiles, VersionFiles, Workdir
from pipeline.locking import workdir_lock
from pipeline.storage import atomic_write_bytes


@dataclass(frozen=True)
class RegistryEntry:
    version: str
    status: str  # champion, registered, rejected, retired
    record: dict[str, Any]
    reason: str | None = None


class Registry:
    """Versions, the champion pointer and the history of one work folder."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.files = Workdir(workdir)
        self.root = self.files.registry

    def champion(self) -> str | None:
        if not self.files.registry_index.exists():
            return None
        return json.loads(self.files.registry_index.read_text()).get("champion")

    def history(self) -> list[dict[str, Any]]:
        if not self.files.registry_history.exists():
            return []
        return [json.loads(line) for line in self.files.registry_history.read_text().splitlines() if line.strip()]

    def _append(self, version: str, action: str, reason: str, **extra: Any) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        line = (
            json.dumps(
                {
                    "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                    "version": version,
                    "action": action,
                    "reason": reason,
                    **extra,
                }
            )
            + "\n"
        )
        fd = os.open(self.files.registry_history, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())  # one write on an O_APPEND file: lines never interleave
            os.fsync(fd)
        finally:
            os.close(fd)

    def register(self, report: Path | None = None) -> RegistryEntry:
        """Store the work folder's current evaluation as a new version (under the work-folder lock)."""
        with workdir_lock(self.workdir, "registry"):
            return self._register(report)

    def _register(self, report: Path | None = None) -> RegistryEntry:
        """Store the work folder's current evaluation (fold models, metrics, OOF predictions, folds,
        sanity results, report) as a version. The same evaluation registers once."""
        wd = self.files
        if not wd.metrics.exists():
            raise UserInputError("nothing to register: no evaluation (run `scanlens evaluate` first)")
        metrics = json.loads(wd.metrics.read_text())
        model_ids = [m["model_id"] for m in metrics["models"]]
        version = (
            "v-"
            + hashlib.sha256(json.dumps([model_ids, metrics["settings"].get("folds_hash")]).encode()).hexdigest()[:12]
        )
        target = wd.version(version).root
        if target.exists():
            return self.entry(version)
        staging = VersionFiles(wd.version_staging(version))
        shutil.rmtree(staging.root, ignore_errors=True)
        staging.models.mkdir(parents=True)
        cards = []
        for model_id in model_ids:
            source, copy = wd.model(model_id), staging.model(model_id)
            copy.root.mkdir()
            for name in ModelFiles.REGISTERED:
                shutil.copy2(source.root / name, copy.root / name)
            cards.append(json.loads(source.card.read_text()))
        for name in Workdir.REGISTERED_EVALUATION:
            shutil.copy2(wd.evaluation / name, staging.evaluation_file(name))
        if wd.sanity.exists():
            shutil.copy2(wd.sanity, staging.sanity)
        for path, kept in (
            (wd.fingerprint, staging.fingerprint),
            (wd.fingerprint_arrays, staging.fingerprint_arrays),
        ):
            if path.exists():  # the training data's fingerprint, for out-of-distribution checks at scoring
                shutil.copy2(path, kept)
        if report is not None:
            shutil.copy2(report, staging.report)
        record = {
            "version": version,
            "model_ids": model_ids,
            "dims": cards[0]["dims"],
            "data_manifest_hashes": [c["training_data"]["manifest_hash"] for c in cards],
            "folds_hash": metrics["settings"].get("folds_hash"),
            "operating_point": metrics["operating_point"],
            "classes": metrics["classes"],
            "preprocessing": cards[0]["preprocessing"],
            "oof_auroc": metrics["oof"]["auroc"],
            "oof_auroc_ci": metrics["oof"]["auroc_ci"],
            "test_auroc": (metrics.get("test") or {}).get("auroc"),
            # what scoring applies (pipeline.scoring.score): the recalibration and the referral limits,
            # both pre-specified on out-of-fold predictions (absent for multi-class tasks)
            "recalibration": metrics.get("recalibration"),
            "referral": _referral_limits(metrics.get("referral")),
        }
        staging.record.write_text(json.dumps(record, indent=2))
        os.replace(staging.root, target)  # the version appears whole
        self._append(version, "registered", "evaluation stored")
        return self.entry(version)

    def entry(self, version: str) -> RegistryEntry:
        path = self.files.version(version).record
        if not path.exists():
            raise UserInputError(f"no version {version} in {self.root}")
        record = json.loads(path.read_text())
        if self.champion() == version:
            promotions = [h for h in self.history() if h["version"] == version and h["action"] == "promoted"]
            return RegistryEntry(version, "champion", record, promotions[-1]["reason"] if promotions else None)
        events = [h for h in self.history() if h["version"] == version]
        last: dict[str, Any] = events[-1] if events else {"action": "registered", "reason": None}
        status = {"promoted": "retired"}.get(last["action"], last["action"])
        return RegistryEntry(version, status, record, last.get("reason"))

    def versions(self) -> list[RegistryEntry]:
        folder = self.files.registry_versions
        if not folder.exists():
            return []
        return [self.entry(p.name) for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")]

    def promote(self, version: str, reason: str) -> RegistryEntry:
        """Make ``version`` the champion (one atomic rename of ``index.json``); the former champion retires."""
        with workdir_lock(self.workdir, "registry"):
            return self._promote(version, reason)

    def _promote(self, version: str, reason: str) -> RegistryEntry:
        if not reason.strip():
            raise UserInputError("a promotion needs a reason")
        self.entry(version)  # exists?
        previous = self.champion()
        if previous == version:
            return self.entry(version)
        atomic_write_bytes(self.files.registry_index, json.dumps({"champion": version}).encode())
        if previous:
            self._append(previous, "retired", f"replaced by {version}")
        self._append(version, "promoted", reason)
        return self.entry(version)

    def reject(self, version: str, reason: str) -> RegistryEntry:
        """Mark a challenger rejected with its reason; it stays in the registry."""
        with workdir_lock(self.workdir, "registry"):
            self.entry(version)
            self._append(version, "rejected", reason)
            return self.entry(version)


def _referral_limits(referral: dict[str, Any] | None) -> dict[str, Any] | None:
    """The limits of ``metrics.json["referral"]`` (no curve, no outcomes): what scoring needs."""
    if not referral:
        return None
    keys = ("target_rate", "threshold", "band", "max_uncertainty", "oof_rate")
    return {k: referral[k] for k in keys if k in referral}
