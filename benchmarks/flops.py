"""FLOPs and peaks for the throughput benchmarks: FLOPs counted by torch's ``FlopCounterMode``, a
table of datasheet peaks by GPU name, a measured matmul rate, and model FLOP utilisation (MFU).

MFU = achieved FLOP/s / peak FLOP/s, where achieved FLOP/s = images/s x FLOPs per image counted by
``FlopCounterMode`` (matrix products and convolutions, forward and backward: the usual "model FLOPs";
elementwise work, BatchNorm and the optimiser are not counted), and the peak is the GPU's dense
(no-sparsity) bf16 tensor-core rate from its vendor datasheet (fp16 on chips without bf16), or
``--peak-tflops``. Imported by ``train_throughput.py`` and ``inference_throughput.py`` (same folder).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

#: Dense bf16 tensor-core TFLOP/s (fp16 where the chip has no bf16) from vendor datasheets, matched in
#: order as whole words of the lower-case ``torch.cuda.get_device_name()`` ("a10" is not "a10g").
#: Leads, not measurements: an unknown GPU gets no MFU unless ``--peak-tflops`` is given.
PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("gh200", 989.0),
    ("h200 nvl", 835.0),
    ("h200", 989.0),  # SXM
    ("h100 pcie", 756.0),
    ("h100", 989.0),  # SXM (torch names it e.g. "NVIDIA H100 80GB HBM3")
    ("h800", 989.0),
    ("b200", 2250.0),
    ("a100", 312.0),
    ("a800", 312.0),
    ("l40s", 362.0),
    ("l40", 181.0),
    ("l4", 121.0),
    ("a10", 125.0),
    ("rtx 6000 ada", 364.0),
    ("rtx a6000", 155.0),
    ("rtx 4090", 165.0),
    ("v100", 125.0),  # fp16
    ("tesla t4", 65.0),  # fp16
)


def datasheet_peak_tflops(device: torch.device) -> tuple[float | None, str]:
    """The table's peak for ``device`` and where it came from; None on CPU or an unknown GPU."""
    if device.type != "cuda":
        return None, "no datasheet peak for a CPU"
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_TFLOPS:
        if re.search(rf"\b{re.escape(key)}\b", name.lower()):
            return tflops, f"datasheet dense bf16/fp16 peak of {name}"
    return None, f"{name} is not in benchmarks/flops.py's table (pass --peak-tflops)"


def peak_tflops(device: torch.device, override: float | None) -> tuple[float | None, str]:
    """``--peak-tflops`` when given, else :func:`datasheet_peak_tflops`."""
    if override is not None:
        return override, "--peak-tflops"
    return datasheet_peak_tflops(device)


def counted_flops(work: Callable[[], object]) -> float:
    """FLOPs that ``work()`` runs, as ``FlopCounterMode`` counts them."""
    counter = FlopCounterMode(display=False)
    with counter:
        work()
    return float(counter.get_total_flops())


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int | None = None, repeats: int = 10) -> float:
    """Measured rate of an ``n x n x n`` matrix product in ``dtype`` (TFLOP/s): what the chip gives to
    plain matrix work here (8192 on CUDA, 1024 on CPU by default), after one warm-up product."""
    n = n or (8192 if device.type == "cuda" else 1024)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e12


def mfu_text(images_per_s: float, flops_per_image: float, peak: float | None, measured: float | None = None) -> str:
    """``"412.34 TFLOP/s achieved, MFU 41.7%, 52% of the measured matmul rate"`` (MFU ``n/a`` without a peak)."""
    achieved = images_per_s * flops_per_image / 1e12
    text = f"{achieved:8.3g} TFLOP/s achieved, " + (f"MFU {100 * achieved / peak:.1f}%" if peak else "MFU n/a")
    return text + (f", {100 * achieved / measured:.0f}% of the measured matmul rate" if measured else "")


def device_line(device: torch.device) -> str:
    """One line naming the device and the torch build (no host names, no paths)."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return (
            f"device: {props.name} ({props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs, "
            f"capability {props.major}.{props.minor}); torch {torch.__version__}, CUDA {torch.version.cuda}, "
            f"cuDNN {torch.backends.cudnn.version()}"
        )
    return f"device: cpu ({torch.get_num_threads()} threads); torch {torch.__version__}"
