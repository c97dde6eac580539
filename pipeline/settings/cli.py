"""Command-line flags made from settings declarations (:mod:`pipeline.settings.fields`).

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
    parser: argparse.ArgumentParser, *groups: type, profile: str = "default", skip: tuple[str, ...] = ()
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
