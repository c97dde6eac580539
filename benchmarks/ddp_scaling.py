"""Benchmark: data-parallel training throughput, 1 process against 2 processes (torchrun, gloo on CPU).

Ingests N BreastMNIST images into a scratch work folder, then trains the same ResNet-50 three ways
through the real command line, in one run: one process using every core (the baseline), one
process with one thread per process's share of the cores, and ``--nproc-per-node 2``. Each
training's images/s is that of its last epoch (the model card's history; the first epoch pays for
start-up). Scaling efficiency = images/s of N processes / (N x images/s of one process with the
same threads per process); the speed-up is against the all-cores baseline. No targets: on a
2-core machine two processes cannot beat one process that already uses both cores.

Usage: python benchmarks/ddp_scaling.py [--images N] [--size PX] [--batch B] [--epochs E]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.demo import DemoArchive, prepare_demo_source  # noqa: E402
from pipeline.ingest import IngestConfig, ingest  # noqa: E402


def train(workdir: Path, args: argparse.Namespace, nproc: int, threads: int) -> float:
    """Images/s of the last epoch of one training (its own model folder is removed first)."""
    for model in (workdir / "models").glob("*"):
        subprocess.run(["rm", "-rf", str(model)], check=True)
    command = [sys.executable, "-m", "pipeline", "train", "--workdir", str(workdir), "--dims", "2d",
               "--epochs", str(args.epochs), "--batch-size", str(args.batch), "--input-size", str(args.size),
               "--patience", str(args.epochs + 1), "--no-augment", "--no-sync-bn", "--nproc-per-node", str(nproc)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"training failed ({nproc} processes): {done.stderr.strip().splitlines()[-1]}")
    (model,) = (workdir / "models").iterdir()
    history = json.loads((model / "history.json").read_text())
    return float(history[-1]["images_per_s"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96, help="BreastMNIST images per split (default 96)")
    parser.add_argument("--size", type=int, default=64, help="input size in pixels (default 64)")
    parser.add_argument("--batch", type=int, default=16, help="global batch (default 16)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per training (default 2)")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="scanlens-ddp-") as scratch:
        root = Path(scratch)
        source = prepare_demo_source(
            [DemoArchive(REPO / "data" / "demo" / "breastmnist.npz", args.images)],
            root / "source", root / "labels.csv", seed=3,
        )
        workdir = root / "w"
        ingest(IngestConfig(source=source.folder, workdir=workdir, labels=source.labels, secret="bench"))
        baseline = train(workdir, args, 1, cores)
        single = train(workdir, args, 1, max(1, cores // 2))
        double = train(workdir, args, 2, max(1, cores // 2))
    print(f"ResNet-50 2D at {args.size} px, global batch {args.batch}, {args.images} training images, {cores} cores (gloo)")
    print(f"1 process  x {cores} threads : {baseline:7.1f} images/s   (baseline)")
    print(f"1 process  x {max(1, cores // 2)} threads : {single:7.1f} images/s")
    print(f"2 processes x {max(1, cores // 2)} threads: {double:7.1f} images/s")
    print(f"scaling efficiency (2 processes vs 2 x 1 process, same threads each): {double / (2 * single):.2f}")
    print(f"speed-up over the all-cores baseline: {double / baseline:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
