"""Named profiles: sets of defaults chosen for a purpose, replacing literals scattered over the code.

``default`` is the declared defaults: what ``scanlens`` and the Dagster configs use unless told
otherwise. ``demo`` is small and quick on a laptop CPU: the bundled demo (``make demo``, the
``scanlens_demo`` and ``train_and_evaluate`` jobs as shipped) and ``scanlens --profile demo``.
A profile names the settings group (its class name) and the fields it changes.

>>> from pipeline.settings.train import TrainConfig
>>> profile_defaults(TrainConfig, "demo")["epochs"], profile_defaults(TrainConfig, "default")["epochs"]
(8, 30)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pipeline.errors import UserInputError
from pipeline.settings.fields import build, specs

PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "default": {},
    "demo": {
        # MedMNIST's native 28 px (2D) and 28^3 (3D), 8 epochs (the cosine schedule completes; patience
        # as long), test-time flips: minutes on two CPU cores (docs/recipe.md, "The demo profile").
        "PreprocessSettings": {"input_size": 28},
        "TrainConfig": {"epochs": 8, "patience": 8, "tta_flips": True, "weights": "imagenet"},
        # One case per outcome, a coarser occlusion grid and two sanity cases keep the saliency step short.
        "ExplainSettings": {"per_kind": 1, "sanity_cases": 2},
        "AttributionConfig": {"occlusion_stride": 8},
        # The demo's synthetic headers name two manufacturers: a subgroup table to show.
        "EvaluationSettings": {"subgroups": ("manufacturer",)},
    },
}


def profile_defaults(group: type, profile: str = "default") -> dict[str, Any]:
    """Every declared setting of ``group`` with its default under ``profile``."""
    if profile not in PROFILES:
        raise UserInputError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    overrides = PROFILES[profile].get(group.__name__, {})
    values = {spec.name: spec.default for spec in specs(group)}
    unknown = sorted(set(overrides) - set(values))
    if unknown:
        raise ValueError(f"profile {profile!r} sets unknown {group.__name__} field(s) {', '.join(unknown)}")
    return {**values, **overrides}


def settings_of(
    group: type, public_values: Mapping[str, Any], side: Literal["cli", "asset"], profile: str = "default", **given: Any
) -> Any:
    """Build ``group`` from values keyed by public name (parsed flags, or an asset's config), taking the
    settings exposed on that ``side``; the others keep ``profile``'s default, and ``given`` wins over all."""
    values = profile_defaults(group, profile)
    exposed = [s for s in specs(group) if (s.cli if side == "cli" else s.asset) and s.public in public_values]
    values.update({s.name: public_values[s.public] for s in exposed})
    values.update(given)
    return build(group, values)
