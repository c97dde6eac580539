"""Shared fixtures. Tests that need ../shared/data skip with a clear message where it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
DICOM_DATA = SHARED_DATA / "dicom"

requires_shared = pytest.mark.skipif(
    not DICOM_DATA.is_dir(),
    reason=f"shared test data not found at {SHARED_DATA} (a fresh clone has no ../shared); CI provides it",
)


@pytest.fixture(autouse=True)
def _fixed_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """Deterministic pseudonyms in tests, and no secret file written into work folders."""
    monkeypatch.setenv("SCANLENS_SECRET", "test-secret")


@pytest.fixture
def demo_npz() -> Path:
    """The bundled BreastMNIST archive (ships with the repository)."""
    return REPO / "data" / "demo" / "breastmnist.npz"


@pytest.fixture
def demo_npz_3d() -> Path:
    return REPO / "data" / "demo" / "adrenalmnist3d.npz"


@pytest.fixture(scope="session")
def tiny_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ingested work folder: 12 BreastMNIST images and 4 AdrenalMNIST3D volumes per split."""
    from pipeline.demo import DemoArchive, prepare_demo_source
    from pipeline.ingest import IngestConfig, ingest

    root = tmp_path_factory.mktemp("tiny")
    data = REPO / "data" / "demo"
    source = prepare_demo_source(
        [DemoArchive(data / "breastmnist.npz", 12), DemoArchive(data / "adrenalmnist3d.npz", 4)],
        root / "source", root / "labels.csv", seed=1,
    )
    ingest(IngestConfig(source=source.folder, workdir=root / "w", labels=source.labels, secret="tiny"))
    return root / "w"


@pytest.fixture(scope="session")
def trained_2d_model(tiny_workdir: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A 2D ResNet-50 trained for a few epochs on the tiny work folder, and a few of its inputs."""
    import shutil

    import numpy as np
    import torch

    from pipeline.inference import load_model
    from pipeline.preprocess import AugmentConfig, PreprocessConfig
    from pipeline.train import TrainConfig, train

    workdir = tmp_path_factory.mktemp("trained") / "w"
    shutil.copytree(tiny_workdir, workdir)
    pre = PreprocessConfig(dims=2, input_size=(32, 32))
    result = train(workdir, TrainConfig(epochs=3, batch_size=8, patience=3), pre, AugmentConfig(enabled=False))
    loaded = load_model(result.model_dir, "cpu")
    paths = sorted((workdir / "cache" / "preprocess").glob("*.npy"))
    inputs = [torch.from_numpy(np.load(p))[None] for p in paths]
    return loaded.model, [x for x in inputs if x.dim() == 4][:3]


def tiny_cv_arguments(n_folds: int = 3) -> tuple:  # type: ignore[type-arg]
    """The cross-validation of :func:`explain_and_report`, as ``cross_validate(workdir, *tiny_cv_arguments())``:
    ``n_folds`` folds, 1 epoch, batch 4, 2D at 32 px, no augmentation, 200 resamples, manufacturer subgroups."""
    from pipeline.evaluate import CVSettings, EvaluationSettings
    from pipeline.preprocess import AugmentConfig, PreprocessConfig
    from pipeline.train import TrainConfig

    return (CVSettings(n_folds=n_folds), TrainConfig(epochs=1, batch_size=4),
            PreprocessConfig(dims=2, input_size=(32, 32)), AugmentConfig(enabled=False),
            EvaluationSettings(n_resamples=200, subgroups=("manufacturer",)))


def explain_and_report(workdir: Path, n_folds: int = 3) -> dict:  # type: ignore[type-arg]
    """Cross-validate (:func:`tiny_cv_arguments`: 3 folds, 1 epoch, 32 px), explain (1 case per kind, cheap
    settings), report."""
    from pipeline.evaluate import cross_validate
    from pipeline.explain.attribution import AttributionConfig
    from pipeline.explain.run import ExplainSettings, explain
    from pipeline.report import build_report

    evaluation = cross_validate(workdir, *tiny_cv_arguments(n_folds))
    settings = ExplainSettings(per_kind=1, sanity_cases=1, attribution=AttributionConfig(
        ig_steps=8, occlusion_window=8, occlusion_stride=8))
    explained = explain(workdir, settings)
    report = build_report(workdir)
    return {"evaluation": evaluation, "explained": explained, "report": report, "settings": settings}


@pytest.fixture(scope="session")
def reported_workdir(tiny_workdir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:  # type: ignore[type-arg]
    """The tiny work folder after evaluate -> explain -> report."""
    import shutil

    workdir = tmp_path_factory.mktemp("reported") / "w"
    shutil.copytree(tiny_workdir, workdir)
    return workdir, explain_and_report(workdir)


requires_poppler = pytest.mark.skipif(
    __import__("shutil").which("pdftoppm") is None and __import__("os").environ.get("CI") != "true",
    reason="poppler-utils (pdftoppm, pdftotext) not installed; `make test` installs it where it runs as root",
)


@pytest.fixture(scope="session")
def champion_workdir(reported_workdir: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[type-arg]
    """The reported tiny work folder with its evaluation registered and promoted to champion (2D, 32 px)."""
    import shutil

    from pipeline.registry import Registry

    workdir = tmp_path_factory.mktemp("champion") / "w"
    shutil.copytree(reported_workdir[0], workdir, ignore=shutil.ignore_patterns("checkpoint.pt", "registry", "scoring"))
    registry = Registry(workdir)
    registry.promote(registry.register().version, "test fixture")
    return workdir


def make_inbox(root: Path, per_split: int = 1, seed: int = 7) -> Path:
    """``root/inbox``: new BreastMNIST studies (synthetic DICOM headers), one folder per study named
    ``<MRN>_<accession>`` (:func:`pipeline.demo.prepare_demo_inbox`)."""
    from pipeline.demo import prepare_demo_inbox

    prepare_demo_inbox(REPO / "data" / "demo" / "breastmnist.npz", root / "inbox", per_split, seed)
    return root / "inbox"


def lock_holder_pid(workdir: Path) -> int | None:
    """The PID ``W/.scanlens/lock`` names while a writer holds it (a clean release empties the file)."""
    import json

    try:
        text = (workdir / ".scanlens" / "lock").read_text()
        return int(json.loads(text)["pid"]) if text.strip() else None
    except (FileNotFoundError, ValueError, KeyError):  # not there yet, or read while being written
        return None


@pytest.fixture
def orthanc_factory(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Start Orthanc servers (``factory(name, **kwargs)``) in ``tmp_path``; all are stopped at the end."""
    from tests.orthanc import Orthanc, require_orthanc

    require_orthanc()
    started: list[Orthanc] = []

    def factory(name: str = "orthanc", **kwargs):  # type: ignore[no-untyped-def]
        server = Orthanc(tmp_path / name, **kwargs).start()
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop(kill=True)


@pytest.fixture
def orthanc(orthanc_factory):  # type: ignore[no-untyped-def]
    """One Orthanc (DIMSE, REST, DICOMweb) on free loopback ports with its own storage folder."""
    return orthanc_factory()
