"""Preset validation: strict YAML, the JSON schema (lsqueeze/data/schema.json), and the checks a schema
cannot express.

Runs before any job: a bad preset fails with one line per problem, naming the file, the line and
the key (`params/x.yaml:12: config error at cells.smooth.sigma: nan is not a finite number`).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import jsonschema
import yaml
from jsonschema.exceptions import best_match

from lsqueeze.plan.build import (
    LAYOUT_COLUMNS,
    RECIPES,
    SD_SUFFIX,
    WILDCARDS,
    attack_id,
    build_plan,
    cell_defaults,
    resolve_cell,
    table_files,
)
from lsqueeze.registries import attack_kinds
from lsqueeze.registries.figure_kinds import FIGURE_KINDS
from lsqueeze.runtime.files import CHECKOUT, package_data
from lsqueeze.runtime.yamlfile import ConfigError, read_yaml

SCHEMA_PATH = package_data("schema.json")
MAX_ERRORS = 10
# A file name has at most 255 bytes on common filesystems; the atomic writer's temporary file
# (lsqueeze.runtime.files.atomic_path) adds `.` + `.XXXXXXXX.tmp` to the name.
TEMP_NAME = 14
MAX_FILE_NAME = 255 - TEMP_NAME


def _locate(node, keys) -> tuple[int, int | None]:
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


class _Where:
    """`file:line: ` of a key: the file holding most of its path, the later one on a tie (as
    Snakemake merges several --configfile, later files overriding earlier ones)."""

    def __init__(self, sources):
        self.sources = list(sources)  # [(path, YAML node tree)]

    def __call__(self, keys) -> str:
        best = (0, "")
        for path, node in self.sources:
            depth, line = _locate(node, keys)
            if depth and depth >= best[0]:
                best = (depth, f"{path}:{line}: ")
        if not best[1] and len(self.sources) == 1:
            return f"{self.sources[0][0]}: "
        return best[1]


def _dotted(keys) -> str:
    return ".".join(map(str, keys))


def _non_finite(obj, keys=()):
    """Paths of NaN/inf numbers: JSON-schema bounds compare false with NaN, so `sigma: .nan`
    would pass `minimum: 0` and train a model that diverges at once."""
    if isinstance(obj, float) and not math.isfinite(obj):
        yield keys, f"{obj!r} is not a finite number"
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _non_finite(v, (*keys, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _non_finite(v, (*keys, i))


def _schema_problem(error):
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
        msg = f"{_short(error.instance)} is not of type {error.validator_value!r}"
    return keys, msg


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 5] + " …" + text[-1:]


def _at_or_above(path: Path, place: Path) -> bool:
    return path == place or path in place.parents


# The checkout's own folders (code, presets, tests, tracked results): no output goes in them.
CHECKOUT_FOLDERS = (".ci", ".dvc", ".git", ".snakemake", ".venv", "bench", "metrics", "params",
                    "reproduced", "src", "tests", "workflow")


def _path_problems(config, checkout: Path | None = None):
    """`results`, `data_dir` and `store` must be directories of their own: not empty, not the root,
    neither the working directory (where relative paths start), the checkout, nor a directory
    above either, over which the jobs would scatter their outputs, and not inside one of the
    checkout's own folders (`src`, `params`, ...), whose files they would mix with."""
    cwd = Path.cwd().resolve()
    for key in ("results", "data_dir", "store"):
        value = config.get(key)
        if not isinstance(value, str):
            continue
        if not value.strip():
            yield (key,), f"{value!r} names no directory (give e.g. results/<preset>)"
            continue
        if os.path.normpath(value) in ("/", "//"):
            yield (key,), f"{value!r} is the filesystem root; give a directory of its own"
            continue
        at = Path(os.path.abspath(value)).resolve()
        for place, what in ((cwd, "the working directory"), (checkout, "the checkout")):
            if place is not None and _at_or_above(at, place):
                above = "" if at == place else " or a directory above it"
                yield (key,), (f"{value!r} is {what} ({place}){above}: the outputs would be "
                               "scattered among its files; give a directory of its own, e.g. "
                               "results/<preset>")
                break
        else:
            if checkout is not None and checkout in at.parents:
                folder = at.relative_to(checkout).parts[0]
                if folder in CHECKOUT_FOLDERS:
                    yield (key,), (f"{value!r} is inside the checkout's own {folder}/ folder: the "
                                   "outputs would mix with its files; give a directory of its "
                                   "own, e.g. results/<preset>")


def _table_problems(config):
    first, files = {}, {}
    for i, table in enumerate(config.get("tables", [])):
        tid = str(table["id"])
        if tid in first:
            yield ("tables", i, "id"), (f"duplicate table id {tid!r} (also tables.{first[tid]}.id): "
                                        "each table is written to its own file")
        elif max(len(name.encode()) for name in table_files(tid)) > MAX_FILE_NAME:
            yield ("tables", i, "id"), (
                f"table id {_short(tid)} is {len(tid.encode())} bytes long: its files "
                f"({table_files(tid)[1]}) would pass the {MAX_FILE_NAME + TEMP_NAME}-byte limit of "
                "a file name only when the tables are written; shorten it")
        else:
            # table_2_compare.parquet is both table 2's comparison and table 2_compare's layout;
            # names that differ only in case are one file on macOS and Windows
            for name in table_files(tid):
                other = files.get(name.casefold())
                if other is not None:
                    yield ("tables", i, "id"), (
                        f"table id {tid!r} writes {name}, which table {other[1]!r} "
                        f"(tables.{other[0]}.id) writes too; rename one of them")
                    break
            for name in table_files(tid):
                files.setdefault(name.casefold(), (i, tid))
        first.setdefault(tid, i)
        names = [c["name"] for c in table["columns"]]
        for j, name in enumerate(names):
            if name in names[:j]:
                yield ("tables", i, "columns", j, "name"), f"duplicate column name {name!r}"
            elif name in LAYOUT_COLUMNS or name.endswith(SD_SUFFIX):
                yield ("tables", i, "columns", j, "name"), (
                    f"column name {name!r} is one the table layout uses itself "
                    f"({', '.join(LAYOUT_COLUMNS)} and '<column>{SD_SUFFIX}'); rename the column")


def _plan_problems(config, schema):
    """Checks on the resolved plan: every id must match the workflow's wildcard patterns (else
    Snakemake reports a missing input that names nothing) and every merged recipe must name a
    known architecture."""
    # First, as the plan cannot be built around an adversary it cannot run (an unbounded eps has
    # no number for the cell's id): the problem is then named with its key.
    adversaries = False
    for keys, ref in _cell_refs(config):
        try:
            problem = adversary_problem(resolve_cell(config, ref))
        except (ValueError, KeyError, TypeError) as exc:  # a cell no table uses
            problem = f"{exc}"
        if problem:
            adversaries = True
            yield (*keys, "adv") if "adv" in ref else keys, problem
    if adversaries:
        return
    try:
        plan = build_plan(config)
    except (ValueError, KeyError, TypeError) as exc:
        yield (), f"{exc}"
        return
    for cid in plan.cells:
        dataset, tag = cid.split("/", 1)
        if not re.fullmatch(WILDCARDS["tag"], tag):
            yield ("cells",), f"cell id {cid!r} has characters a file name pattern cannot match"
    for aid in plan.attacks:
        if not re.fullmatch(WILDCARDS["attack"], aid):
            yield ("attacks",), f"attack id {aid!r} has characters a file name pattern cannot match"
    used = {(c.split("/")[0], a) for c, a in plan.white} | {(t.split("/")[0], a)
                                                             for t, _, a in plan.black}
    named = {}
    for name, a in config.get("attacks", {}).items():
        try:
            named.setdefault(attack_id(attack_kinds.resolve(a)), name)
        except ValueError:
            pass
    for dataset, aid in sorted(used):  # an evaluation job refuses it too (plan.arguments)
        eps = plan.attack_spec(aid, dataset).get("eps")
        if eps is not None and eps > 1:
            keys = ("attacks", named[aid], "eps") if aid in named else ("attacks",)
            yield keys, (f"{eps:g} in the pixel units of {dataset} ({aid}) is more than the whole "
                         "[0, 1] range; an unbounded attack is eps null")
    known = schema["$defs"]["recipe"]["properties"]["arch"]["properties"]["name"]["enum"]
    for dataset in sorted({c["dataset"] for c in plan.cells.values()}):
        name = plan.recipe(dataset).get("arch", {}).get("name")
        if name not in known:
            yield ("recipes", dataset, "arch", "name"), (
                f"the recipe of {dataset!r} names no known architecture (got {name!r}; "
                f"known: {', '.join(known)})")


def _cell_refs(config):
    """(key path, cell) of every cell a preset defines: the named ones, and those written out in
    a table row, a figure or blackbox_sources."""
    for name, cell in config.get("cells", {}).items():
        yield ("cells", name), cell
    for i, table in enumerate(config.get("tables", [])):
        for j, row in enumerate(table["rows"]):
            if isinstance(row["cell"], dict):
                yield ("tables", i, "rows", j, "cell"), row["cell"]
    for name, fig in config.get("figures", {}).items():
        for j, ref in enumerate(fig.get("cells", [])):
            if isinstance(ref, dict):
                yield ("figures", name, "cells", j), ref
    for dataset, ref in config.get("blackbox_sources", {}).items():
        if isinstance(ref, dict):
            yield ("blackbox_sources", dataset), ref


def adversary_problem(cell: dict) -> str | None:
    """What the training adversary cannot run in a resolved adversarially trained cell, else None.

    Training crafts its adversary with Madry's PGD from the attack's steps, eps, step_size, loss
    and random start (lsqueeze.jobs.train.adv_spec); any other kind of attack would silently train with
    PGD instead, and the settings it does not read (restarts, a CW confidence) would be ignored."""
    if cell.get("method") != "adv":
        return None
    adv = cell.get("adv") or {}
    kind = adv.get("attack")
    if kind != "pgd":
        return (f"adversarial training crafts its adversary with PGD, not {kind!r}; write "
                "attack: pgd (FGSM training is PGD with steps: 1, step_size equal to eps and "
                "random_start: false)")
    if adv.get("eps") is None:
        return "the training adversary needs a bounded eps (null is unbounded)"
    if adv.get("step_size") is None:
        return "the training adversary needs a step_size"
    if adv.get("restarts", 1) != 1:
        return (f"restarts {adv['restarts']!r}: the training adversary makes one attempt per "
                "batch; leave restarts out")
    if adv.get("loss") == "cw" and adv.get("confidence") != attack_kinds.BASE["confidence"]:
        return (f"confidence {adv.get('confidence')!r}: the training adversary's CW loss uses "
                f"confidence {attack_kinds.BASE['confidence']:g}; leave confidence out")
    return None


def _load_schema(schema_path=SCHEMA_PATH) -> dict:
    """The schema, with the registries it names filled in, so that each has one place: the
    datasets are the recipes' keys, the attack kinds and their own settings are
    lsqueeze.registries.attack_kinds', the figure kinds lsqueeze.registries.figure_kinds', and a
    cell value with a default (lsqueeze.plan.build.cell_defaults) that the schema does not
    describe, a new regularizer's, is a boolean or a number >= 0 like its default."""
    schema = json.loads(Path(schema_path).read_text())
    schema["$defs"]["dataset"]["enum"] = list(RECIPES)
    schema["properties"]["figures"]["additionalProperties"]["properties"]["kind"]["enum"] = list(
        FIGURE_KINDS)
    attack = schema["$defs"]["attack"]["properties"]
    attack["attack"]["enum"] = list(attack_kinds.ATTACK_KINDS)
    schema["$defs"]["column"]["properties"]["metric"]["enum"] += list(
        attack_kinds.AUTOATTACK_MEMBER_METRICS)  # AutoAttack's accuracy after each member
    for kind in attack_kinds.ATTACK_KINDS.values():  # each kind's own settings (its resolve refuses
        for key, (_, fragment) in kind.settings.items():  # another kind's)
            attack.setdefault(key, fragment)
    cell = schema["$defs"]["cell"]["properties"]
    for key, default in cell_defaults().items():
        if key not in cell:
            cell[key] = {"type": "boolean"} if isinstance(default, bool) else {"$ref": "#/$defs/nonneg"}
    return schema


def validate(config: dict, schema_path=SCHEMA_PATH, sources=(), checkout=CHECKOUT) -> dict:
    """Raise ConfigError (one line per problem) unless `config` is a preset that can run.

    `sources`: [(path, YAML node tree)] of the files the config was read from, so that each
    problem names the file and line that holds the bad key. `checkout`: the workflow's directory,
    which `results` and `data_dir` may not be (nor a directory above it).
    """
    where = _Where(sources)
    if not isinstance(config, dict):
        raise ConfigError(f"{where(())}a preset is a mapping of keys (preset, results, tables, ...), "
                          f"not {type(config).__name__}")
    if not config:
        raise ConfigError(f"{where(())}the preset is empty: it needs preset, results and tables "
                          "(e.g. params/demo.yaml)")
    schema = _load_schema(schema_path)
    problems = list(_non_finite(config))
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    problems += [_schema_problem(e) for e in errors]
    if not problems:  # the checks below rely on the schema's shapes
        checkout = Path(checkout).resolve() if checkout else None
        problems += list(_path_problems(config, checkout)) + list(_table_problems(config))
    if not problems:
        problems += list(_plan_problems(config, schema))
    if problems:
        lines = [f"{where(keys)}config error{' at ' + _dotted(keys) if keys else ''}: {msg}"
                 for keys, msg in problems[:MAX_ERRORS]]
        if len(problems) > MAX_ERRORS:
            lines.append(f"... and {len(problems) - MAX_ERRORS} more")
        raise ConfigError("\n".join(lines))
    return config


def validate_file(path) -> dict:
    """Read a preset strictly (duplicate keys, syntax errors with line and column) and validate it."""
    data, node = read_yaml(path)
    return validate(data, sources=[(str(path), node)])


def validate_sources(config: dict, paths, schema_path=SCHEMA_PATH, checkout=CHECKOUT) -> dict:
    """Validate a config Snakemake has merged from `paths` (its --configfile files): each file is
    re-read strictly first, since Snakemake's own loader keeps the last of two equal keys."""
    sources = []
    for path in paths:
        _, node = read_yaml(path)
        sources.append((str(path), node))
    return validate(config, schema_path, sources, checkout)


def validate_options(options, schema_path=SCHEMA_PATH) -> dict:
    """Run options (`--options` of `lsqueeze train`) against the schema of a preset's `train:`."""
    fragment = _load_schema(schema_path)["properties"]["train"]
    problems = list(_non_finite(options))
    problems += [_schema_problem(e) for e in jsonschema.Draft202012Validator(fragment).iter_errors(options)]
    if problems:
        keys, msg = problems[0]
        raise ConfigError(f"--options: {_dotted(keys) + ': ' if keys else ''}{msg}")
    return options


def validate_spec(spec: dict, schema_path=SCHEMA_PATH) -> dict:
    """A training spec (`--spec` of `lsqueeze train`): its cell and recipe against the preset
    schema's, so that a hand-written spec with steps -5 or a NaN sigma is refused before any
    work instead of training nothing, or nonsense."""
    schema = _load_schema(schema_path)
    problems = list(_non_finite(spec))
    for key, ref in (("cell", "cell"), ("recipe", "recipe")):
        fragment = {"$defs": schema["$defs"], "$ref": f"#/$defs/{ref}"}
        problems += [((key, *keys), msg) for keys, msg in
                     (_schema_problem(e) for e in
                      jsonschema.Draft202012Validator(fragment).iter_errors(spec[key]))]
    if not problems:
        adv = adversary_problem(spec["cell"])
        if adv:
            problems.append((("cell", "adv"), adv))
    if problems:
        keys, msg = problems[0]
        raise ConfigError(f"--spec: {_dotted(keys) + ': ' if keys else ''}{msg}")
    return spec
