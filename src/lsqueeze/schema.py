"""Preset validation: JSON schema (params/schema.json) plus the checks a schema cannot express.

Runs before any job: a bad preset fails naming the key and the allowed values.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

# The schema lives in params/ beside the presets; the package finds it from an editable install.
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "params" / "schema.json"


class ConfigError(ValueError):
    pass


def _where(error) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "(top level)"


def validate(config: dict, schema_path=SCHEMA_PATH) -> dict:
    schema = json.loads(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for e in errors[:10]:
            msg = e.message
            if e.validator == "enum":
                msg = f"{e.instance!r} is not allowed (allowed: {', '.join(map(str, e.validator_value))})"
            lines.append(f"config error at {_where(e)}: {msg}")
        raise ConfigError("\n".join(lines))
    from lsqueeze.config import build_plan

    try:
        build_plan(config)
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"config error: {exc}") from exc
    return config


def validate_file(path) -> dict:
    with open(path) as fh:
        return validate(yaml.safe_load(fh))
