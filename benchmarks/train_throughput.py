"""Benchmark: the project's training loop against a bare torch loop with the same model and batch.

Default mode (as `make bench` runs it), in one run:
1. images/s of ScanLens' trainer (cached inputs, seeded augmentation, loss weighting, scheduler,
   logging), on BreastMNIST imported and ingested into a temporary work folder;
2. images/s of a bare loop: the same ResNet-50, batch, input size and optimiser on tensors that
   are already in memory;
and prints their ratio (target >= 0.95), the achieved GFLOP/s (FLOPs of one training step counted
by torch's FlopCounterMode) and an fp32 matmul peak measured here.

``--amp`` mode (what ``benchmarks/gpu_check.sh`` runs at ``--size 224`` on a GPU): the device settings
the project picks (:func:`pipeline.train.device.resolve_device`: on CUDA bf16 autocast, or fp16 with
a GradScaler, channels_last and pinned memory; plain fp32 on a CPU) are timed in
1. a bare fp32 loop (contiguous layout, no autocast; cuDNN's TF32 default for convolutions);
2. a bare loop with the project's precision and layout;
3. the project's training loop, :func:`pipeline.train.loop.train_epoch` with the project's optimiser
   (:func:`build_optimisation`), fed by a DataLoader over in-memory tensors with the project's pinned
   memory and ``--workers`` workers (no disk reads or augmentation: the loop itself);
4. with ``--trainer``, the whole trainer (:func:`pipeline.train.train`) on ingested BreastMNIST
   upsampled to the size: median images/s of its epochs after the first (small data: an epoch
   includes the loader's start-up).
Each line gives images/s, achieved TFLOP/s (images/s x training FLOPs per image counted by
FlopCounterMode, forward and backward) and MFU against the GPU's datasheet peak (benchmarks/flops.py,
or ``--peak-tflops``), and the measured matmul rate in the same precision.

Usage: python benchmarks/train_throughput.py [--input-size 64] [--batch-size 32] [--images 320]
       python benchmarks/train_throughput.py --size 224 --amp [--batch-size 128] [--steps 30] [--workers 8] [--trainer]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flops import counted_flops, device_line, matmul_tflops, mfu_text, peak_tflops, synchronize  # noqa: E402

from pipeline.ingest import IngestConfig, ingest  # noqa: E402
from pipeline.ingest.labels import read_labels  # noqa: E402
from pipeline.io.medmnist import import_medmnist  # noqa: E402
from pipeline.models import build_resnet50  # noqa: E402
from pipeline.preprocess import AugmentConfig, PreprocessConfig  # noqa: E402
from pipeline.train import TrainConfig, train  # noqa: E402
from pipeline.train.device import DeviceSettings, resolve_device  # noqa: E402
from pipeline.train.loop import build_optimisation, train_epoch  # noqa: E402

NPZ = Path(__file__).resolve().parents[1] / "data" / "demo" / "breastmnist.npz"


def step_flops(model: torch.nn.Module, batch: torch.Tensor, labels: torch.Tensor) -> float:
    """FLOPs of one training step's forward and backward pass (FlopCounterMode)."""

    def step() -> None:
        torch.nn.functional.cross_entropy(model(batch), labels).backward()

    flops = counted_flops(step)
    model.zero_grad(set_to_none=True)
    return flops


def training_flops_per_image(size: int, device: torch.device) -> float:
    """Training FLOPs per image at ``size`` x ``size`` (counted on a batch of 2: the count is per image)."""
    model = build_resnet50(2).network.to(device)
    batch = torch.randn(2, 1, size, size, device=device)
    return step_flops(model, batch, torch.zeros(2, dtype=torch.long, device=device)) / 2


def bare_loop(
    size: int,
    batch: int,
    steps: int,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> float:
    """images/s of a plain AdamW loop on one device-resident batch (one warm-up step, then ``steps``);
    fp16 gets a GradScaler as the project's loop does."""
    model = build_resnet50(2).network.to(device, memory_format=memory_format)  # type: ignore[call-overload]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    images = torch.randn(batch, 1, size, size, device=device).to(memory_format=memory_format)
    labels = torch.randint(0, 2, (batch,), device=device)

    def one_step() -> None:
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            loss = torch.nn.functional.cross_entropy(model(images).float(), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    one_step()  # warm-up (cuDNN autotuning on CUDA)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        one_step()
    synchronize(device)
    return steps * batch / (time.perf_counter() - start)


def project_loop(size: int, batch: int, steps: int, dev: DeviceSettings, workers: int) -> float:
    """images/s of :func:`train_epoch` over ``steps`` batches drawn from in-memory tensors, after a
    two-batch warm-up epoch; the network is placed as the trainer places it."""
    torch.manual_seed(0)
    network = build_resnet50(2).network.to(dev.device, memory_format=dev.memory_format(2))  # type: ignore[call-overload]
    pool = min(steps * batch, 8 * batch)
    dataset = TensorDataset(torch.randn(pool, 1, size, size), torch.arange(pool) % 2)

    def loader(n_batches: int) -> DataLoader:
        sampler = RandomSampler(dataset, replacement=True, num_samples=n_batches * batch)
        return DataLoader(
            dataset, batch_size=batch, sampler=sampler, num_workers=workers, pin_memory=dev.pin_memory, drop_last=True
        )

    timed = loader(steps)
    cfg = TrainConfig(epochs=2, batch_size=batch, warmup_epochs=0.0, num_workers=workers)
    opt = build_optimisation(network, dataset.tensors[1], 2, False, cfg, dev, len(timed))
    train_epoch(network, loader(2), opt, dev, 2, 1, "warm-up", False)
    synchronize(dev.device)
    start = time.perf_counter()
    stats = train_epoch(network, timed, opt, dev, 2, 1, "timed", False)
    synchronize(dev.device)
    return stats.seen / (time.perf_counter() - start)


def trainer_rate(size: int, batch: int, images: int, workers: int, augment: bool) -> tuple[float, int]:
    """Median images/s of the trainer's epochs after the first, and its training images per epoch."""
    with tempfile.TemporaryDirectory(prefix="scanlens-train-bench-") as tmp:
        root = Path(tmp)
        labels = import_medmnist(NPZ, root / "src", limit=images, seed=0).labels_path
        ingest(IngestConfig(source=root / "src", workdir=root / "w", labels=labels, secret="bench"))
        n_train = int((read_labels(labels)["split"] == "train").sum())
        config = TrainConfig(epochs=3, batch_size=batch, patience=10, weights=None, device="auto", num_workers=workers)
        result = train(
            root / "w", config, PreprocessConfig(dims=2, input_size=(size, size)), AugmentConfig(enabled=augment)
        )
    rates = sorted(h["images_per_s"] for h in result.history[1:])  # epochs after the first: caches warm
    return rates[len(rates) // 2], n_train


def amp_benchmark(args: argparse.Namespace) -> int:
    """The ``--amp`` mode (see the module docstring)."""
    dev = resolve_device("auto")  # also sets cudnn.benchmark on CUDA, for every loop below
    device, size, batch, steps = dev.device, args.input_size, args.batch_size, args.steps
    print(device_line(device))
    print(f"project device settings: {dev.description}; pinned memory {dev.pin_memory}")
    if device.type != "cuda":
        print(
            "no CUDA device: the project trains in fp32 on a CPU, so every loop below is fp32 (a dry run of the code path)"
        )
    flops = training_flops_per_image(size, device)
    peak, source = peak_tflops(device, args.peak_tflops)
    matmul_dtype = dev.amp_dtype or torch.float32
    measured = matmul_tflops(device, matmul_dtype)
    print(
        f"input {size}x{size}, batch {batch}, {steps} timed steps per loop; "
        f"{flops / 1e9:.2f} GFLOP per image per training step (FlopCounterMode, forward + backward)"
    )
    print(
        f"peak: {f'{peak:.0f} TFLOP/s' if peak else 'unknown'} ({source}); "
        f"measured {str(matmul_dtype).removeprefix('torch.')} matmul here: {measured:.3g} TFLOP/s"
    )
    rows = {"bare fp32 loop": bare_loop(size, batch, steps, device)}
    rows[f"bare loop, {dev.description.split(', ', 1)[1]}"] = bare_loop(
        size, batch, steps, device, dev.amp_dtype, dev.memory_format(2)
    )
    rows["scanlens train_epoch (project loop)"] = project_loop(size, batch, steps, dev, args.workers)
    if args.trainer:
        rate, n_train = trainer_rate(size, batch, args.images, args.workers, not args.no_augment)
        rows[f"scanlens trainer, end to end ({n_train} images/epoch)"] = rate
    width = max(len(k) for k in rows)
    for name, rate in rows.items():
        print(f"{name:<{width}}: {rate:9.1f} images/s, {mfu_text(rate, flops, peak, measured)}")
    values = list(rows.values())
    print(
        f"ratio project loop / bare loop with the same settings: {values[2] / values[1]:.3f} (target >= 0.95: "
        f"{'met' if values[2] / values[1] >= 0.95 else 'NOT met'}); project loop / bare fp32: {values[2] / values[0]:.2f}x"
    )
    return 0


def default_benchmark(args: argparse.Namespace) -> int:
    """The default mode: the trainer on ingested BreastMNIST against a bare loop (see the module docstring)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    size, batch = args.input_size, args.batch_size
    with tempfile.TemporaryDirectory(prefix="scanlens-train-bench-") as tmp:
        root = Path(tmp)
        labels = import_medmnist(NPZ, root / "src", limit=args.images, seed=0).labels_path
        ingest(IngestConfig(source=root / "src", workdir=root / "w", labels=labels, secret="bench"))
        n_train = int((read_labels(labels)["split"] == "train").sum())
        steps = max(2, n_train // batch)
        before = bare_loop(size, batch, steps, device)
        config = TrainConfig(
            epochs=3, batch_size=batch, patience=10, weights=None, device="auto", num_workers=args.workers
        )
        result = train(
            root / "w",
            config,
            PreprocessConfig(dims=2, input_size=(size, size)),
            AugmentConfig(enabled=not args.no_augment),
        )
        after = bare_loop(size, batch, steps, device)
    rates = sorted(h["images_per_s"] for h in result.history[1:])  # epochs after the first: caches warm
    project = rates[len(rates) // 2]
    bare = (before + after) / 2  # the bare loop runs before and after, to even out a noisy machine
    model = build_resnet50(2).network.to(device)
    flops = step_flops(
        model, torch.randn(batch, 1, size, size, device=device), torch.zeros(batch, dtype=torch.long, device=device)
    )
    peak = matmul_tflops(device, torch.float32, n=2048) * 1e3
    achieved = flops / batch * project / 1e9
    print(f"device: {device}; input {size}x{size}, batch {batch}, {n_train} training images per epoch")
    print(f"scanlens training loop: {project:8.1f} images/s")
    print(f"bare torch loop:        {bare:8.1f} images/s (before {before:.1f}, after {after:.1f})")
    print(
        f"ratio project/bare: {project / bare:.3f} (target >= 0.95: {'met' if project / bare >= 0.95 else 'NOT met'})"
    )
    print(
        f"achieved {achieved:.1f} GFLOP/s ({flops / batch / 1e9:.2f} GFLOP per image per step) "
        f"vs fp32 matmul peak {peak:.1f} GFLOP/s here ({100 * achieved / peak:.0f}%)"
    )
    if device.type == "cuda":
        dev = resolve_device("cuda")
        rate = bare_loop(224, batch, 50, device, dev.amp_dtype, dev.memory_format(2))
        print(
            f"CUDA 224x224, AMP + channels_last: {rate:.1f} images/s (`--size 224 --amp` compares the loops, with MFU)"
        )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--input-size",
        "--size",
        dest="input_size",
        type=int,
        default=None,
        help="input height = width in pixels (default 64; 224 with --amp)",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="default 32; 128 with --amp")
    parser.add_argument("--images", type=int, default=320, help="BreastMNIST images per split for the trainer")
    parser.add_argument("--workers", type=int, default=0, help="data-loader worker processes of the project's loops")
    parser.add_argument("--no-augment", action="store_true", help="train without augmentation")
    parser.add_argument(
        "--amp",
        action="store_true",
        help="bare fp32 vs bare and project loops with the project's AMP/channels_last settings, with MFU",
    )
    parser.add_argument("--steps", type=int, default=30, help="timed optimiser steps per loop (--amp)")
    parser.add_argument("--trainer", action="store_true", help="also time the whole trainer end to end (--amp)")
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="peak TFLOP/s for MFU (default: the datasheet table in benchmarks/flops.py)",
    )
    args = parser.parse_args()
    if args.input_size is None:
        args.input_size = 224 if args.amp else 64
    if args.batch_size is None:
        args.batch_size = 128 if args.amp else 32
    logging.basicConfig(level=logging.WARNING)
    return amp_benchmark(args) if args.amp else default_benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
