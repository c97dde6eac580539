"""Data-parallel training on CPU (gloo, two processes, tiny inputs): SyncBatchNorm over gloo, the
equivalence of 2 processes x B/2 with 1 process x B, a killed rank, and resuming a DDP checkpoint in
one process. See docs/training.md for what the equivalence can and cannot promise."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from pipeline.train.checkpoint import load_checkpoint
from pipeline.train.syncbn import GlooSyncBatchNorm, synchronise_batchnorm

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
SCANLENS = [sys.executable, "-m", "pipeline"]


def _copy(tiny_workdir: Path, tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(tiny_workdir, target, ignore=shutil.ignore_patterns("models"))
    return target


def _train(
    workdir: Path, *flags: str, launcher: list[str] = SCANLENS, timeout: float = 600
) -> subprocess.CompletedProcess:
    command = [*launcher, "train", "--workdir", str(workdir), "--dims", "2d", *flags]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def _model_dir(workdir: Path) -> Path:
    (model,) = (workdir / "models").iterdir()
    return model


# --- SyncBatchNorm over gloo -------------------------------------------------------------------


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3),
        nn.BatchNorm2d(4),
        nn.Flatten(),
        nn.LazyLinear(2),
    )


def _sync_worker(rank: int, port: int, images: torch.Tensor, labels: torch.Tensor, out: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        net = synchronise_batchnorm(_net(), cuda=False)
        net(images[:1])  # materialise the lazy layer identically on both ranks
        net = nn.parallel.DistributedDataParallel(net)
        logits = net(images[rank::2])
        nn.functional.cross_entropy(logits, labels[rank::2]).backward()
        grads = {n: p.grad.clone() for n, p in net.module.named_parameters()}
        torch.save({"logits": logits.detach(), "grads": grads}, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_gloo_sync_batchnorm_computes_the_global_batch(tmp_path: Path) -> None:
    """Two processes with half a batch each get the logits and gradients of one process with all of it."""
    torch.manual_seed(1)
    images, labels = torch.randn(8, 1, 8, 8), torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])
    reference = _net()
    reference(images[:1])
    logits = reference(images)
    nn.functional.cross_entropy(logits, labels).backward()
    port = 29400 + os.getpid() % 1000
    mp.start_processes(_sync_worker, args=(port, images, labels, tmp_path), nprocs=2, start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert torch.allclose(ranks[0]["logits"], logits[0::2].detach(), atol=1e-6)
    assert torch.allclose(ranks[1]["logits"], logits[1::2].detach(), atol=1e-6)
    for name, parameter in reference.named_parameters():
        assert torch.allclose(ranks[0]["grads"][name], parameter.grad, rtol=1e-5, atol=1e-7), name
    converted = synchronise_batchnorm(_net(), cuda=False)
    assert sum(isinstance(m, GlooSyncBatchNorm) for m in converted.modules()) == 2
    assert set(converted.state_dict()) == set(_net().state_dict())  # checkpoints load either way


# --- the command line -------------------------------------------------------------------------


def test_a_global_batch_that_does_not_divide_is_refused_before_any_process_starts(tiny_workdir: Path) -> None:
    models = sorted(tiny_workdir.glob("models/*"))  # the session's folder: other tests may have left models
    started = time.monotonic()
    run = _train(tiny_workdir, "--nproc-per-node", "2", "--batch-size", "5", timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == (
        "scanlens: error: --batch-size 5 is the global batch and must divide by the 2 processes (use 4 or 6)"
    )
    assert time.monotonic() - started < 60 and sorted(tiny_workdir.glob("models/*")) == models


@pytest.mark.slow
def test_two_processes_with_half_the_batch_train_what_one_process_trains(tiny_workdir: Path, tmp_path: Path) -> None:
    """2 processes x batch 2 against 1 process x batch 4, 6 optimiser steps, deterministic, no augmentation.

    BatchNorm: SyncBatchNorm (--sync-bn) in both runs, so every BatchNorm layer normalises with the
    statistics of the global batch of 4. The one-process run is started under torchrun as a world of
    one, so both runs use the same BatchNorm arithmetic (the process group's) and, with --deterministic,
    the same image-by-image convolution kernels: the first step's loss agrees to 1e-6. What remains is
    the order in which gradients are summed (1e-7 relative), which Adam turns into full-size steps
    wherever a gradient is near zero; hence the small learning rate (docs/training.md).
    """
    one, two = _copy(tiny_workdir, tmp_path, "one"), _copy(tiny_workdir, tmp_path, "two")
    flags = [
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--input-size",
        "64",
        "--lr",
        "1e-5",
        "--patience",
        "10",
        "--deterministic",
        "--no-augment",
        "--sync-bn",
    ]
    single = _train(one, *flags, launcher=[*TORCHRUN, "--nproc-per-node", "1", "-m", "pipeline"])
    assert single.returncode == 0, single.stderr[-2000:]
    double = _train(two, *flags, "--nproc-per-node", "2")
    assert double.returncode == 0, double.stderr[-2000:]
    assert _model_dir(one).name == _model_dir(two).name  # the world size is not part of the model's identity
    a, b = load_checkpoint(_model_dir(one) / "checkpoint.pt"), load_checkpoint(_model_dir(two) / "checkpoint.pt")
    assert a["loop"]["step"] == b["loop"]["step"] == 6
    names = [k for k, v in a["model"].items() if v.is_floating_point() and "running_" not in k]
    diff = sum(float((a["model"][k].double() - b["model"][k].double()).norm()) ** 2 for k in names) ** 0.5
    norm = sum(float(a["model"][k].double().norm()) ** 2 for k in names) ** 0.5
    assert diff / norm < 1e-4, f"weights differ by {diff / norm:.3g} relative"
    first = a["loop"]["history"][0]["train_loss"], b["loop"]["history"][0]["train_loss"]
    assert abs(first[0] - first[1]) / first[0] < 1e-4, first
    cards = [json.loads((_model_dir(w) / "model_card.json").read_text())["distributed"] for w in (one, two)]
    assert cards[0] == {
        "world_size": 1,
        "backend": "gloo",
        "devices": ["cpu"],
        "per_rank_batch": 4,
        "global_batch": 4,
        "sync_bn": True,
    }
    assert cards[1] == {
        "world_size": 2,
        "backend": "gloo",
        "devices": ["cpu", "cpu"],
        "per_rank_batch": 2,
        "global_batch": 4,
        "sync_bn": True,
    }


def _rank_process(launcher: subprocess.Popen, rank: str) -> psutil.Process | None:
    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if child.environ().get("RANK") == rank and "pipeline" in " ".join(child.cmdline()):
                return child
        except psutil.Error:
            continue
    return None


@pytest.mark.slow
def test_a_killed_rank_stops_the_run_and_one_process_resumes_its_checkpoint(tiny_workdir: Path, tmp_path: Path) -> None:
    workdir = _copy(tiny_workdir, tmp_path, "killed")
    flags = ["--epochs", "4", "--batch-size", "4", "--input-size", "16", "--patience", "20", "--no-sync-bn"]
    command = [*SCANLENS, "train", "--workdir", str(workdir), "--dims", "2d", *flags, "--nproc-per-node", "2"]
    launcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not list(workdir.glob("models/*/checkpoint.pt")) and launcher.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.2)
        victim = _rank_process(launcher, "1")
        assert victim is not None and launcher.poll() is None, "the run ended before a rank could be killed"
        victim.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        _, stderr = launcher.communicate(timeout=120)
        stopped_after = time.monotonic() - killed
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode != 0
    assert stopped_after < 60, f"the run took {stopped_after:.0f} s to stop"
    assert stderr.strip().splitlines()[-1] == (
        "scanlens: error: training process rank 1 of 2 failed (killed by SIGKILL); the others were stopped; "
        "the last checkpoint is kept: rerun with --resume"
    )
    saved = load_checkpoint(_model_dir(workdir) / "checkpoint.pt")  # readable: written atomically
    assert 1 <= saved["loop"]["epoch"] < 4
    resumed = _train(workdir, *flags, "--resume")  # one process, no torchrun
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming {_model_dir(workdir).name} after epoch {saved['loop']['epoch']}" in resumed.stderr
    card = json.loads((_model_dir(workdir) / "model_card.json").read_text())
    assert card["training_complete"] and card["validation"]["epochs_run"] == 4
    assert card["distributed"]["world_size"] == 1 and card["distributed"]["backend"] is None
    history = json.loads((_model_dir(workdir) / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, 5))
