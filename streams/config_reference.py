"""The configuration reference (Markdown), rendered from the config model itself.

``coordwatch config reference`` prints it and ``docs/config.md`` is its committed output
(``tests/deploy/test_config_reference.py`` fails when the two differ), so the reference
cannot drift from :class:`streams.config.Config`: one table per section of
:data:`streams.config.SECTIONS`, one row per key with its type, default (as the TOML
literal a file, ``--set`` or the environment takes), allowed values (from the field's
constraints and ``Literal`` choices), description and environment variable.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

from pydantic import SecretStr
from pydantic.fields import FieldInfo

from streams.config import ENV_PREFIX, SECTIONS, _toml_value, presets

REGENERATE = "coordwatch config reference > docs/config.md"

_NAMES = {bool: "bool", int: "int", float: "float", str: "string", SecretStr: "string (secret)"}


def env_var(section: str, key: str) -> str:
    """The environment variable that sets ``section.key``."""
    return f"{ENV_PREFIX}{section.upper()}__{key.upper()}"


def _optional(annotation: Any) -> tuple[Any, bool]:
    """``X | None`` -> ``(X, True)``; anything else -> ``(annotation, False)``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(args) < len(typing.get_args(annotation)):
            return args[0], True
    return annotation, False


def _type_name(annotation: Any) -> str:
    inner, optional = _optional(annotation)
    origin = typing.get_origin(inner)
    if origin is Literal:
        name = "string"
    elif origin is list:
        (item,) = typing.get_args(inner)
        name = f"list of {_type_name(item)}"
    else:
        name = _NAMES.get(inner, getattr(inner, "__name__", str(inner)))
    return f"{name}, optional" if optional else name


def _choices(annotation: Any) -> tuple[str, ...]:
    """The ``Literal`` values a key (or each item of a list key) takes, if any."""
    inner, _ = _optional(annotation)
    if typing.get_origin(inner) is list:
        (inner,) = typing.get_args(inner)
    if typing.get_origin(inner) is Literal:
        return tuple(str(v) for v in typing.get_args(inner))
    return ()


def _allowed(info: FieldInfo) -> str:
    """Range, length, pattern and choices, from the field's constraints and type."""
    parts = []
    bounds = []
    for meta in info.metadata:
        for attr, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            value = getattr(meta, attr, None)
            if value is not None:
                bounds.append(f"{sym} {value}")
        n = getattr(meta, "min_length", None)
        if n:
            unit = "character" if _optional(info.annotation)[0] is str else "item"
            parts.append("non-empty" if n == 1 and unit == "character" else f"at least {n} {unit}" + "s" * (n > 1))
        if getattr(meta, "pattern", None):
            parts.append(f"matches `{meta.pattern}`")
    if bounds:
        parts.insert(0, ", ".join(bounds))
    if _optional(info.annotation)[0] is bool:
        parts.append("`true`, `false`")
    choices = _choices(info.annotation)
    if choices:
        inner, _ = _optional(info.annotation)
        each = "each one of " if typing.get_origin(inner) is list else "one of "
        parts.append(each + ", ".join(f"`{c}`" for c in choices))
    return "; ".join(parts) or "any"


def _default(info: FieldInfo) -> str:
    value = info.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        return "`***`"
    if isinstance(value, (list, tuple)):
        value = list(value)
    return f"`{_toml_value(value)}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    """The whole reference as Markdown (what ``docs/config.md`` holds)."""
    out = [
        "# Configuration reference",
        "",
        f"<!-- Generated from streams/config.py and detectors/params.py by `{REGENERATE}`; do not edit. -->",
        "",
        "One TOML file, one `[section]` per table below. Layers, later wins: built-in defaults,",
        "`--preset NAME`, `--config FILE`, environment `COORDWATCH_<SECTION>__<KEY>`, `--set section.key=value`.",
        "Environment and `--set` values are TOML literals (`60`, `0.5`, `true`, `[\"a\", \"b\"]`); anything",
        "else is read as a string. A key marked optional is unset by default (leave it out of the file).",
        "Unknown keys, wrong types, values out of range and inconsistent pairs of keys in a section stop",
        "start-up with exit code 2 and a message naming the key; `coordwatch config check FILE` runs the same",
        "validation, and `coordwatch config show` prints the effective values and where each came from.",
        "",
        "Shipped presets: " + ", ".join(f"`{p}`" for p in presets()) + " (`coordwatch config presets`).",
        "",
        "Sections: " + ", ".join(f"[`[{s}]`](#{s})" for s in SECTIONS) + ".",
    ]
    for section, model in SECTIONS.items():
        out += [
            "",
            f"## {section}",
            "",
            "| key | type | default | allowed | description | environment variable |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for key, info in model.model_fields.items():
            row = [
                f"`{key}`",
                _type_name(info.annotation),
                _default(info),
                _allowed(info),
                info.description or "",
                f"`{env_var(section, key)}`",
            ]
            out.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return "\n".join(out) + "\n"
