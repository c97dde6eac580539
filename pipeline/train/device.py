"""One object decides device, precision and memory layout; on CPU everything is plain fp32."""

from __future__ import annotations

import logging
import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from pipeline.errors import UserInputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceSettings:
    """Device and speed settings: AMP (bf16 where supported, else fp16 with a GradScaler),
    channels_last, cudnn.benchmark, pinned memory and non-blocking copies, all on CUDA only."""

    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool
    pin_memory: bool

    @property
    def non_blocking(self) -> bool:
        return self.device.type == "cuda"

    @property
    def needs_scaler(self) -> bool:
        return self.amp_dtype == torch.float16

    def autocast(self) -> AbstractContextManager[object]:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def memory_format(self, dims: int) -> torch.memory_format:
        if not self.channels_last:
            return torch.contiguous_format
        return torch.channels_last if dims == 2 else torch.channels_last_3d

    @property
    def description(self) -> str:
        amp = {None: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast + GradScaler"}[
            self.amp_dtype
        ]
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        return f"{name}, {amp}{', channels_last' if self.channels_last else ''}"


def resolve_device(request: str, deterministic: bool = False) -> DeviceSettings:
    """``auto`` picks CUDA when present. Deterministic mode turns off cudnn.benchmark."""
    if request == "cuda" and not torch.cuda.is_available():
        raise UserInputError("--device cuda was asked for, but no CUDA device is available")
    use_cuda = request == "cuda" or (request == "auto" and torch.cuda.is_available())
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    else:
        torch.use_deterministic_algorithms(False)
    if not use_cuda:
        return DeviceSettings(torch.device("cpu"), None, channels_last=False, pin_memory=False)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return DeviceSettings(torch.device("cuda"), amp, channels_last=True, pin_memory=True)
