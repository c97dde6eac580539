"""Training on CUDA (marker ``cuda``): device resolution, AMP in bf16 and fp16 (with its GradScaler),
channels_last weights, pinned loader memory through the trainer, and DDP with NCCL on one GPU under torchrun.

Each test skips without a CUDA device. ``bash benchmarks/gpu_check.sh`` runs them on a GPU machine
(``pytest -m cuda``); see docs/benchmarks.md.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from pipeline.layout import Workdir
from pipeline.models import build_resnet50
from pipeline.preprocess import AugmentConfig, PreprocessConfig
from pipeline.train import TrainConfig, train
from pipeline.train.device import DeviceSettings, resolve_device
from pipeline.train.loop import build_optimisation, train_epoch

NO_CUDA = "no CUDA device (torch.cuda.is_available() is False): run benchmarks/gpu_check.sh on a GPU machine"
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)]

PRE_2D = PreprocessConfig(dims=2, input_size=(32, 32))
AMP_DTYPES = [
    pytest.param(torch.bfloat16, id="bf16"),
    pytest.param(torch.float16, id="fp16"),
]


def _copy(tiny_workdir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "w"
    shutil.copytree(tiny_workdir, target, ignore=shutil.ignore_patterns("models"))
    return target


def _network(dev: DeviceSettings) -> torch.nn.Module:
    """A random-init 2D ResNet-50 placed as the trainer places it (device and memory format)."""
    torch.manual_seed(0)
    # torch's Module.to overloads omit memory_format, which it accepts at runtime
    return build_resnet50(2).network.to(dev.device, memory_format=dev.memory_format(2))


def _loader(dev: DeviceSettings, images: torch.Tensor, labels: torch.Tensor, batch: int = 8) -> DataLoader:
    return DataLoader(TensorDataset(images, labels), batch_size=batch, pin_memory=dev.pin_memory, drop_last=True)


def _is_channels_last(network: torch.nn.Module) -> bool:
    """Every 4D weight (the convolutions) is laid out channels_last."""
    convs = [p for p in network.parameters() if p.dim() == 4]
    return bool(convs) and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)


def test_resolve_device_cuda_turns_on_amp_channels_last_and_pinned_memory() -> None:
    try:
        dev = resolve_device("cuda")
        assert dev.device.type == "cuda" and dev.channels_last and dev.pin_memory and dev.non_blocking
        expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        assert dev.amp_dtype == expected and dev.needs_scaler == (expected == torch.float16)
        assert dev.memory_format(2) == torch.channels_last and dev.memory_format(3) == torch.channels_last_3d
        assert torch.cuda.get_device_name(dev.device) in dev.description and "autocast" in dev.description
        assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
        deterministic = resolve_device("cuda", deterministic=True)
        assert deterministic.device.type == "cuda" and torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    finally:
        resolve_device("cuda")  # back to the default: non-deterministic, cudnn.benchmark on
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.parametrize("dtype", AMP_DTYPES)
def test_train_epoch_under_autocast_learns_in_fp32_master_weights(dtype: torch.dtype) -> None:
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip(f"{torch.cuda.get_device_name(0)} does not support bf16")
    dev = replace(resolve_device("cuda"), amp_dtype=dtype)
    network = _network(dev)
    assert _is_channels_last(network)
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.randn(128, 1, 32, 32, generator=generator), torch.arange(128) % 2
    loader = _loader(dev, images, labels)
    opt = build_optimisation(network, labels, 2, False, TrainConfig(epochs=1, batch_size=8), dev, len(loader))
    assert opt.scaler.is_enabled() == (dtype == torch.float16)
    head_before, scale_before = network.fc.weight.detach().clone(), opt.scaler.get_scale()
    seen: list[tuple[torch.dtype, str]] = []
    hook = network.fc.register_forward_hook(lambda _m, _i, out: seen.append((out.dtype, out.device.type)))
    try:
        stats = train_epoch(network, loader, opt, dev, 2, 1, "cuda amp test", False)
    finally:
        hook.remove()
    assert math.isfinite(stats.train_loss) and stats.seen == 128 and stats.steps == 16
    assert seen == [(dtype, "cuda")] * 16  # the head ran in the autocast dtype on every batch
    assert all(p.dtype == torch.float32 and p.is_cuda for p in network.parameters())  # fp32 master weights
    assert _is_channels_last(network)  # the optimiser kept the layout
    assert not torch.equal(network.fc.weight, head_before)
    if dtype == torch.float16:
        # the scaler starts at 2**16 and halves at every step whose gradients overflow, skipping that
        # step (its growth interval, 2000 steps, is not reached): some steps were skipped, not all
        skipped = round(math.log2(scale_before / opt.scaler.get_scale()))
        assert 0 <= skipped < stats.steps


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before `optimizer.step\\(\\)`")
def test_fp16_grad_scaler_skips_a_step_whose_gradients_overflow() -> None:
    """A batch whose gradients are not finite must not reach the weights: the loop steps through the
    GradScaler, which skips that step and halves its scale (a bare ``optimizer.step`` would write NaN)."""
    dev = replace(resolve_device("cuda"), amp_dtype=torch.float16)
    network = _network(dev)
    images, labels = torch.full((8, 1, 32, 32), float("nan")), torch.arange(8) % 2
    loader = _loader(dev, images, labels)
    opt = build_optimisation(network, labels, 2, False, TrainConfig(epochs=1, batch_size=8), dev, len(loader))
    weights_before = {name: p.detach().clone() for name, p in network.named_parameters()}
    scale_before = opt.scaler.get_scale()
    stats = train_epoch(network, loader, opt, dev, 2, 1, "cuda fp16 overflow test", False)
    assert math.isnan(stats.train_loss) and stats.steps == 1
    assert all(torch.equal(p, weights_before[name]) for name, p in network.named_parameters())
    assert opt.scaler.get_scale() == scale_before * opt.scaler.get_backoff_factor()


def test_trainer_on_cuda_pins_batches_and_trains_channels_last(
    tiny_workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipeline.train.trainer as trainer

    real_epoch = trainer.train_epoch
    observed: dict[str, Any] = {}

    def spy(network: torch.nn.Module, loader: DataLoader, *args: Any, **kwargs: Any) -> Any:
        images, _ = next(iter(loader))
        plain = network.module if hasattr(network, "module") else network
        observed.update(
            pin_memory=loader.pin_memory,
            pinned=images.is_pinned(),
            on_cuda=all(p.is_cuda for p in plain.parameters()),
            channels_last=_is_channels_last(plain),
        )
        return real_epoch(network, loader, *args, **kwargs)

    monkeypatch.setattr(trainer, "train_epoch", spy)
    workdir = _copy(tiny_workdir, tmp_path)
    result = train(workdir, TrainConfig(epochs=1, batch_size=8, device="cuda"), PRE_2D, AugmentConfig(enabled=False))
    assert observed == {"pin_memory": True, "pinned": True, "on_cuda": True, "channels_last": True}
    assert torch.cuda.get_device_name(0) in result.card["device"] and "autocast" in result.card["device"]
    assert math.isfinite(result.history[0]["train_loss"]) and math.isfinite(result.history[0]["val_loss"])
    assert Workdir(workdir).model(result.card["model_id"]).weights.exists()


@pytest.mark.slow
def test_ddp_with_nccl_on_one_gpu_under_torchrun(tiny_workdir: Path, tmp_path: Path) -> None:
    """``torchrun --standalone --nproc-per-node 1 -m pipeline train ... --device cuda``: one NCCL rank,
    recorded in the model card."""
    workdir = _copy(tiny_workdir, tmp_path)
    command = [sys.executable, "-m", "torch.distributed.run", *"--standalone --nproc-per-node 1".split(),
               *"-m pipeline train --workdir".split(), str(workdir),
               *"--dims 2d --epochs 1 --batch-size 8 --input-size 32 --device cuda".split()]  # fmt: skip
    paths = [str(Path(__file__).resolve().parents[3]), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    run = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    model_ids = Workdir(workdir).model_ids()
    assert len(model_ids) == 1
    card = json.loads(Workdir(workdir).model(model_ids[0]).card.read_text())
    distributed = card["distributed"]
    assert distributed["world_size"] == 1 and distributed["backend"] == "nccl"
    assert len(distributed["devices"]) == 1 and str(distributed["devices"][0]).startswith("cuda")
    assert distributed["per_rank_batch"] == distributed["global_batch"] == 8
    assert distributed["sync_bn"] is False  # 2D default
    assert card["training_complete"] and torch.cuda.get_device_name(0) in card["device"]
