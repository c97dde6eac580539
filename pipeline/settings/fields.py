"""How a setting is declared: :func:`setting` wraps pydantic's ``Field`` with what a command line needs.

A settings group is a frozen pydantic dataclass whose fields are declared with :func:`setting`::

    @dataclass(frozen=True, config=SETTINGS)
    class Example:
        epochs: int = setting(10, "passes over the training split")

:func:`specs` reads the declarations back (name, type, default, help, flag, metavar, where it is
exposed), which is all the CLI and the Dagster configs need. Validation stays in the group's
``__post_init__`` and raises :class:`~pipeline.errors.UserInputError` (exit 2, one line).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import ConfigDict, Field
from pydantic.config import JsonDict

#: The pydantic config of every settings group: unknown fields are an error.
SETTINGS = ConfigDict(extra="forbid")


def setting(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    metavar: str | None = None,
    cli: bool = True,
    asset: bool = True,
) -> Any:
    """Declare one setting: its default and help text, and optionally its command-line spelling.

    ``flag`` overrides the flag derived from the field name (``batch_size`` -> ``--batch-size``);
    ``cli``/``asset`` False keeps an expert knob out of the CLI or the Dagster config (it keeps its
    default there; the reason belongs in the help text).
    """
    extra: JsonDict = {"flag": flag, "metavar": metavar, "cli": cli, "asset": asset}
    if isinstance(default, (list, dict, set)):
        raise TypeError("settings defaults must be immutable (use a tuple)")
    return Field(default=default, description=help, json_schema_extra=extra)


@dataclass(frozen=True)
class SettingSpec:
    """One declared setting, as read back from its group."""

    group: type
    name: str
    annotation: Any
    default: Any
    help: str
    flag: str
    metavar: str | None
    cli: bool
    asset: bool

    @property
    def public(self) -> str:
        """The setting's one public name: the flag without dashes (``--task-timeout`` -> ``task_timeout``),
        also the Dagster config field's name. The dataclass field keeps its own name (it feeds hashes)."""
        return self.flag.removeprefix("--").replace("-", "_")


def specs(group: type) -> list[SettingSpec]:
    """The declared settings of ``group`` (a pydantic dataclass), in declaration order.

    Fields declared without :func:`setting` (nested groups) are left out.
    """
    out = []
    for field in dataclasses.fields(group):
        info = getattr(group, "__pydantic_fields__", {}).get(field.name)
        if info is None or not isinstance(info.json_schema_extra, dict) or "cli" not in info.json_schema_extra:
            continue
        extra = info.json_schema_extra
        out.append(
            SettingSpec(
                group=group,
                name=field.name,
                annotation=info.annotation,
                default=info.default,
                help=info.description or "",
                flag=str(extra["flag"] or "--" + field.name.replace("_", "-")),
                metavar=extra["metavar"] if isinstance(extra["metavar"], str) else None,
                cli=bool(extra["cli"]),
                asset=bool(extra["asset"]),
            )
        )
    return out


def unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    """The annotation without ``| None``, and whether None was allowed.

    >>> unwrap_optional(int | None), unwrap_optional(str)
    ((<class 'int'>, True), (<class 'str'>, False))
    """
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(annotation))
    return annotation, False


def build(group: type, values: dict[str, Any]) -> Any:
    """``group(**values)``, with pydantic's type errors turned into one-line :class:`UserInputError`\\ s."""
    from pydantic import ValidationError

    from pipeline.errors import UserInputError

    try:
        return group(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or group.__name__
        raise UserInputError(f"{where}: {first.get('msg', 'invalid value')}") from None
