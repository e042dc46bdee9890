"""Preset validation: strict YAML, the JSON schema (lsqueeze/data/schema.json), and the checks a schema
cannot express.

Runs before any job: a bad preset fails with one line per problem, naming the file, the line and
the key (`params/x.yaml:12: config error at cells.smooth.sigma: nan is not a finite number`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import jsonschema

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
from lsqueeze.plan.problems import Where, dotted, non_finite, schema_problem, short
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
                f"table id {short(tid)} is {len(tid.encode())} bytes long: its files "
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


def load_schema(schema_path=SCHEMA_PATH) -> dict:
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
    where = Where(sources)
    if not isinstance(config, dict):
        raise ConfigError(f"{where(())}a preset is a mapping of keys (preset, results, tables, ...), "
                          f"not {type(config).__name__}")
    if not config:
        raise ConfigError(f"{where(())}the preset is empty: it needs preset, results and tables "
                          "(e.g. params/demo.yaml)")
    schema = load_schema(schema_path)
    problems = list(non_finite(config))
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    problems += [schema_problem(e) for e in errors]
    if not problems:  # the checks below rely on the schema's shapes
        checkout = Path(checkout).resolve() if checkout else None
        problems += list(_path_problems(config, checkout)) + list(_table_problems(config))
    if not problems:
        problems += list(_plan_problems(config, schema))
    if problems:
        lines = [f"{where(keys)}config error{' at ' + dotted(keys) if keys else ''}: {msg}"
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
