"""Loading weights and checkpoints from files that may come from anywhere.

Every ``torch.load`` in ScanLens happens here, with ``weights_only=True``: unpickling never imports
or calls anything, and a file that tries is refused with a clear user error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pipeline.errors import NotWeightsFileError


def load_tensor_file(path: Path) -> dict[str, Any]:
    """Load a weights or checkpoint file with ``weights_only=True``: the one ``torch.load`` of ScanLens.

    A file that is not a plain state dict, a pickle that tries to import anything included, raises
    :class:`NotWeightsFileError` (exit 2): ``not a ScanLens weights file (refused to unpickle ...)``.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 (torch's unpickler raises many types on a hostile or foreign file)
        raise NotWeightsFileError(
            f"{path.name}: not a ScanLens weights file (refused to unpickle: {_why(exc)})"
        ) from None
    if not isinstance(state, dict):
        raise NotWeightsFileError(
            f"{path.name}: not a ScanLens weights file (it holds a {type(state).__name__}, not a dict)"
        )
    return state


def _why(exc: BaseException) -> str:
    """The line of torch's message that says what was refused (e.g. ``unsupported GLOBAL posix.system``)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        lowered = line.lower()
        if "unsupported global" in lowered or "unsupported operand" in lowered or "blocked" in lowered:
            return line.split("WeightsUnpickler error:")[-1].strip().rstrip(".")[:160]
    return f"{type(exc).__name__}: {lines[0][:120]}" if lines else type(exc).__name__
