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
    from pipeline.config import IngestConfig
    from pipeline.demo import DemoArchive, prepare_demo_source
    from pipeline.ingest import ingest

    root = tmp_path_factory.mktemp("tiny")
    data = REPO / "data" / "demo"
    source = prepare_demo_source(
        [DemoArchive(data / "breastmnist.npz", 12), DemoArchive(data / "adrenalmnist3d.npz", 4)],
        root / "source", root / "labels.csv", seed=1,
    )
    ingest(IngestConfig(source=source.folder, workdir=root / "w", labels=source.labels, secret="tiny"))
    return root / "w"
