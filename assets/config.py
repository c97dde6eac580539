"""Dagster ``Config`` classes made from the settings declarations (:mod:`pipeline.settings`).

An asset's config is the union of the settings groups it uses: the field names are the settings'
public names (the CLI flags without dashes), the defaults are the ``default`` profile's, and the
descriptions are the declarations' help texts, so the launchpad, the CLI and the library cannot
drift apart. :func:`settings_from` turns a config back into a group, validated by the group itself.
"""

# No `from __future__ import annotations` here: Dagster reads Config types from the annotations.

import types
import typing
from typing import Any

import dagster as dg
from pydantic import Field, create_model

from pipeline.settings.fields import build, specs
from pipeline.settings.profiles import PROFILES, profile_defaults


def _dagster_type(annotation: Any) -> Any:
    """Dagster configs take lists where the settings declare tuples."""
    inner, optional = annotation, False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        inner, optional = args[0], True
    if typing.get_origin(inner) is tuple:
        inner = list.__class_getitem__(typing.get_args(inner)[0])  # list[X], X known only at run time
    return inner | None if optional else inner


def config_class(
    name: str, *groups: type, doc: str, extra: dict[str, Any] | None = None, skip: tuple[str, ...] = ()
) -> type:
    """A ``dg.Config`` subclass named ``name`` with every asset-exposed setting of ``groups``.

    ``extra`` adds asset-only fields as ``{name: (type, Field(...))}``; ``skip`` leaves out public names
    that the asset takes elsewhere (the model kind from its partition, for instance).
    """
    fields: dict[str, Any] = {}
    for group in groups:
        defaults = profile_defaults(group)
        for spec in specs(group):
            if not spec.asset or spec.public in skip or spec.public in fields:
                continue
            default = defaults[spec.name]
            fields[spec.public] = (
                _dagster_type(spec.annotation),
                Field(default=list(default) if isinstance(default, tuple) else default, description=spec.help),
            )
    fields.update(extra or {})
    return create_model(name, __base__=dg.Config, __doc__=doc, __module__=__name__, **fields)


def settings_from(config: dg.Config, group: type, **given: Any) -> Any:
    """The settings ``group`` from an asset's ``config`` (fields the config lacks keep their defaults)."""
    values = profile_defaults(group)
    provided = config.model_dump()
    values.update({s.name: provided[s.public] for s in specs(group) if s.public in provided})
    values.update(given)
    return build(group, values)


def run_config(profile: str, asset_groups: dict[str, tuple[type, ...]]) -> dict[str, Any]:
    """Run config giving each asset ``profile``'s value of every setting that some profile changes
    (``{asset name: groups of its config}``). Naming every such setting, not only the ones ``profile``
    changes, lets a run request override a job's default config with another profile completely."""
    ops: dict[str, Any] = {}
    for asset_name, groups in asset_groups.items():
        values: dict[str, Any] = {}
        for group in groups:
            changed = {name for overrides in PROFILES.values() for name in overrides.get(group.__name__, {})}
            defaults = profile_defaults(group, profile)
            for spec in specs(group):
                if spec.asset and spec.name in changed and spec.public not in values:
                    default = defaults[spec.name]
                    values[spec.public] = list(default) if isinstance(default, tuple) else default
        if values:
            ops[asset_name] = {"config": values}
    return {"ops": ops}
