"""`to_argv` is the inverse of the generated flags: settings -> flags -> parser -> `from_args` gives them back."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from pipeline.cli import _parser, training_configs
from pipeline.settings import specs
from pipeline.settings.augment import AugmentConfig
from pipeline.settings.cli import add_settings, from_args, to_argv
from pipeline.settings.distributed import DistributedSettings
from pipeline.settings.evaluate import EvaluationSettings
from pipeline.settings.preprocess import PreprocessSettings
from pipeline.settings.train import TrainConfig

#: Every training group with every flag-exposed setting away from its default (so each flag is exercised).
CHANGED: list[Any] = [
    PreprocessSettings(
        input_size=16, target_spacing_mm=1.5, intensity="minmax", ct_window="40,400", slice_strategy="2.5d"
    ),
    TrainConfig(
        epochs=2,
        batch_size=3,
        lr=3e-4,
        backbone_lr_factor=0.25,
        weight_decay=0.0,
        warmup_epochs=0.5,
        head_only_epochs=1,
        patience=7,
        grad_accumulation=2,
        class_weighting=False,
        label_smoothing=0.1,
        ema_decay=0.99,
        head_dropout=0.25,
        tta_flips=False,
        weights="imagenet",
        inflation="centre",
        depth_kernel=1,
        device="cpu",
        seed=5,
        deterministic=True,
        num_workers=2,
        val_fraction=1 / 3,
    ),
    AugmentConfig(
        enabled=False,
        flip_prob=0.1,
        affine_prob=0.2,
        rotate_degrees=5.5,
        scale=0.05,
        intensity_prob=0.3,
        intensity_scale=0.2,
        intensity_shift=1e-7,
    ),
    DistributedSettings(nproc_per_node=2, sync_bn=False, collective_timeout=12.5),
]


def _round_trip(*settings: Any, profile: str = "default") -> list[Any]:
    parser = argparse.ArgumentParser()
    add_settings(parser, *(type(s) for s in settings), profile=profile)
    args = parser.parse_args(to_argv(*settings, profile=profile))
    return [from_args(type(s), args, profile) for s in settings]


def test_every_training_setting_is_changed_above() -> None:
    for obj in CHANGED:
        defaults = {spec.name: spec.default for spec in specs(type(obj))}
        assert all(getattr(obj, name) != default for name, default in defaults.items()), type(obj).__name__


@pytest.mark.parametrize("obj", CHANGED, ids=lambda o: type(o).__name__)
def test_each_group_round_trips(obj: Any) -> None:
    assert _round_trip(obj) == [obj]
    assert _round_trip(type(obj)()) == [type(obj)()]  # the defaults: no flags at all
    assert to_argv(type(obj)()) == []


def test_the_train_command_rebuilds_the_training_settings() -> None:
    pre, cfg, aug, dist = CHANGED
    args = _parser().parse_args(["train", "--workdir", "w", "--dims", "3d", *to_argv(pre, cfg, aug, dist)])
    assert training_configs(args) == (cfg, pre.for_dims(3), aug)
    assert from_args(DistributedSettings, args) == dist
    assert from_args(PreprocessSettings, args) == pre


def test_booleans_none_and_tuples() -> None:
    assert to_argv(DistributedSettings(sync_bn=True)) == ["--sync-bn"]
    assert to_argv(DistributedSettings(sync_bn=False)) == ["--no-sync-bn"]
    assert _round_trip(DistributedSettings(sync_bn=True)) == [DistributedSettings(sync_bn=True)]
    for subgroups in ((), ("manufacturer", "sex"), ("manufacturer",)):
        settings = EvaluationSettings(subgroups=subgroups)
        assert _round_trip(settings) == [settings]
    with pytest.raises(ValueError, match="commas"):
        to_argv(EvaluationSettings(subgroups=("a,b",)))


def test_other_profiles_and_what_flags_cannot_say() -> None:
    demo = PreprocessSettings(input_size=48)
    assert to_argv(demo, profile="demo") == ["--input-size=48"]
    assert _round_trip(demo, profile="demo") == [demo]
    assert to_argv(PreprocessSettings(input_size=28), profile="demo") == []  # the demo profile's default
    with pytest.raises(ValueError, match="None"):  # demo's default is 28: a flag cannot bring None back
        to_argv(PreprocessSettings(), profile="demo")
    with pytest.raises(ValueError, match="--seed"):  # one flag feeds both groups
        to_argv(TrainConfig(seed=1), EvaluationSettings(seed=2))
