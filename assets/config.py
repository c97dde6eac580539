"""Dagster ``Config`` classes made from the settings declarations (:mod:`pipeline.settings`).

An asset's config is the union of the settings groups it uses: the field names are the settings'
public names (the CLI flags without dashes), the defaults are the ``default`` profile's, and the
descriptions are the declarations' help texts, so the launchpad, the CLI and the library cannot
drift apart. :func:`settings_from` turns a config back into a group, validated by the group itself.
"""

# No `from __future__ import annotations` here: Dagster reads Config types from the annotations.

import typing
from typing import Any

import dagster as dg
from pydantic import Field, create_model

from pipeline.settings.fields import specs, unwrap_optional
from pipeline.settings.profiles import PROFILES, profile_defaults, settings_of


def _dagster_type(annotation: Any) -> Any:
    """Dagster configs take lists where the settings declare tuples."""
    inner, optional = unwrap_optional(annotation)
    if typing.get_origin(inner) is tuple:
        inner = list.__class_getitem__(typing.get_args(inner)[0])  # list[X], X known only at run time
    return inner | None if optional else inner


def _dagster_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def config_class(
    name: str,
    *groups: type,
    doc: str,
    extra: dict[str, Any] | None = None,
    skip: tuple[str, ...] = (),
    base: type = dg.Config,
) -> type:
    """A ``dg.Config`` subclass named ``name`` with every asset-exposed setting of ``groups``.

    ``base`` may be another Dagster config class, such as a ``dg.ConfigurableResource`` whose methods
    the generated resource inherits.

    ``extra`` adds asset-only fields as ``{name: (type, Field(...))}``; ``skip`` leaves out public names
    that the asset takes elsewhere (the model kind from its partition, for instance).
    """
    fields: dict[str, Any] = {}
    for group in groups:
        defaults = profile_defaults(group)
        for spec in specs(group):
            if not spec.asset or spec.public in skip or spec.public in fields:
                continue
            fields[spec.public] = (
                _dagster_type(spec.annotation),
                Field(default=_dagster_value(defaults[spec.name]), description=spec.help),
            )
    fields.update(extra or {})
    return create_model(name, __base__=base, __doc__=doc, __module__=__name__, **fields)


def settings_from(config: dg.Config | dg.ConfigurableResource, group: type, **given: Any) -> Any:
    """The settings ``group`` from an asset's ``config`` (fields the config lacks keep their defaults)."""
    return settings_of(group, config.model_dump(), "asset", **given)


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
                    values[spec.public] = _dagster_value(defaults[spec.name])
        if values:
            ops[asset_name] = {"config": values}
    return {"ops": ops}
