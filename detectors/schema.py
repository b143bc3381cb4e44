"""The alert JSON Schema (``schemas/alert.schema.json``) and a cached validator for it."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

import jsonschema


@functools.cache
def alert_schema() -> dict[str, Any]:
    return json.loads((resources.files("detectors") / "schemas" / "alert.schema.json").read_text("utf-8"))


@functools.cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(alert_schema())


def alert_errors(alert: dict[str, Any]) -> list[str]:
    """Every way ``alert`` breaks the schema, as readable lines (empty when valid)."""
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in _validator().iter_errors(alert)
    ]
