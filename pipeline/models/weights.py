"""ImageNet ResNet-50 weights in torchvision's format, from a local file or the torch hub cache.

Nothing is downloaded: ScanLens runs where hubs are unreachable. ``"imagenet"`` means "look in the
torch hub cache" (``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch/hub/checkpoints``) for
torchvision's ``resnet50-*.pth`` files; a path means that file.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import UserInputError
from pipeline.tensorfile import load_tensor_file

log = logging.getLogger(__name__)
TORCHVISION_FILES = ("resnet50-11ad3fa6.pth", "resnet50-0676ba61.pth")  # IMAGENET1K_V2, IMAGENET1K_V1


@dataclass(frozen=True)
class WeightsSource:
    """Where the initial weights came from, for the model card."""

    kind: str  # "imagenet-file" or "random-init"
    path: str | None = None
    sha256: str | None = None

    @property
    def description(self) -> str:
        if self.kind == "random-init":
            return "random initialisation (no ImageNet weights were found)"
        return f"ImageNet ResNet-50 (torchvision format), file sha256 {self.sha256}"


def hub_checkpoint_dir() -> Path:
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    return torch_home / "hub" / "checkpoints"


def find_imagenet_weights(weights: str | None) -> Path | None:
    """Resolve ``weights`` to a file, or None for random initialisation.

    ``None`` means random init on purpose. ``"imagenet"`` searches the torch hub cache and returns
    None (after a loud warning) when nothing is there. A path that does not exist is a user error.
    """
    if weights is None:
        return None
    if weights == "imagenet":
        for name in TORCHVISION_FILES:
            candidate = hub_checkpoint_dir() / name
            if candidate.is_file():
                return candidate
        log.warning(
            "NO IMAGENET WEIGHTS FOUND in %s (looked for %s); training continues from RANDOM INITIALISATION. "
            "Put torchvision's resnet50 weights there or pass a file path.",
            hub_checkpoint_dir(),
            ", ".join(TORCHVISION_FILES),
        )
        return None
    path = Path(weights)
    if not path.is_file():
        raise UserInputError(f"weights file not found: {weights}")
    return path


def load_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """Load a torchvision-format state dict (``weights_only=True``) and the file's SHA-256."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    state: Any = load_tensor_file(path)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserInputError(f"{path.name} is not a state dict of tensors")
    return state, digest
