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
