"""Scoring's inference on CUDA (marker ``cuda``): a model loaded with ``device="cuda"`` sits on the GPU
in channels_last, and :func:`pipeline.inference.predict_ensemble` (what ``score_scans`` calls) runs it
under autocast and gives the CPU model's probabilities within the autocast dtype's precision.

Each test skips without a CUDA device. ``bash benchmarks/gpu_check.sh`` runs them on a GPU machine.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.inference import load_model, predict_ensemble, predict_probabilities
from pipeline.preprocess import AugmentConfig, PreprocessConfig, preprocess_catalog
from pipeline.train import TrainConfig, train

NO_CUDA = "no CUDA device (torch.cuda.is_available() is False): run benchmarks/gpu_check.sh on a GPU machine"
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)]

PRE_2D = PreprocessConfig(dims=2, input_size=(32, 32))


def test_cuda_inference_autocasts_and_agrees_with_cpu(tiny_workdir: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "w"
    shutil.copytree(tiny_workdir, workdir, ignore=shutil.ignore_patterns("models"))
    trained = train(workdir, TrainConfig(epochs=1, batch_size=8, device="cuda"), PRE_2D, AugmentConfig(enabled=False))
    gpu, cpu = load_model(trained.model_dir, "cuda"), load_model(trained.model_dir, "cpu")
    assert gpu.device.device.type == "cuda" and gpu.device.amp_dtype in (torch.bfloat16, torch.float16)
    assert gpu.device.pin_memory and all(p.is_cuda for p in gpu.model.parameters())
    convs = [p for p in gpu.model.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert not gpu.model.training  # eval mode: BatchNorm uses its running statistics

    index = preprocess_catalog(workdir, PRE_2D).index
    seen: list[tuple[torch.dtype, str]] = []
    hook = gpu.model.fc.register_forward_hook(lambda _m, _i, out: seen.append((out.dtype, out.device.type)))
    try:
        on_gpu = predict_ensemble([gpu], workdir, index, batch_size=8)
    finally:
        hook.remove()
    on_cpu = predict_probabilities(cpu, workdir, index, batch_size=8)
    assert seen and set(seen) == {(gpu.device.amp_dtype, "cuda")}  # the head ran under autocast, on the GPU
    assert on_gpu.shape == on_cpu.shape == (len(index), 2) and on_gpu.dtype == np.float64
    assert np.isfinite(on_gpu).all() and np.allclose(on_gpu.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(on_gpu - on_cpu).max() < 0.05  # reduced-precision logits, same model
    clear = np.abs(on_cpu[:, 1] - 0.5) > 0.1
    assert (np.argmax(on_gpu[clear], axis=1) == np.argmax(on_cpu[clear], axis=1)).all()
