"""Loading weights and checkpoints from files that may come from anywhere.

Every ``torch.load`` in ScanLens happens here, with ``weights_only=True``: unpickling never imports
or calls anything, and a file that tries is refused with a clear user error.
"""

from __future__ import annotations

import pickle
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
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, ImportError) as exc:
        raise NotWeightsFileError(f"{path.name}: not a ScanLens weights file (refused to unpickle: {_why(exc)})") from None
    if not isinstance(state, dict):
        raise NotWeightsFileError(f"{path.name}: not a ScanLens weights file (it holds a {type(state).__name__}, not a dict)")
    return state


def _why(exc: BaseException) -> str:
    """The line of torch's message that says what was refused (e.g. ``Unsupported global: GLOBAL os.system``)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "Unsupported global" in line or "Unsupported operand" in line:
            return line.split("WeightsUnpickler error:")[-1].strip()[:160]
    return (lines[0] if lines else type(exc).__name__)[:160]
