"""Loading a trained model from its folder, and batched prediction over cached model inputs.

A model folder (``W/models/<model_id>/``) holds ``weights.pt`` (the best state dict) and
``model_card.json``; the card's preprocessing config rebuilds the exact input the model expects.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline.errors import UserInputError
from pipeline.layout import ModelFiles
from pipeline.models import build_classifier
from pipeline.preprocess import PreprocessConfig
from pipeline.train.checkpoint import load_checkpoint
from pipeline.train.device import DeviceSettings, resolve_device

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A model in eval mode with what is needed to feed it: classes (catalogue label values, in the
    order of the output columns), its preprocessing config and the device it sits on."""

    model: nn.Module
    card: dict[str, Any]
    classes: list[int]
    preprocess: PreprocessConfig
    device: DeviceSettings

    @property
    def model_id(self) -> str:
        return str(self.card["model_id"])

    @property
    def tta_flips(self) -> bool:
        """Test-time flips (``TrainConfig.tta_flips``, recorded in the card's hyperparameters)."""
        return bool(self.card["hyperparameters"].get("tta_flips", False))

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities of a batch on the model's device: the mean over the batch and its flip
        along each spatial axis when the model was trained with ``tta_flips``."""
        views = [images]
        if self.tta_flips:
            views += [torch.flip(images, dims=(axis,)) for axis in range(2, images.ndim)]
        outputs = []
        for view in views:
            with self.device.autocast():
                logits = self.model(view)
            outputs.append(torch.softmax(logits.float(), dim=1))
        return torch.stack(outputs).mean(0)


def preprocess_config_from_card(card: dict[str, Any]) -> PreprocessConfig:
    """The :class:`PreprocessConfig` a model card records (lists back to tuples)."""
    saved = card["preprocessing"]["config"]
    known = {f.name for f in fields(PreprocessConfig)}
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in known}
    return PreprocessConfig(**values)


def load_model(model_dir: Path, device: str = "auto") -> LoadedModel:
    """Rebuild the architecture from the card and load ``weights.pt`` (``weights_only=True``)."""
    files = ModelFiles(model_dir)
    card_path, weights_path = files.card, files.weights
    if not card_path.exists() or not weights_path.exists():
        raise UserInputError(f"{model_dir} is not a trained model folder (model_card.json and weights.pt expected)")
    card = json.loads(card_path.read_text())
    pre = preprocess_config_from_card(card)
    hyper = card["hyperparameters"]
    model = build_classifier(
        len(card["class_names"]), pre, None, hyper.get("inflation", "average"), int(hyper.get("depth_kernel", 3))
    ).network
    model.load_state_dict(load_checkpoint(weights_path))
    dev = resolve_device(device)
    # torch's Module.to overloads omit memory_format, which it accepts at runtime
    model = model.to(dev.device, memory_format=dev.memory_format(pre.dims)).eval()  # type: ignore[call-overload]
    return LoadedModel(model, card, [int(c) for c in card["class_names"]], pre, dev)


@dataclass
class MemberPredictions:
    """Each model's (member's) outputs for the rows of a preprocessed index, in row order:
    ``probabilities`` ``(K, n, n_classes)`` softmax (test-time flips applied where the model was
    trained with them) and, when asked for, ``features``: each member's global-pooled penultimate
    features ``(n, F)`` (the input of its ``fc`` layer, of the unflipped image)."""

    probabilities: np.ndarray
    features: list[np.ndarray] | None


def predict_members(
    models: list[LoadedModel],
    workdir: Path,
    index: pd.DataFrame,
    batch_size: int = 64,
    features: bool = False,
    flips: bool = True,
) -> MemberPredictions:
    """One forward pass per batch and member over the rows of a preprocessed index (``cache_path``
    relative to ``workdir``). Each batch of cached inputs is read once and goes through every model;
    with ``features`` a forward pre-hook on each ``fc`` catches its input on the same pass (scoring's
    out-of-distribution check needs both). ``flips`` False skips the test-time flips of models trained
    with them (for callers that need only the features). Labels are not needed."""
    if not models:
        raise ValueError("predict_members needs at least one model")
    if any(m.classes != models[0].classes for m in models):
        raise UserInputError("the models of an ensemble must share their classes and class order")
    heads = [cast(nn.Linear, m.model.get_submodule("fc")) for m in models]
    probs: list[list[np.ndarray]] = [[] for _ in models]
    feats: list[list[np.ndarray]] = [[] for _ in models]
    captured: list[torch.Tensor] = []

    def grab(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        captured.append(args[0].detach().float().flatten(1).cpu())

    hooks = [head.register_forward_pre_hook(grab) for head in heads] if features else []
    paths = [workdir / p for p in index["cache_path"]]
    try:
        with torch.inference_mode():
            for start in range(0, len(paths), batch_size):
                batch = torch.from_numpy(np.stack([np.load(p) for p in paths[start : start + batch_size]]))
                for j, loaded in enumerate(models):
                    dev = loaded.device
                    source = batch.pin_memory() if dev.pin_memory else batch
                    images = source.to(
                        dev.device,
                        non_blocking=dev.non_blocking,
                        memory_format=dev.memory_format(loaded.preprocess.dims),
                    )
                    captured.clear()
                    member = loaded if flips else replace(loaded, card=_without_flips(loaded.card))
                    probs[j].append(member.probabilities(images).cpu().numpy().astype(np.float64))
                    if features:
                        feats[j].append(captured[0].numpy().astype(np.float64))  # the unflipped view
    finally:
        for hook in hooks:
            hook.remove()
    n_classes = len(models[0].classes)
    probabilities = np.stack([np.concatenate(parts) if parts else np.zeros((0, n_classes)) for parts in probs])
    return MemberPredictions(
        probabilities,
        [
            np.concatenate(parts) if parts else np.zeros((0, int(head.in_features)))
            for parts, head in zip(feats, heads, strict=True)
        ]
        if features
        else None,
    )


def _without_flips(card: dict[str, Any]) -> dict[str, Any]:
    return {**card, "hyperparameters": {**card.get("hyperparameters", {}), "tta_flips": False}}


def predict_ensemble(models: list[LoadedModel], workdir: Path, index: pd.DataFrame, batch_size: int = 64) -> np.ndarray:
    """Mean softmax probabilities ``(n, n_classes)`` of ``models`` (one preprocessing, one class order)
    for the rows of a preprocessed index (``cache_path`` relative to ``workdir``), in row order
    (:func:`predict_members`, averaged)."""
    return predict_members(models, workdir, index, batch_size).probabilities.mean(axis=0)


def predict_probabilities(loaded: LoadedModel, workdir: Path, index: pd.DataFrame, batch_size: int = 64) -> np.ndarray:
    """Softmax probabilities ``(n, n_classes)`` of one model (see :func:`predict_ensemble`)."""
    return predict_ensemble([loaded], workdir, index, batch_size)
