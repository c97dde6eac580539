"""The recipe's levers: label smoothing, the EMA of the weights, head dropout and test-time flips."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pipeline.inference import LoadedModel
from pipeline.models import add_head_dropout, build_resnet50
from pipeline.preprocess import AugmentConfig, PreprocessConfig
from pipeline.train import TrainConfig, train
from pipeline.train.checkpoint import load_checkpoint
from pipeline.train.device import resolve_device
from pipeline.train.loop import build_optimisation, train_epoch

PRE_2D = PreprocessConfig(dims=2, input_size=(16, 16))


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 3)
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.body(x.flatten(1))))


def _steps(cfg: TrainConfig, n_batches: int = 2) -> tuple[nn.Module, list[dict[str, torch.Tensor]], object]:
    """Train ``_Tiny`` for one epoch of ``n_batches`` one-image batches; the weights after each step."""
    torch.manual_seed(0)
    network = _Tiny()
    images, labels = torch.randn(n_batches, 1, 2, 2), torch.tensor([0, 1] * (n_batches // 2))
    loader = DataLoader(TensorDataset(images, labels), batch_size=1)
    dev = resolve_device("cpu")
    opt = build_optimisation(network, labels, 2, False, cfg, dev, len(loader))
    after: list[dict[str, torch.Tensor]] = []
    original_step = opt.scheduler.step

    def recording_step() -> None:
        original_step()
        after.append({k: v.detach().clone() for k, v in network.state_dict().items()})

    opt.scheduler.step = recording_step  # type: ignore[method-assign]
    train_epoch(network, loader, opt, dev, 2, 1, "test", progress=False)
    return network, after, opt


def test_ema_is_the_decayed_average_of_the_weights_after_each_step() -> None:
    _, after, opt = _steps(TrainConfig(epochs=1, batch_size=1, ema_decay=0.75, warmup_epochs=0))
    ema = opt.ema.module.state_dict()  # type: ignore[attr-defined]
    for key in ("body.weight", "fc.bias"):
        expected = 0.75 * after[0][key] + 0.25 * after[1][key]  # the first update copies the weights
        assert torch.allclose(ema[key], expected, atol=1e-6)
        assert not torch.allclose(ema[key], after[1][key])
    assert opt.evaluated(nn.Identity()) is opt.ema.module  # type: ignore[attr-defined]


def test_without_ema_validation_reads_the_trained_network() -> None:
    network, _, opt = _steps(TrainConfig(epochs=1, batch_size=1, warmup_epochs=0))
    assert opt.ema is None and opt.evaluated(network) is network  # type: ignore[attr-defined]


def test_label_smoothing_penalises_confident_correct_logits() -> None:
    network = _Tiny()
    dev = resolve_device("cpu")
    labels = torch.tensor([0, 1])
    logits = torch.tensor([[8.0, -8.0], [-8.0, 8.0]])
    hard = build_optimisation(network, labels, 2, False, TrainConfig(), dev, 1)
    smooth = build_optimisation(network, labels, 2, False, TrainConfig(label_smoothing=0.2), dev, 1)
    expected = F.cross_entropy(logits, labels, label_smoothing=0.2)
    assert float(hard.training_loss(logits, labels)) < 1e-6
    assert torch.isclose(smooth.training_loss(logits, labels), expected)


def test_head_dropout_acts_in_training_only_and_keeps_the_state_dict_keys() -> None:
    torch.manual_seed(0)
    plain = build_resnet50(2).network
    keys = list(plain.state_dict())
    add_head_dropout(plain, 0.5)
    assert list(plain.state_dict()) == keys
    features = torch.ones(4, 2048)
    plain.train()
    assert not torch.equal(plain.fc(features), plain.fc(features))
    plain.eval()
    assert torch.equal(plain.fc(features), plain.fc(features))


def test_test_time_flips_average_the_image_and_its_flips() -> None:
    torch.manual_seed(0)
    network = build_resnet50(2).network.eval()
    image = torch.randn(2, 1, 16, 16)
    card = {"hyperparameters": {"tta_flips": True}, "model_id": "m"}
    loaded = LoadedModel(network, card, [0, 1], PRE_2D, resolve_device("cpu"))
    with torch.no_grad():
        views = [image, image.flip(2), image.flip(3)]
        expected = torch.stack([torch.softmax(network(v), 1) for v in views]).mean(0)
        assert torch.allclose(loaded.probabilities(image), expected, atol=1e-6)
        card["hyperparameters"]["tta_flips"] = False
        assert torch.allclose(loaded.probabilities(image), torch.softmax(network(image), 1), atol=1e-6)


def test_ema_training_saves_the_average_and_resumes_exactly(tiny_workdir: Path, tmp_path: Path) -> None:
    straight, split = tmp_path / "straight", tmp_path / "split"
    for target in (straight, split):
        shutil.copytree(tiny_workdir, target, ignore=shutil.ignore_patterns("models"))
    config = TrainConfig(epochs=2, batch_size=4, deterministic=True, patience=10, ema_decay=0.9, head_dropout=0.2)
    full = train(straight, config, PRE_2D, AugmentConfig(enabled=False))
    train(split, config, PRE_2D, AugmentConfig(enabled=False), stop_after=1)
    resumed = train(split, config, PRE_2D, AugmentConfig(enabled=False), resume=True)
    a, b = load_checkpoint(full.model_dir / "checkpoint.pt"), load_checkpoint(resumed.model_dir / "checkpoint.pt")
    assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])
    best = full.card["validation"]["best_epoch"]
    weights = load_checkpoint(full.model_dir / "weights.pt")
    if best == 2:  # the last epoch's weights are the EMA's, not the raw network's
        averaged = {k.removeprefix("module."): v for k, v in a["ema"].items() if k.startswith("module.")}
        assert all(torch.equal(weights[k], averaged[k]) for k in weights)
        assert any(not torch.equal(weights[k], a["model"][k]) for k in weights if weights[k].is_floating_point())
    assert full.card["hyperparameters"]["ema_decay"] == 0.9
