"""Out-of-distribution checks end to end: a BreastMNIST champion refers a CT, an inverted image and an
AdrenalMNIST3D slice, and flags at most 2% of BreastMNIST's own 156-image test split.

One small BreastMNIST cross-validation (:data:`TRAIN`: 2 folds, 2 epochs at 28 px on 156 train + 78
val images) is trained once for the module; its evaluation writes the fingerprint, the registry
stores it with the version, scoring checks against it. The inverted images and the adrenal slices
are written the way BreastMNIST is imported (ultrasound, 1 mm, 28 x 28, the same synthetic
manufacturer), so that only the intensity and embedding checks can catch them; the CT is one real CT
slice (sts002) where ../shared/data is present, else a synthetic one. Beyond the one image of each
kind the issue asks about, :data:`N_ITEMS` of each are scored and their flag rates logged (a model
this small embeds poorly, so the rates asserted are below those of a trained model: docs/operations.md).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.evaluate import CVSettings, EvaluationSettings, cross_validate
from pipeline.ingest import IngestConfig, ingest
from pipeline.io.medmnist import import_medmnist
from pipeline.layout import Workdir
from pipeline.preprocess import AugmentConfig, PreprocessConfig
from pipeline.registry import Registry
from pipeline.scoring import score_scans
from pipeline.scoring.ood import EMBEDDING, INTENSITY, WRONG_MODALITY
from pipeline.train import TrainConfig
from tests.conftest import DICOM_DATA, REPO
from tests.dicom_factory import write_series, z_positions

pytestmark = pytest.mark.slow
log = logging.getLogger(__name__)

BREAST = REPO / "data" / "demo" / "breastmnist.npz"
ADRENAL = REPO / "data" / "demo" / "adrenalmnist3d.npz"
STS_CT = DICOM_DATA / "sts002" / "CT" / "dicom" / "image"
#: Out-of-distribution items of each kind (the first is the one that must be flagged).
N_ITEMS = 20
TRAIN = (
    CVSettings(n_folds=2),
    TrainConfig(epochs=2, batch_size=16, device="cpu"),
    PreprocessConfig(dims=2, input_size=(28, 28)),
    AugmentConfig(enabled=False),
    EvaluationSettings(n_resamples=200),
)


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A work folder whose champion is a 2-fold BreastMNIST model (156 train, 78 val and the 156 test images)."""
    root = tmp_path_factory.mktemp("ood_breast")
    import_medmnist(BREAST, root / "source", limit=156)
    ingest(IngestConfig(source=root / "source", workdir=root / "w", labels=root / "source" / "labels.csv"))
    cross_validate(root / "w", *TRAIN)
    registry = Registry(root / "w")
    registry.promote(registry.register().version, "out-of-distribution test")
    return root / "w"


def _kind_npz(path: Path, images: np.ndarray) -> Path:
    """``images`` as a MedMNIST archive (all in ``test``) whose name makes import-medmnist write ultrasound."""
    empty, none = np.zeros((0, *images.shape[1:]), np.uint8), np.zeros(0, np.uint8)
    np.savez(
        path,
        train_images=empty,
        train_labels=none,
        val_images=empty,
        val_labels=none,
        test_images=images.astype(np.uint8),
        test_labels=np.zeros(len(images), np.uint8),
    )
    return path


@pytest.fixture(scope="module")
def strangers(champion: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """An intake work folder with N_ITEMS inverted BreastMNIST test images, N_ITEMS AdrenalMNIST3D
    middle slices (as BreastMNIST ultrasound) and one CT slice; and each scan's ``kind`` and whether
    it is the ``first`` of its kind, by ``scan_id``."""
    root = tmp_path_factory.mktemp("ood_strangers")
    breast, volumes = np.load(BREAST)["test_images"], np.load(ADRENAL)["test_images"]
    slices = [v[v.shape[0] // 2] for v in volumes if (v[v.shape[0] // 2] > 0).mean() > 0.02][:N_ITEMS]
    kinds = {"inverted": 255 - breast[:N_ITEMS], "adrenal": np.stack(slices)}
    for kind, images in kinds.items():
        for part, items in (("first", images[:1]), ("more", images[1:])):
            npz = _kind_npz(root / f"breast_{kind}_{part}.npz", items)
            import_medmnist(npz, root / "source" / kind / part, seed=len(part))
    if STS_CT.is_dir():  # one real CT slice (a 2D scan, as the champion reads)
        (root / "source" / "ct" / "first").mkdir(parents=True)
        middle = sorted(STS_CT.glob("*.dcm"))
        shutil.copy(middle[len(middle) // 2], root / "source" / "ct" / "first" / "slice.dcm")
    else:
        log.warning("%s not found: a synthetic CT slice stands in for sts002", STS_CT)
        write_series(root / "source" / "ct" / "first", z_positions(1), rows=64, cols=64)
    ingest(IngestConfig(source=root / "source", workdir=root / "w", labels=None))
    catalog = pd.read_parquet(root / "w" / "catalog.parquet")
    manifest = pd.read_parquet(root / "w" / "ingest_manifest.parquet").dropna(subset=["scan_id"])
    where = manifest["source_path"].map(lambda p: Path(p).parts)
    kinds = pd.DataFrame(
        {"kind": where.map(lambda p: p[0]).to_numpy(), "first": where.map(lambda p: p[1] == "first").to_numpy()},
        index=manifest["scan_id"].to_numpy(),
    )
    assert kinds["kind"].value_counts().to_dict() == {"adrenal": N_ITEMS, "inverted": N_ITEMS, "ct": 1}
    assert kinds["first"].sum() == 3 and set(catalog["dims"]) == {2}
    return root / "w", kinds


def test_the_evaluation_stores_a_fingerprint_with_the_version(champion: Path) -> None:
    wd = Workdir(champion)
    metrics = json.loads(wd.metrics.read_text())
    fingerprint = json.loads(wd.fingerprint.read_text())
    assert metrics["ood"]["fingerprint"] == "evaluation/fingerprint.json"
    assert fingerprint["modalities"] == {"US": 234} and fingerprint["manufacturers"] == {"ScanLens synthetic": 234}
    assert fingerprint["shape"] == {"min": [28, 28, 1], "max": [28, 28, 1]}
    assert [m["n_components"] for m in fingerprint["embedding"]["models"]] == [32, 32]
    version = wd.version(Registry(champion).champion() or "")
    assert version.fingerprint.read_bytes() == wd.fingerprint.read_bytes()
    assert version.fingerprint_arrays.read_bytes() == wd.fingerprint_arrays.read_bytes()


def test_at_most_two_percent_of_the_test_split_is_flagged(champion: Path) -> None:
    catalog = pd.read_parquet(Workdir(champion).catalog)
    test = catalog[catalog["split"] == "test"]
    assert len(test) == 156
    scores = score_scans(champion, test, overlays=False).scores
    flagged = scores["ood_flags"] != ""
    log.info(
        "in distribution: %d of %d test scans flagged (%s)",
        flagged.sum(),
        len(scores),
        scores["ood_flags"][flagged].tolist(),
    )
    assert flagged.mean() <= 0.02
    assert scores["ood_score"].notna().all()
    assert (scores.loc[flagged, "decision"] == "refer").all()
    reference = json.loads(Workdir(champion).metrics.read_text())["ood"]["reference"]["test"]
    assert reference["n"] == 156 and reference["flagged"] == flagged.sum()  # the evaluation measured the same


def test_a_ct_an_inverted_image_and_an_adrenal_slice_are_referred(
    champion: Path, strangers: tuple[Path, pd.DataFrame]
) -> None:
    intake, kinds = strangers
    catalog = pd.read_parquet(intake / "catalog.parquet")
    scores = score_scans(champion, catalog, overlays=False, scan_root=intake).scores.join(kinds, on="scan_id")
    scores["flagged"] = scores["ood_flags"] != ""
    rates = scores.groupby("kind")["flagged"].mean().to_dict()
    log.info("flag rates: %s", rates)
    assert (scores.loc[scores["flagged"], "decision"] == "refer").all()
    assert scores.loc[scores["flagged"], "refer_reason"].str.contains("out of distribution: ").all()
    assert (scores.loc[scores["flagged"], "ood_score"] > 1).all()
    first = scores[scores["first"]].set_index("kind")
    assert first["flagged"].all(), first[["ood_flags", "ood_score"]]  # one of each kind, as the issue asks
    assert WRONG_MODALITY in first.loc["ct", "ood_flags"].split(",")
    look_alike = scores[scores["kind"] != "ct"]
    assert not look_alike["ood_flags"].str.contains(WRONG_MODALITY).any()  # made like the training data
    caught_by = look_alike.loc[look_alike["flagged"], "ood_flags"].str.split(",").map(set)
    assert caught_by.map(lambda f: bool(f & {INTENSITY, EMBEDDING})).all()
    assert rates["adrenal"] >= 0.95 and rates["inverted"] >= 0.6  # measured 1.0 and 0.75 (this weak model)
