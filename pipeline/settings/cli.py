"""Command-line flags made from settings declarations (:mod:`pipeline.settings.fields`), and back (:func:`to_argv`).

Flag, type, choices, default and help all come from the declaration; a boolean gets ``--x`` and
``--no-x``; a tuple of strings is written comma-separated. Settings that several groups share by name
(``--seed``, ``--device``) become one flag that feeds every group.
"""

from __future__ import annotations

import argparse
import typing
from typing import Any, Literal

from pipeline.settings.fields import SettingSpec, specs, unwrap_optional
from pipeline.settings.profiles import profile_defaults, settings_of


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(value) or "none"
    return "none" if value is None else str(value)


def add_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup, spec: SettingSpec, default: Any) -> None:
    """Add the flag of one setting, with ``default`` (the profile's)."""
    base, _ = unwrap_optional(spec.annotation)
    kwargs: dict[str, Any] = {
        "dest": spec.public,
        "default": default,
        "help": f"{spec.help} (default: {_show(default)})",
    }
    if base is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif typing.get_origin(base) is Literal:
        kwargs.update(choices=typing.get_args(base), type=str)
    elif typing.get_origin(base) is tuple:
        kwargs.update(type=_split, metavar=spec.metavar or "A,B")
    else:
        kwargs.update(type=base, metavar=spec.metavar or spec.public.upper())
    parser.add_argument(spec.flag, **kwargs)


def add_settings(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    *groups: type,
    profile: str = "default",
    skip: tuple[str, ...] = (),
) -> None:
    """Add the CLI settings of ``groups`` to ``parser`` (each flag once; ``skip`` names public names not to add)."""
    seen = {action.dest for action in parser._actions}
    for group in groups:
        defaults = profile_defaults(group, profile)
        for spec in specs(group):
            if spec.cli and spec.public not in seen and spec.public not in skip:
                add_argument(parser, spec, defaults[spec.name])
                seen.add(spec.public)


def from_args(group: type, args: argparse.Namespace, profile: str = "default", **given: Any) -> Any:
    """Build ``group`` from parsed ``args`` (settings without a flag keep the profile's default)."""
    return settings_of(group, vars(args), "cli", profile, **given)


def _render(spec: SettingSpec, value: Any) -> list[str]:
    """The argv items that make ``spec``'s flag parse back to ``value`` (not None)."""
    base, _ = unwrap_optional(spec.annotation)
    if base is bool:
        return [spec.flag if value else "--no-" + spec.flag.removeprefix("--")]
    if typing.get_origin(base) is tuple:
        items = [str(item) for item in value]
        if any("," in item or item != item.strip() or not item for item in items):
            raise ValueError(f"{spec.flag}: items with commas, edge spaces or empty items cannot be written as a flag")
        return [f"{spec.flag}={','.join(items)}"]  # an empty tuple is `--flag=`, which parses back to ()
    if isinstance(value, float):
        return [f"{spec.flag}={value!r}"]  # repr is the shortest text that parses back to the same float
    return [f"{spec.flag}={value}"]  # `--flag=value`: a value starting with '-' is not read as a flag


def to_argv(*settings: Any, profile: str = "default") -> list[str]:
    """The flags that make :func:`from_args` rebuild ``settings`` (instances of settings groups) under ``profile``.

    The inverse of :func:`add_settings` + :func:`from_args`: each setting that has a flag and differs from
    ``profile``'s default is written as ``--flag=value`` (booleans ``--x``/``--no-x``, tuples comma-joined),
    so a child process started with these flags builds equal settings. A setting shared by several groups
    (``--seed``) must hold one value. ``ValueError`` for what flags cannot say: None where the profile's
    default is not None, a tuple item with a comma, two values for one shared flag.

    >>> from pipeline.settings.train import TrainConfig
    >>> to_argv(TrainConfig(epochs=2, class_weighting=False, lr=3e-4))
    ['--epochs=2', '--lr=0.0003', '--no-class-weighting']
    """
    chosen: dict[str, tuple[SettingSpec, Any, Any]] = {}
    for obj in settings:
        defaults = profile_defaults(type(obj), profile)
        for spec in specs(type(obj)):
            if not spec.cli:
                continue
            value = getattr(obj, spec.name)
            if spec.public in chosen and chosen[spec.public][1] != value:
                raise ValueError(f"{spec.flag} is shared by several settings groups and cannot hold two values")
            chosen.setdefault(spec.public, (spec, value, defaults[spec.name]))
    argv: list[str] = []
    for spec, value, default in chosen.values():
        if value == default:
            continue
        if value is None:
            raise ValueError(f"{spec.flag}: None cannot be written as a flag where the default is {default!r}")
        argv += _render(spec, value)
    return argv
