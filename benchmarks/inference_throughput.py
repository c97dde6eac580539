"""Benchmark: the project's batched inference (what batch scoring runs) against a bare inference loop.

Set-up (not timed): a random-init 2D ResNet-50 saved as a model folder (``weights.pt`` and a minimal
model card) and loaded with :func:`pipeline.inference.load_model` (``device="auto"``: on CUDA the
project's bf16 autocast, or fp16, with channels_last weights and pinned host memory; fp32 on a CPU),
and ``--images`` cached model inputs (float32 ``.npy`` of ``--size`` x ``--size``) in a temporary work
folder, as preprocessing leaves them.

Timed (median of ``--repeats``, after a warm-up pass):
1. :func:`pipeline.inference.predict_ensemble` over the cached inputs: reading each array, stacking a
   batch, pinning it, copying it to the device, the forward pass under the project's autocast, softmax
   and the copy back (what ``score_scans`` calls for its ``inference`` phase);
2. a bare loop: the same model on a device-resident batch under ``torch.inference_mode()`` and the same
   autocast, softmax kept on the device (the model part alone).
It prints images/s of both and their ratio, the forward FLOPs per image (FlopCounterMode), achieved
TFLOP/s and MFU against the GPU's datasheet peak (benchmarks/flops.py, or ``--peak-tflops``).

Usage: python benchmarks/inference_throughput.py [--size 224] [--batch-size 64] [--images 1024] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flops import counted_flops, device_line, matmul_tflops, mfu_text, peak_tflops, synchronize  # noqa: E402

from pipeline.inference import LoadedModel, load_model, predict_ensemble  # noqa: E402
from pipeline.layout import ModelFiles, Workdir  # noqa: E402
from pipeline.models import build_resnet50  # noqa: E402
from pipeline.preprocess import PreprocessConfig  # noqa: E402
from pipeline.train.checkpoint import save_checkpoint  # noqa: E402


def write_model(folder: Path, pre: PreprocessConfig) -> Path:
    """A model folder :func:`load_model` reads: random-init weights and the card fields it needs."""
    files = ModelFiles(folder)
    files.root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    save_checkpoint(files.weights, build_resnet50(2).network.state_dict())
    card = {
        "model_id": "inference-benchmark",
        "class_names": ["0", "1"],
        "preprocessing": {"config": asdict(pre)},
        "hyperparameters": {},
    }
    files.card.write_text(json.dumps(card))
    return files.root


def write_inputs(workdir: Path, n: int, size: int) -> pd.DataFrame:
    """``n`` cached model inputs ``(1, size, size)`` float32 and the index rows that name them."""
    wd, rng = Workdir(workdir), np.random.default_rng(0)
    wd.preprocess_cache.mkdir(parents=True, exist_ok=True)
    refs = []
    for i in range(n):
        key = f"bench{i:06d}"
        np.save(wd.cached_input(key), rng.standard_normal((1, size, size), dtype=np.float32))
        refs.append(wd.cached_input_ref(key))
    return pd.DataFrame({"cache_path": refs})


def project_rate(model: LoadedModel, workdir: Path, index: pd.DataFrame, batch: int, repeats: int) -> float:
    predict_ensemble([model], workdir, index.head(batch), batch)  # warm-up (cuDNN autotuning on CUDA)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict_ensemble([model], workdir, index, batch)  # returns host arrays: synchronised
        times.append(time.perf_counter() - start)
    return len(index) / statistics.median(times)


def bare_rate(model: LoadedModel, n: int, batch: int, size: int, repeats: int) -> float:
    dev = model.device
    images = torch.randn(batch, 1, size, size, device=dev.device).to(memory_format=dev.memory_format(2))
    steps = max(1, n // batch)

    def one_pass() -> None:
        with torch.inference_mode(), dev.autocast():
            for _ in range(steps):
                torch.softmax(model.model(images).float(), dim=1)

    one_pass()  # warm-up
    times = []
    for _ in range(repeats):
        synchronize(dev.device)
        start = time.perf_counter()
        one_pass()
        synchronize(dev.device)
        times.append(time.perf_counter() - start)
    return steps * batch / statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="input height = width in pixels")
    parser.add_argument("--batch-size", type=int, default=64, help="predict_ensemble's default is 64")
    parser.add_argument("--images", type=int, default=1024, help="cached inputs scored per timed pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="peak TFLOP/s for MFU (default: the datasheet table in benchmarks/flops.py)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    size, batch = args.size, args.batch_size
    pre = PreprocessConfig(dims=2, input_size=(size, size))
    with tempfile.TemporaryDirectory(prefix="scanlens-inference-bench-") as tmp:
        root = Path(tmp)
        model = load_model(write_model(root / "model", pre), "auto")
        dev = model.device
        print(device_line(dev.device))
        print(f"project device settings: {dev.description}; pinned memory {dev.pin_memory}")
        if dev.device.type != "cuda":
            print("no CUDA device: the project infers in fp32 on a CPU (a dry run of the code path)")
        index = write_inputs(root / "w", args.images, size)
        project = project_rate(model, root / "w", index, batch, args.repeats)
    bare = bare_rate(model, args.images, batch, size, args.repeats)
    sample = torch.randn(2, 1, size, size, device=dev.device)
    with torch.inference_mode():
        flops = counted_flops(lambda: model.model(sample)) / 2
    peak, source = peak_tflops(dev.device, args.peak_tflops)
    measured = matmul_tflops(dev.device, dev.amp_dtype or torch.float32)
    print(
        f"input {size}x{size}, batch {batch}, {args.images} images per pass, median of {args.repeats}; "
        f"{flops / 1e9:.2f} GFLOP per image (forward, FlopCounterMode)"
    )
    print(
        f"peak: {f'{peak:.0f} TFLOP/s' if peak else 'unknown'} ({source}); measured "
        f"{str(dev.amp_dtype or torch.float32).removeprefix('torch.')} matmul here: {measured:.3g} TFLOP/s"
    )
    print(
        f"scanlens predict_ensemble (from cached files): {project:9.1f} images/s, {mfu_text(project, flops, peak, measured)}"
    )
    print(
        f"bare inference loop (device-resident batch):   {bare:9.1f} images/s, {mfu_text(bare, flops, peak, measured)}"
    )
    print(f"ratio project/bare: {project / bare:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
