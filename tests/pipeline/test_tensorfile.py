"""Weights and checkpoints are loaded with ``weights_only=True``; anything else is a clear user error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.errors import NotWeightsFileError, UserInputError
from pipeline.models.resnet import build_resnet50
from pipeline.tensorfile import load_tensor_file

REPO = Path(__file__).resolve().parents[2]


class Payload:
    """Unpickling this runs a shell command: what a malicious "weights" file does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_imports_code_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "resnet50.pth"
    torch.save({"conv1.weight": Payload(marker)}, path)
    with pytest.raises(NotWeightsFileError) as caught:
        load_tensor_file(path)
    assert str(caught.value).startswith("resnet50.pth: not a ScanLens weights file (refused to unpickle: ")
    assert "os.system" in str(caught.value) or "posix.system" in str(caught.value)
    assert isinstance(caught.value, UserInputError) and not marker.exists()
    with pytest.raises(NotWeightsFileError):
        build_resnet50(num_classes=2, weights=str(path))
    assert not marker.exists()


def test_files_that_are_not_state_dicts_are_refused(tmp_path: Path) -> None:
    (tmp_path / "text.pt").write_text("hello")
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    for name in ("text.pt", "list.pt"):
        with pytest.raises(NotWeightsFileError, match="not a ScanLens weights file"):
            load_tensor_file(tmp_path / name)


def test_train_with_such_weights_exits_2_with_one_line(tiny_workdir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"fc.weight": Payload(marker)}, tmp_path / "evil.pth")
    env = dict(os.environ, SCANLENS_SECRET="tiny")
    done = subprocess.run([sys.executable, "-m", "pipeline", "train", "--workdir", str(tiny_workdir), "--epochs", "1",
                           "--input-size", "16", "--weights", str(tmp_path / "evil.pth")],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=300, check=False)
    errors = [line for line in done.stderr.splitlines() if line.startswith("scanlens:")]
    assert done.returncode == 2 and errors == [done.stderr.splitlines()[-1]]
    assert "evil.pth: not a ScanLens weights file (refused to unpickle" in errors[0] and not marker.exists()
