"""One declaration per setting: every settings field has its CLI flag and its Dagster config field,
with the same default, except the few exceptions listed (and justified) here."""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
from typing import Any

import pytest

import pipeline.settings
from assets.drift import ScoreDriftConfig
from assets.evaluation import CVEvaluationConfig, CVFoldsConfig
from assets.ingest import ScanCatalogConfig
from assets.interpretability import SaliencyConfig
from assets.pacs import PacsConnection
from assets.scoring import ScanScoresConfig
from assets.training import ModelInputConfig, TrainedModelConfig
from pipeline.cli import _parser
from pipeline.settings import PROFILES, profile_defaults, specs
from pipeline.settings.augment import AugmentConfig
from pipeline.settings.distributed import DistributedSettings
from pipeline.settings.drift import DriftSettings
from pipeline.settings.cli import from_args
from pipeline.settings.evaluate import CVSettings, EvaluationSettings
from pipeline.settings.explain import AttributionConfig, ExplainSettings
from pipeline.settings.ingest import IngestSettings
from pipeline.settings.pacs import PacsAuthSettings, PacsSendSettings
from pipeline.settings.preprocess import PreprocessSettings
from pipeline.settings.score import ScoreSettings
from pipeline.settings.train import TrainConfig

#: Each settings group: the commands that take its flags, and the asset configs that hold its fields.
WHERE: dict[type, tuple[tuple[str, ...], tuple[type, ...]]] = {
    IngestSettings: (("ingest",), (ScanCatalogConfig,)),
    PreprocessSettings: (("train", "evaluate"), (ModelInputConfig, TrainedModelConfig)),
    TrainConfig: (("train", "evaluate"), (TrainedModelConfig,)),
    AugmentConfig: (("train", "evaluate"), (TrainedModelConfig,)),
    DistributedSettings: (("train", "evaluate"), (TrainedModelConfig,)),
    CVSettings: (("evaluate",), (CVFoldsConfig,)),
    EvaluationSettings: (("evaluate",), (CVEvaluationConfig,)),
    ExplainSettings: (("explain",), (SaliencyConfig,)),
    AttributionConfig: (("explain",), (SaliencyConfig,)),
    ScoreSettings: (("score",), (ScanScoresConfig,)),
    DriftSettings: (("drift",), (ScoreDriftConfig,)),
    PacsAuthSettings: (("score", "fetch"), (PacsConnection,)),
    PacsSendSettings: (("score",), (PacsConnection,)),
}
#: Settings that are deliberately not on both sides, and why.
EXCEPTIONS = {
    (CVSettings, "n_folds"): "Dagster: K is the number of fold_models partitions ($SCANLENS_CV_FOLDS)",
    (CVSettings, "dims"): "the model kind: --dims on the CLI, model_kind on cv_folds (compared below)",
}


def _groups_declared() -> set[type]:
    found = set()
    for module in pkgutil.iter_modules(pipeline.settings.__path__):
        mod = importlib.import_module(f"pipeline.settings.{module.name}")
        for _, obj in inspect.getmembers(mod, inspect.isclass):
            if obj.__module__ == mod.__name__ and specs(obj):
                found.add(obj)
    return found


def _subcommand(name: str) -> argparse.ArgumentParser:
    parser = _parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _flag(parser: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    return next((a for a in parser._actions if flag in a.option_strings), None)


def _same(a: Any, b: Any) -> bool:
    norm = (lambda v: list(v) if isinstance(v, (tuple, list)) else v)
    return norm(a) == norm(b)


def test_every_settings_group_is_mapped() -> None:
    assert _groups_declared() == set(WHERE)


@pytest.mark.parametrize("group", list(WHERE), ids=lambda g: g.__name__)
def test_each_setting_has_its_flag_and_its_config_field_with_one_default(group: type) -> None:
    commands, configs = WHERE[group]
    problems = []
    for spec in specs(group):
        if (group, spec.name) in EXCEPTIONS:
            assert not (spec.cli and spec.asset), f"{spec.name} is listed as an exception but is on both sides"
            continue
        if not (spec.cli and spec.asset):
            problems.append(f"{spec.name}: not exposed on both sides and not a listed exception")
            continue
        for command in commands:
            action = _flag(_subcommand(command), spec.flag)
            if action is None:
                problems.append(f"scanlens {command} has no {spec.flag}")
            elif not _same(action.default, spec.default):
                problems.append(f"scanlens {command} {spec.flag} defaults to {action.default!r}, not {spec.default!r}")
            elif spec.help not in (action.help or ""):
                problems.append(f"scanlens {command} {spec.flag}: help is not the declaration's")
        for config in configs:
            field = config.model_fields.get(spec.public)
            if field is None:
                problems.append(f"{config.__name__} has no field {spec.public}")
            elif not _same(field.default, spec.default):
                problems.append(f"{config.__name__}.{spec.public} defaults to {field.default!r}, not {spec.default!r}")
            elif field.description != spec.help:
                problems.append(f"{config.__name__}.{spec.public}: description is not the declaration's")
    assert problems == []


def test_the_model_kind_has_one_default() -> None:
    assert _flag(_subcommand("evaluate"), "--dims").default == CVFoldsConfig.model_fields["model_kind"].default
    assert _flag(_subcommand("train"), "--dims").default == "2d"


def test_every_profile_names_real_settings() -> None:
    for profile in PROFILES:
        for group in WHERE:
            profile_defaults(group, profile)  # raises on a field the group does not declare
    named = {name for overrides in PROFILES.values() for name in overrides}
    assert named <= {g.__name__ for g in WHERE}


def test_a_profile_changes_cli_defaults_and_explicit_flags_win() -> None:
    args = _parser("demo").parse_args(["--profile", "demo", "train", "--workdir", "w", "--batch-size", "8"])
    cfg = from_args(TrainConfig, args, "demo")
    assert (cfg.epochs, cfg.batch_size, cfg.weights) == (8, 8, "imagenet")
    plain = from_args(TrainConfig, _parser().parse_args(["train", "--workdir", "w"]))
    assert (plain.epochs, plain.batch_size, plain.weights) == (30, 32, None)


def test_bad_values_are_user_errors_from_the_declaration() -> None:
    from pipeline.errors import UserInputError

    args = _parser().parse_args(["train", "--workdir", "w", "--epochs", "0"])
    with pytest.raises(UserInputError, match="at least 1"):
        from_args(TrainConfig, args)


def test_an_unknown_profile_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--profile", "nope", "status", "--workdir", "w"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err
