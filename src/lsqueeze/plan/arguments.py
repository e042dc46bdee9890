"""A job's arguments, checked against the preset schema before any work: `--attack` (evaluate,
craft, transfer) like a preset's attack, `--spec` and `--options` (train) like a preset's cell,
recipe and `train:`.

The workflow writes the record from a validated preset (lsqueeze.plan.build.attack_record); a
record written by hand is checked here the same way, and against itself: a NaN ε would give an
accuracy of 0.10, PGD with `steps: -5` the clean accuracy under a PGD id, and settings that are
not the id's would file a number under another attack's name.
"""

from __future__ import annotations

import math

import jsonschema

from lsqueeze.plan.build import attack_id
from lsqueeze.plan.problems import non_finite, refuse_first, schema_problem
from lsqueeze.plan.schema import SCHEMA_PATH, adversary_problem, load_schema
from lsqueeze.registries import attack_kinds

UNITS = ("paper", "pixel")


def _problems(record: dict, spec: dict | None, schema_path) -> list[tuple[tuple, str]]:
    problems = list(non_finite(record))
    if problems:
        return problems
    if not isinstance(record["id"], str):
        return [(("id",), f"{record['id']!r} is not a text id")]
    for units in UNITS:
        if not isinstance(record[units], dict):
            return [((units,), "expected a JSON object of attack settings")]
    # Settings a kind does not have are null in a resolved record; the schema describes the rest.
    fragment = {"$defs": load_schema(schema_path)["$defs"], "$ref": "#/$defs/attack"}
    validator = jsonschema.Draft202012Validator(fragment)
    for units in UNITS:
        given = {k: v for k, v in record[units].items() if v is not None}
        problems += [((units, *keys), msg) for keys, msg in
                     (schema_problem(e) for e in validator.iter_errors(given))]
    if problems:
        return problems
    paper, pixel = record["paper"], record["pixel"]
    kind = attack_kinds.ATTACK_KINDS[paper["attack"]]  # a name the schema's enum allows
    absent = [k for k in kind.needs if paper.get(k) is None]
    if absent:
        return [(("paper", absent[0]), f"the {kind.name} attack needs {absent[0]}")]
    try:  # settings left out take their defaults, as in a preset
        resolved = attack_kinds.resolve(paper)
        pixel = attack_kinds.resolve(pixel)
    except ValueError as exc:
        return [((), str(exc))]
    for key in sorted(k for k in paper if paper[k] != resolved.get(k)):
        return [(("paper", key), f"{paper[key]!r}: the {kind.name} attack always has {key} "
                 f"{resolved.get(key)!r}")]
    made = attack_id(resolved)
    if record["id"] != made:
        return [(("id",), f"{record['id']!r} is not the id of its settings ({made!r})")]
    scale = ((spec or {}).get("recipe") or {}).get("pixel_scale")
    for key in sorted(resolved.keys() | pixel.keys()):
        want, got = resolved.get(key), pixel.get(key)
        if key in ("eps", "step_size") and want is not None and isinstance(scale, (int, float)):
            want = want / scale
        same = (got == want if not isinstance(want, float) or not isinstance(got, (int, float))
                else math.isclose(got, want, rel_tol=1e-9))
        if key in ("eps", "step_size") and scale is None and want is not None:
            same = got is not None  # no recipe to scale by: any number
        if not same:
            return [(("pixel", key), f"{got!r} is not the paper's {resolved.get(key)!r} in pixel "
                     f"units ({want!r})")]
    if pixel.get("eps") is not None and pixel["eps"] > 1:
        return [(("pixel", "eps"), f"{pixel['eps']:g} is more than the whole [0, 1] pixel range; "
                 "an unbounded attack is eps null")]
    return []


def validate_attack(record: dict, spec: dict | None = None, schema_path=SCHEMA_PATH) -> dict:
    """Raise ConfigError (one line naming the key) unless `record` is an attack the workflow could
    have passed: {id, paper, pixel}, its settings valid for the preset schema (those left out take
    their defaults), the id theirs, and `pixel` the paper's settings in the pixel units of
    `spec`'s recipe."""
    refuse_first("--attack", _problems(record, spec, schema_path))
    return record


def validate_options(options, schema_path=SCHEMA_PATH) -> dict:
    """Run options (`--options` of `lsqueeze train`) against the schema of a preset's `train:`."""
    fragment = load_schema(schema_path)["properties"]["train"]
    problems = list(non_finite(options))
    problems += [schema_problem(e) for e in jsonschema.Draft202012Validator(fragment).iter_errors(options)]
    refuse_first("--options", problems)
    return options


def validate_spec(spec: dict, schema_path=SCHEMA_PATH) -> dict:
    """A training spec (`--spec` of `lsqueeze train`): its cell and recipe against the preset
    schema's, so that a hand-written spec with steps -5 or a NaN sigma is refused before any
    work instead of training nothing, or nonsense."""
    schema = load_schema(schema_path)
    problems = list(non_finite(spec))
    for key, ref in (("cell", "cell"), ("recipe", "recipe")):
        fragment = {"$defs": schema["$defs"], "$ref": f"#/$defs/{ref}"}
        problems += [((key, *keys), msg) for keys, msg in
                     (schema_problem(e) for e in
                      jsonschema.Draft202012Validator(fragment).iter_errors(spec[key]))]
    if not problems:
        adv = adversary_problem(spec["cell"])
        if adv:
            problems.append((("cell", "adv"), adv))
    refuse_first("--spec", problems)
    return spec
