"""Benchmark: the project's training loop against a bare torch loop with the same model and batch.

In one run it measures
1. images/s of ScanLens' trainer (cached inputs, seeded augmentation, loss weighting, scheduler,
   logging), on BreastMNIST imported and ingested into a temporary work folder;
2. images/s of a bare loop: the same ResNet-50, batch, input size and optimiser on tensors that
   are already in memory;
and prints their ratio (target >= 0.95), the achieved GFLOP/s (FLOPs of one training step counted
by torch's FlopCounterMode) and an fp32 matmul peak measured here. With CUDA it also reports
images/s at 224x224 with AMP and channels_last.

Usage: python benchmarks/train_throughput.py [--input-size 64] [--batch-size 32] [--images 320]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.ingest import IngestConfig, ingest  # noqa: E402
from pipeline.ingest.labels import read_labels  # noqa: E402
from pipeline.io.medmnist import import_medmnist  # noqa: E402
from pipeline.models import build_resnet50  # noqa: E402
from pipeline.preprocess import AugmentConfig, PreprocessConfig  # noqa: E402
from pipeline.train import TrainConfig, train  # noqa: E402

NPZ = Path(__file__).resolve().parents[1] / "data" / "demo" / "breastmnist.npz"


def step_flops(model: torch.nn.Module, batch: torch.Tensor, labels: torch.Tensor) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        torch.nn.functional.cross_entropy(model(batch), labels).backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def bare_loop(size: int, batch: int, n_images: int, device: torch.device, amp: bool = False,
              channels_last: bool = False) -> float:
    model = build_resnet50(2).network.to(device)
    memory = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randn(batch, 1, size, size, device=device).to(memory_format=memory)
    labels = torch.randint(0, 2, (batch,), device=device)
    steps = max(2, n_images // batch)
    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16

    def one_step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    one_step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        one_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def matmul_peak(device: torch.device, n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--images", type=int, default=320, help="training images per epoch for both loops")
    parser.add_argument("--workers", type=int, default=0, help="data-loader worker processes of the trainer")
    parser.add_argument("--no-augment", action="store_true", help="train without augmentation")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    size, batch = args.input_size, args.batch_size
    with tempfile.TemporaryDirectory(prefix="scanlens-train-bench-") as tmp:
        root = Path(tmp)
        labels = import_medmnist(NPZ, root / "src", limit=args.images, seed=0).labels_path
        ingest(IngestConfig(source=root / "src", workdir=root / "w", labels=labels, secret="bench"))
        n_train = int((read_labels(labels)["split"] == "train").sum())
        before = bare_loop(size, batch, n_train, device)
        config = TrainConfig(epochs=3, batch_size=batch, patience=10, weights=None, device="auto", num_workers=args.workers)
        result = train(root / "w", config, PreprocessConfig(dims=2, input_size=(size, size)), AugmentConfig(enabled=not args.no_augment))
        after = bare_loop(size, batch, n_train, device)
    rates = sorted(h["images_per_s"] for h in result.history[1:])  # epochs after the first: caches warm
    project = rates[len(rates) // 2]
    bare = (before + after) / 2  # the bare loop runs before and after, to even out a noisy machine
    model = build_resnet50(2).network.to(device)
    flops = step_flops(model, torch.randn(batch, 1, size, size, device=device), torch.zeros(batch, dtype=torch.long, device=device))
    peak = matmul_peak(device)
    achieved = flops / batch * project / 1e9
    print(f"device: {device}; input {size}x{size}, batch {batch}, {n_train} training images per epoch")
    print(f"scanlens training loop: {project:8.1f} images/s")
    print(f"bare torch loop:        {bare:8.1f} images/s (before {before:.1f}, after {after:.1f})")
    print(f"ratio project/bare: {project / bare:.3f} (target >= 0.95: {'met' if project / bare >= 0.95 else 'NOT met'})")
    print(f"achieved {achieved:.1f} GFLOP/s ({flops / batch / 1e9:.2f} GFLOP per image per step) "
          f"vs fp32 matmul peak {peak:.1f} GFLOP/s here ({100 * achieved / peak:.0f}%)")
    if device.type == "cuda":
        print(f"CUDA 224x224, AMP + channels_last: {bare_loop(224, batch, 50 * batch, device, amp=True, channels_last=True):.1f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
