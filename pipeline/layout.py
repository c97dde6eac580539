"""The work-folder layout: every path under a ScanLens work folder ``W`` is named here and nowhere else.

Modelled on nnU-Net v2's ``paths.py``: one module owns the folder layout, so a reader finds where an
artefact lives by reading one file, and moving one never means hunting for string literals (a test,
``tests/pipeline/test_layout.py``, fails on any path literal under ``W`` outside this module).
Nothing here creates folders except :meth:`Workdir.ensure`; writers create parents as they write.

::

    W/
      catalog.parquet  quarantine.parquet  ingest_manifest.parquet   ingest tables (pseudonymous)
      volumes/<scan_id>.nii                                          one RAS+ NIfTI per scan
      .scanlens/  lock  secret.key  state.json  scans.parquet        internal state (no PHI)
      cache/preprocess/<key>.npy                                     model inputs, by cache key
      preprocessed/<config hash>.parquet                             index of one preprocessing config
      models/<model_id>/  weights.pt model_card.json checkpoint.pt history.json learning_curves.png
      evaluation/  folds.parquet folds.json oof_predictions.parquet test_predictions.parquet
                   metrics.json <plot>.png  fold_<k>/ fold.json predictions.parquet
                   fingerprint.json fingerprint.npz (training data, for out-of-distribution checks)
      saliency/  cases.parquet sanity.json  <kind>_<k>_<scan_id>/<method>.png|.nii
      reports/scanlens_report_<hash>.pdf (+ .json sidecar)
      registry/  index.json history.jsonl versions/<v>/... decisions/<v>.json
      scoring/  scores.parquet/part-<stamp>.parquet  .scores.lock       the scores: a folder of parts
                scores.migrating (an older single-file table, while it becomes the first part)
                intake/<study key>/ (a work folder of its own)  overlays/<scan>_<v>.png
                drift.json  drift_<plot>.png                         the champion's score drift

    <outbox>/  <scan>_<v>_sr.dcm  <scan>_<v>_sc.dcm    DICOM outputs for a PACS (a folder outside W)
               sent.jsonl                              what was sent where, by SOP Instance UID
               failed/<name>.dcm  failed/<name>.json   what could not be sent, and why (re-sent next run)

    <study drop>/  <stu_ key>/<ins_ key>.dcm            studies received by `scanlens listen` or retrieved
                   .incoming/                           by `scanlens fetch` / pacs_sensor (outside W)
                   labels.csv                           `fetch --studies` with a label column

>>> wd = Workdir(Path("/data/W"))
>>> wd.model("resnet50-2d-abc").weights
PosixPath('/data/W/models/resnet50-2d-abc/weights.pt')
>>> wd.fold(3).predictions
PosixPath('/data/W/evaluation/fold_3/predictions.parquet')
>>> wd.cached_input_ref("0123abcd")
'cache/preprocess/0123abcd.npy'
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: Suffix of ingested volumes (uncompressed NIfTI-1, so the preprocessing reads them by memory map).
VOLUME_SUFFIX = ".nii"
#: The work-folder lock, relative to ``W`` (also named in error messages).
LOCK_NAME = ".scanlens/lock"


@dataclass(frozen=True)
class ModelFiles:
    """One trained model's folder: ``W/models/<model_id>/`` or a registry version's copy of it."""

    root: Path

    @property
    def weights(self) -> Path:
        """The best state dict (``torch.save``; read with ``weights_only=True``)."""
        return self.root / "weights.pt"

    @property
    def card(self) -> Path:
        return self.root / "model_card.json"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.pt"

    @property
    def history(self) -> Path:
        return self.root / "history.json"

    @property
    def curves(self) -> Path:
        return self.root / "learning_curves.png"

    #: The files a registry version keeps of each model.
    REGISTERED = ("weights.pt", "model_card.json")


@dataclass(frozen=True)
class FoldFiles:
    """``W/evaluation/fold_<k>/``: which model scored the fold, and its predictions."""

    root: Path

    @property
    def record(self) -> Path:
        return self.root / "fold.json"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions.parquet"


@dataclass(frozen=True)
class CaseFiles:
    """``W/saliency/<kind>_<rank>_<scan_id>/``: one explained case's maps, one file per attribution method."""

    root: Path

    def overlay(self, method: str) -> Path:
        """The 2D overlay (or 3D montage through the attribution peak) of ``method``'s map."""
        return self.root / f"{method}.png"

    def volume_map(self, method: str) -> Path:
        """``method``'s map on the ingested scan's grid (3D scans only)."""
        return self.root / f"{method}.nii"


@dataclass(frozen=True)
class Outbox:
    """The DICOM outbox a scoring run writes for a PACS: a folder *outside* ``W``, named pseudonymously."""

    root: Path

    def sr(self, scan_id: str, version: str) -> Path:
        """The Comprehensive SR holding ``scan_id``'s score by model ``version``."""
        return self.root / f"{scan_id}_{version}_sr.dcm"

    def sc(self, scan_id: str, version: str) -> Path:
        """The Secondary Capture of ``scan_id``'s GradCAM overlay by model ``version``."""
        return self.root / f"{scan_id}_{version}_sc.dcm"

    @property
    def sent_ledger(self) -> Path:
        """One JSON line per object sent: its SOP Instance UID, the destination, the time."""
        return self.root / "sent.jsonl"

    @property
    def ledger_lock(self) -> Path:
        return self.root / ".sent.lock"

    @property
    def failed(self) -> Path:
        """Objects whose send failed after every retry (each with a ``.json`` reason beside it)."""
        return self.root / "failed"

    def failed_object(self, name: str) -> Path:
        return self.failed / name

    def failure_reason(self, name: str) -> Path:
        return self.failed / f"{Path(name).stem}.json"


@dataclass(frozen=True)
class StudyDrop:
    """A folder of studies arriving over the network (outside ``W``): ``<stu_ key>/<ins_ key>.dcm``.

    The listener writes received instances here and ``scanlens fetch`` retrieves into one; the inbox
    sensor (:mod:`pipeline.scoring.inbox`) reads each ``<stu_ key>`` folder as one study. Hidden
    ``.incoming/`` holds partly received instances (on the same file system, so a rename completes them).
    """

    root: Path

    def study(self, study_key: str) -> Path:
        return self.root / study_key

    def instance(self, study_key: str, instance_key: str) -> Path:
        return self.root / study_key / f"{instance_key}.dcm"

    @property
    def incoming(self) -> Path:
        return self.root / ".incoming"

    @property
    def labels(self) -> Path:
        """``labels.csv`` that ``scanlens fetch --studies`` writes for a labelled list (ingest's labels format)."""
        return self.root / "labels.csv"


@dataclass(frozen=True)
class VersionFiles:
    """``W/registry/versions/<version>/``: a registered evaluation, frozen."""

    root: Path

    @property
    def record(self) -> Path:
        return self.root / "version.json"

    def model(self, model_id: str) -> ModelFiles:
        return ModelFiles(self.root / "models" / model_id)

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def sanity(self) -> Path:
        return self.root / "sanity.json"

    @property
    def report(self) -> Path:
        return self.root / "report.pdf"

    def evaluation_file(self, name: str) -> Path:
        """A copy of one of :data:`Workdir.REGISTERED_EVALUATION` files."""
        return self.root / name

    @property
    def oof_predictions(self) -> Path:
        return self.root / "oof_predictions.parquet"

    @property
    def fingerprint(self) -> Path:
        """The training data's fingerprint (:mod:`pipeline.evaluate.fingerprint`), when it was evaluated with one."""
        return self.root / "fingerprint.json"

    @property
    def fingerprint_arrays(self) -> Path:
        """The fingerprint's embedding statistics (``.npz``, read with ``allow_pickle=False``)."""
        return self.root / "fingerprint.npz"


@dataclass(frozen=True)
class Workdir:
    """Paths inside a ScanLens work folder ``W`` (the tree is drawn in this module's docstring)."""

    root: Path

    # --- ingest -------------------------------------------------------------------------------
    @property
    def catalog(self) -> Path:
        return self.root / "catalog.parquet"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine.parquet"

    @property
    def manifest(self) -> Path:
        return self.root / "ingest_manifest.parquet"

    @property
    def volumes(self) -> Path:
        return self.root / "volumes"

    def volume(self, scan_id: str) -> Path:
        return self.volumes / f"{scan_id}{VOLUME_SUFFIX}"

    def volume_ref(self, scan_id: str) -> str:
        """:meth:`volume` relative to ``W``, POSIX separators (what the catalogue's ``volume_path`` holds)."""
        return self.file_ref(self.volume(scan_id))

    def file_ref(self, path: Path) -> str:
        """``path`` (inside ``W``) relative to ``W`` with POSIX separators: how tables refer to files."""
        return path.relative_to(self.root).as_posix()

    @property
    def state(self) -> Path:
        """Internal state (no source paths, no PHI): the lock, the key, assembled scans, run fingerprints."""
        return self.root / ".scanlens"

    @property
    def secret_file(self) -> Path:
        return self.state / "secret.key"

    @property
    def lock_file(self) -> Path:
        return self.root / LOCK_NAME

    @property
    def ingest_state(self) -> Path:
        """The last ingest run's fingerprint (settings and source), to skip unchanged work."""
        return self.state / "state.json"

    @property
    def scans_table(self) -> Path:
        """Every assembled scan of the last ingest, usable or not (internal; the catalogue is the public table)."""
        return self.state / "scans.parquet"

    def ensure(self) -> None:
        for folder in (self.root, self.volumes, self.state):
            folder.mkdir(parents=True, exist_ok=True)

    # --- preprocessing --------------------------------------------------------------------------
    @property
    def preprocess_cache(self) -> Path:
        return self.root / "cache" / "preprocess"

    def cached_input(self, key: str) -> Path:
        return self.preprocess_cache / f"{key}.npy"

    def cached_input_ref(self, key: str) -> str:
        """:meth:`cached_input` relative to ``W`` (what the preprocessing index stores)."""
        return self.cached_input(key).relative_to(self.root).as_posix()

    def preprocessed_index(self, config_hash: str) -> Path:
        return self.root / "preprocessed" / f"{config_hash[:16]}.parquet"

    # --- training -------------------------------------------------------------------------------
    @property
    def models(self) -> Path:
        return self.root / "models"

    def model(self, model_id: str) -> ModelFiles:
        return ModelFiles(self.models / model_id)

    def model_ids(self) -> list[str]:
        """Ids of the models with a model card, sorted."""
        if not self.models.is_dir():
            return []
        return sorted(p.name for p in self.models.iterdir() if ModelFiles(p).card.exists())

    # --- evaluation -----------------------------------------------------------------------------
    @property
    def evaluation(self) -> Path:
        return self.root / "evaluation"

    @property
    def folds_table(self) -> Path:
        return self.evaluation / "folds.parquet"

    @property
    def folds_meta(self) -> Path:
        return self.evaluation / "folds.json"

    def fold(self, k: int) -> FoldFiles:
        return FoldFiles(self.evaluation / f"fold_{k}")

    @property
    def oof_predictions(self) -> Path:
        return self.evaluation / "oof_predictions.parquet"

    @property
    def test_predictions(self) -> Path:
        return self.evaluation / "test_predictions.parquet"

    @property
    def metrics(self) -> Path:
        return self.evaluation / "metrics.json"

    def plot(self, name: str) -> Path:
        return self.evaluation / f"{name}.png"

    @property
    def fingerprint(self) -> Path:
        """The training data's fingerprint for out-of-distribution checks (:mod:`pipeline.evaluate.fingerprint`)."""
        return self.evaluation / "fingerprint.json"

    @property
    def fingerprint_arrays(self) -> Path:
        """The fingerprint's embedding statistics per fold model (``.npz``)."""
        return self.evaluation / "fingerprint.npz"

    #: Evaluation files a registry version keeps.
    REGISTERED_EVALUATION = ("metrics.json", "oof_predictions.parquet", "folds.parquet")

    # --- saliency and report --------------------------------------------------------------------
    @property
    def saliency(self) -> Path:
        return self.root / "saliency"

    @property
    def saliency_cases(self) -> Path:
        return self.saliency / "cases.parquet"

    @property
    def sanity(self) -> Path:
        return self.saliency / "sanity.json"

    def saliency_case(self, kind: str, rank: int, scan_id: str) -> CaseFiles:
        """The folder of one explained case: ``W/saliency/<kind>_<rank>_<scan_id>/``."""
        return CaseFiles(self.saliency / f"{kind}_{rank}_{scan_id}")

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    def report(self, key: str) -> Path:
        """The review-board PDF whose inputs hash to ``key`` (12 hex digits)."""
        return self.reports / f"scanlens_report_{key}.pdf"

    # --- registry -------------------------------------------------------------------------------
    @property
    def registry(self) -> Path:
        return self.root / "registry"

    @property
    def registry_index(self) -> Path:
        return self.registry / "index.json"

    @property
    def registry_history(self) -> Path:
        return self.registry / "history.jsonl"

    @property
    def registry_versions(self) -> Path:
        return self.registry / "versions"

    def version(self, version: str) -> VersionFiles:
        return VersionFiles(self.registry_versions / version)

    def version_staging(self, version: str) -> Path:
        """Where a version is assembled before one rename makes it appear whole (swept when left over)."""
        return self.registry_versions / f".{version}.partial"

    def decision(self, version: str) -> Path:
        return self.registry / "decisions" / f"{version}.json"

    # --- scoring --------------------------------------------------------------------------------
    @property
    def scoring(self) -> Path:
        return self.root / "scoring"

    @property
    def scores(self) -> Path:
        """The scores table: a folder of Parquet parts, one per scoring call (``pd.read_parquet`` reads it whole)."""
        return self.scoring / "scores.parquet"

    def scores_part(self, stamp: str) -> Path:
        """One part of :attr:`scores`; parts sort by ``stamp`` in the order they were written."""
        return self.scores / f"part-{stamp}.parquet"

    @property
    def scores_migrating(self) -> Path:
        """Where a single-file scores table of an older ScanLens becomes a folder of parts."""
        return self.scoring / "scores.migrating"

    @property
    def scores_lock(self) -> Path:
        """Held while a scoring run appends to :attr:`scores`."""
        return self.scoring / ".scores.lock"

    def intake(self, key: str) -> Workdir:
        """``W/scoring/intake/<key>/``: the work folder one inbox study is ingested into."""
        return Workdir(self.scoring / "intake" / key)

    def overlay(self, scan_id: str, version: str) -> Path:
        return self.scoring / "overlays" / f"{scan_id}_{version}.png"

    @property
    def intakes(self) -> Path:
        """The folder of every :meth:`intake` work folder."""
        return self.scoring / "intake"

    @property
    def drift(self) -> Path:
        """The champion's recent scores against its OOF reference (:mod:`pipeline.scoring.drift`)."""
        return self.scoring / "drift.json"

    def drift_plot(self, name: str) -> Path:
        return self.scoring / f"drift_{name}.png"
