"""How a preset's or a job argument's problem is placed and worded: the file and line of a bad
key, its dotted path, the schema's complaint in a user's words, and the one-line refusal of a
job argument. Shared by the preset validation (lsqueeze.plan.schema) and the job arguments'
(lsqueeze.plan.arguments)."""

from __future__ import annotations

import math

import yaml
from jsonschema.exceptions import best_match

from lsqueeze.runtime.yamlfile import ConfigError


def locate(node, keys) -> tuple[int, int | None]:
    """(how many leading keys of `keys` a YAML node tree has, 1-based line of the deepest one)."""
    depth, line = 0, None
    for key in keys:
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value
                     if isinstance(k, yaml.ScalarNode) and k.value == str(key)]
            if not match:
                break
            line, node = match[-1][0].start_mark.line + 1, match[-1][1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
        depth += 1
    return depth, line


class Where:
    """`file:line: ` of a key: the file holding most of its path, the later one on a tie (as
    Snakemake merges several --configfile, later files overriding earlier ones)."""

    def __init__(self, sources):
        self.sources = list(sources)  # [(path, YAML node tree)]

    def __call__(self, keys) -> str:
        best = (0, "")
        for path, node in self.sources:
            depth, line = locate(node, keys)
            if depth and depth >= best[0]:
                best = (depth, f"{path}:{line}: ")
        if not best[1] and len(self.sources) == 1:
            return f"{self.sources[0][0]}: "
        return best[1]


def dotted(keys) -> str:
    return ".".join(map(str, keys))


def non_finite(obj, keys=()):
    """Paths of NaN/inf numbers: JSON-schema bounds compare false with NaN, so `sigma: .nan`
    would pass `minimum: 0` and train a model that diverges at once."""
    if isinstance(obj, float) and not math.isfinite(obj):
        yield keys, f"{obj!r} is not a finite number"
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from non_finite(v, (*keys, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from non_finite(v, (*keys, i))


def schema_problem(error):
    """(path, message) of a jsonschema error, pointing at the bad key itself where it can."""
    if error.validator in ("oneOf", "anyOf") and error.context:
        deepest = best_match(error.context)
        if len(deepest.absolute_path) > len(error.absolute_path):
            error = deepest
    keys = tuple(error.absolute_path)
    msg = error.message
    if isinstance(error.schema, dict) and "errorMessage" in error.schema:  # the schema's own words
        msg = f"{error.instance!r} {error.schema['errorMessage']}"
    elif error.validator == "enum":
        allowed = ", ".join(map(str, error.validator_value))
        msg = f"{error.instance!r} is not allowed (allowed: {allowed})"
    elif error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = set(error.schema.get("properties", {}))
        extra = sorted(str(k) for k in error.instance if k not in known)
        if extra:
            keys = (*keys, extra[0])
            msg = f"unknown key {extra[0]!r} (known: {', '.join(sorted(known))})"
    elif error.validator == "type" and isinstance(error.instance, str):
        try:
            float(error.instance)
            # YAML 1.1 reads 1e+09 (no dot) as text; 1.0e+09 is the number.
            msg += " (YAML reads an exponent without a dot as text: write 1.0e+09, not 1e+09)"
        except ValueError:
            pass
    elif error.validator == "type":  # jsonschema quotes the whole value: a table, a list of claims
        msg = f"{short(error.instance)} is not of type {error.validator_value!r}"
    return keys, msg


def short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 5] + " …" + text[-1:]


def refuse_first(flag: str, problems) -> None:
    """Raise ConfigError with the first problem of a job argument, in one line naming the key:
    `--spec: cell.steps: -5 is less than the minimum of 1`."""
    if problems:
        keys, msg = problems[0]
        raise ConfigError(f"{flag}: {dotted(keys) + ': ' if keys else ''}{msg}")
