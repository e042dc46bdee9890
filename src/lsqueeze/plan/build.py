"""Presets -> a plan: canonical cell and attack ids, recipes, and every job the DAG needs.

The Snakefile and the CLI share this module, so an id computed when scheduling is the id a job
writes. Ids derive from values only: 0.5 and 0.50 are one cell, and cells shared by several
tables are trained once.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field

from lsqueeze.plan.perexample import WORST, worst_case_id
from lsqueeze.registries import attack_kinds
from lsqueeze.registries.attack_kinds import AUTOATTACK_MEMBER_METRICS, num
from lsqueeze.registries.datasets import ADV_TRAINING, RECIPES
from lsqueeze.registries.regularizers import REGULARIZERS, id_part, words
from lsqueeze.runtime.yamlfile import read_yaml

# A cell's values besides its regularizers' (lsqueeze.registries.regularizers) and their defaults.
CELL_DEFAULTS = {"clip_noise": False, "seed": 0}


def cell_defaults() -> dict:
    """Every cell value a preset may set, with its default: the method, each regularizer's value
    (in the registry's order), then CELL_DEFAULTS."""
    return {"method": "regularized", **{r.key: r.default for r in REGULARIZERS.values()},
            **CELL_DEFAULTS}


# The workflow's wildcard patterns (workflow/rules/common.smk) for the path parts built from ids.
# Every id made here must match them (lsqueeze.plan.schema checks), else Snakemake finds no rule for a
# file and reports a missing input that names nothing. `+`: num() writes 1e9 as 1e+09.
WILDCARDS = {"dataset": "[a-z0-9]+", "tag": r"[A-Za-z0-9.+\-]+", "attack": r"[a-z0-9.+\-]+",
             "recipe": "r[0-9a-f]{8}", "subset": "all|n[1-9][0-9]*"}


def attack_id(a: dict) -> str:
    """A resolved attack's id in the store: its kind's (lsqueeze.registries.attack_kinds), and
    the CW loss's confidence where it is not the default (`-c10`): it changes the number, which
    no kind's own id format spells, so two presets that differ only in it must not share a store
    file. At the default the id is what it always was, so existing stores keep their paths.
    (Kinds without a format of their own spell every setting that is not the default already.)"""
    kind = attack_kinds.ATTACK_KINDS.get(a.get("attack"))
    conf = a.get("confidence", attack_kinds.BASE["confidence"])
    own = kind is not None and kind.make_id is not None
    extra = f"-c{num(conf)}" if own and a.get("loss") == "cw" and conf != attack_kinds.BASE[
        "confidence"] else ""
    return attack_kinds.attack_id(a) + extra


def subset_key(n_test) -> str:
    """The evaluated part of the test set, in a store path: `all`, or `n<N>` for the first N."""
    return f"n{int(n_test)}" if n_test else "all"


# The files the aggregation (lsqueeze.report.tables) writes for each table id in
# <results>/tables/: no two tables may share one (lsqueeze.plan.schema checks).
TABLE_FILES = ("table_{}.parquet", "table_{}_compare.parquet", "table_{}.html")
# The paper layout of a table (lsqueeze.report.tables.build_tables): the columns it makes itself
# beside the table's own, which a table column may therefore not be named (lsqueeze.plan.schema
# checks). PAPER_PARAMS: the paper's "defense params" columns, its regularizers' and the steps.
PAPER_PARAMS = [*(r.column for r in REGULARIZERS.values() if r.column), "k"]
LAYOUT_COLUMNS = ("cell_id", "model", *PAPER_PARAMS, "seeds")
SD_SUFFIX = " sd"  # "<column> sd": the sd over a row's seeds


def table_files(table_id) -> list[str]:
    return [pattern.format(table_id) for pattern in TABLE_FILES]


def steps_tag(k: int) -> str:
    k = int(k)
    for unit, size in (("M", 1_000_000), ("k", 1000)):
        if k >= size and k % size == 0:
            return f"{k // size}{unit}"
    return str(k)


def cell_tag(c: dict) -> str:
    """The canonical id of a cell within its dataset, e.g. ls0.2-sq0-gn0.5-k400k-s0."""
    if c["method"] == "adv":
        a = c["adv"]
        tag = f"at{int(a['steps'])}-e{num(a['eps'])}-a{num(a['step_size'])}"
        tag += ("-rand" if a["random_start"] else "") + ("-cw" if a["loss"] == "cw" else "")
    else:
        tag = id_part(c, num)
    tag += f"-k{steps_tag(c['steps'])}-s{int(c['seed'])}"
    return tag + ("-clip" if c.get("clip_noise") else "")


def cell_id(c: dict) -> str:
    return f"{c['dataset']}/{cell_tag(c)}"


def model_name(c: dict) -> str:
    """What a table row without a label calls its model: the paper's words for the method; the
    row's α, β, σ and k columns give the values (e.g. "logit squeezing + noise")."""
    if c["method"] == "adv":
        a = c["adv"]
        eps = "∞" if a.get("eps") is None else f"{a['eps']:g}"
        return f"adv. trained (PGD-{int(a['steps'])}, ε={eps})"
    return words(c) or "natural"


def config_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@dataclass
class Plan:
    """Everything the DAG needs, keyed by canonical ids."""

    config: dict
    cells: dict[str, dict] = field(default_factory=dict)         # cell id -> resolved cell
    attacks: dict[str, dict] = field(default_factory=dict)       # attack id -> resolved attack
    white: set[tuple[str, str]] = field(default_factory=set)     # (cell id, attack id)
    black: set[tuple[str, str, str]] = field(default_factory=set)  # (target, source, attack)
    analyses: set[str] = field(default_factory=set)              # cell ids
    tables: list[dict] = field(default_factory=list)             # resolved table specs
    figures: list[dict] = field(default_factory=list)            # resolved figure specs

    @property
    def crafted(self) -> set[tuple[str, str]]:
        return {(src, att) for _, src, att in self.black}

    def recipe(self, dataset: str) -> dict:
        over = self.config.get("recipes", {}).get(dataset, {})
        if dataset not in RECIPES:
            raise ValueError(f"dataset {dataset!r}: no recipe (known: {sorted(RECIPES)})")
        return _deep_merge(RECIPES.get(dataset, {}), over)

    def recipe_key(self, dataset: str) -> str:
        """The recipe's part of a model's address in the shared store: `r` + 8 hex digits of the
        resolved recipe (architecture, optimizer, lr schedule, batch size: everything the cell id
        does not say) and of the precision policy (`train.precision`: a bf16 model is another
        model than an fp32 one). Two presets that disagree on any of it never share a model."""
        policy = self.config.get("train", {}).get("precision", "auto")  # lsqueeze.jobs.train's default
        return f"r{config_hash({**self.recipe(dataset), 'precision': policy})[:8]}"

    def store_dir(self, cid: str) -> str:
        """Where a cell's model, metrics, adversarial sets and evaluations live, relative to the
        store: <dataset>/<recipe key>/<tag>. Every preset naming the same cell under the same
        recipe finds them there, wherever they were first made."""
        dataset, tag = cid.split("/", 1)
        return f"{dataset}/{self.recipe_key(dataset)}/{tag}"

    def train_spec(self, cid: str) -> dict:
        """The full resolved training job: cell values plus the dataset's recipe.

        Run options (`train:` — checkpoint interval, device, compile) are not part of it: they
        change how a job runs, not what it computes, so editing them must not retrain anything.
        """
        cell = self.cells[cid]
        return {"id": cid, "cell": cell, "recipe": self.recipe(cell["dataset"])}

    def attack_spec(self, aid: str, dataset: str) -> dict:
        """An attack in [0,1] pixel units for this dataset (config speaks the paper's units)."""
        a = dict(self.attacks[aid])
        scale = self.recipe(dataset)["pixel_scale"]
        for key in ("eps", "step_size"):
            if a.get(key) is not None:
                a[key] = float(a[key]) / scale
        return a


def _ref(config: dict, section: str, ref):
    if isinstance(ref, str):
        named = config.get(section, {})
        if ref not in named:
            raise ValueError(f"{section}: unknown name {ref!r} (defined: {sorted(named)})")
        return named[ref]
    return ref


def resolve_cell(config: dict, ref) -> dict:
    c = {**cell_defaults(), **_ref(config, "cells", ref)}
    if c["method"] == "adv":
        base = ADV_TRAINING.get(c["dataset"], ADV_TRAINING["mnist"])
        c["adv"] = {**attack_kinds.BASE, **base, **_ref(config, "attacks", c.get("adv", {}))}
    for r in REGULARIZERS.values():  # a natural model has none, adversarial training keeps α
        if c["method"] == "natural" or (c["method"] == "adv" and not r.with_adv):
            c[r.key] = r.default
        c[r.key] = float(c[r.key])
    c["method"] = "adv" if c["method"] == "adv" else "regularized"
    c["steps"] = int(c["steps"])
    return c


def resolve_attack(config: dict, ref) -> dict:
    """A preset's attack (a name under `attacks:` or the settings themselves), resolved by its
    kind (lsqueeze.registries.attack_kinds)."""
    return attack_kinds.resolve(_ref(config, "attacks", ref))


def _row_name(row: dict) -> str:
    """How an error names a table row: its preset cell name, else its canonical id."""
    return row["cell"] if isinstance(row["cell"], str) else row["cell_id"]


def _register(found: dict, key: str, value: dict, what: str) -> str:
    """Add value under its id; an id that already names other settings is an error, never a
    silent merge (an id keeps 6 significant digits and leaves out settings it does not vary)."""
    old = found.setdefault(key, value)
    if old != value:
        diff = ", ".join(f"{k}: {old.get(k)!r} vs {value.get(k)!r}"
                         for k in sorted(old.keys() | value.keys()) if old.get(k) != value.get(k))
        raise ValueError(f"two different {what}s share the id {key} ({diff}): results would be "
                         "mixed up; make them differ in what the id shows, or make them equal")
    return key


def selected_tables(config: dict) -> list[dict]:
    """The preset's tables, or those `only_tables` names (`--config only_tables=[2]`: one table of
    a large preset now, the rest later from the same model store; figures wait for a full run)."""
    tables = config.get("tables", [])
    only = config.get("only_tables")
    if not only:
        return tables
    known = [str(t["id"]) for t in tables]
    unknown = [str(t) for t in only if str(t) not in known]
    if unknown:
        raise ValueError(f"only_tables: no table {', '.join(unknown)} in this preset "
                         f"(its tables: {', '.join(known)})")
    return [t for t in tables if str(t["id"]) in {str(t) for t in only}]


def build_plan(config: dict) -> Plan:
    plan = Plan(config=config)

    def add_cell(ref, seed=None) -> str:
        c = resolve_cell(config, ref)
        if seed is not None:  # a row's `seeds:` trains its cell once per seed
            c["seed"] = int(seed)
        return _register(plan.cells, cell_id(c), c, "cell")

    def add_attack(ref) -> str:
        a = resolve_attack(config, ref)
        return _register(plan.attacks, attack_id(a), a, "attack")

    # A dataset's black-box source is trained only where a table's black-box column needs it.
    sources = dict(config.get("blackbox_sources", {}))
    for table in selected_tables(config):
        cols = []
        for col in table["columns"]:
            col = dict(col)
            if col.get("threat") == WORST:  # the worst case over every attack at one ε
                if "attack" in col or "eps" not in col:
                    raise ValueError(f"table {table['id']} column {col['name']!r}: a worst-case "
                                     "column (threat: worst) takes an eps and no attack")
                eps = col.pop("eps")
                col["attack_paper"] = {"attack": "worst_case", "eps": eps}
                col["attack_id"] = worst_case_id(eps)
            elif "eps" in col:
                raise ValueError(f"table {table['id']} column {col['name']!r}: eps belongs to a "
                                 "worst-case column (threat: worst); an attack column takes it "
                                 "from its attack")
            if "attack" in col:  # tables keep the attack in the paper's units
                col["attack_paper"] = resolve_attack(config, col.pop("attack"))
                if col.get("threat", "none") != "none":
                    col["attack_id"] = add_attack(col["attack_paper"])
            cols.append(col)
        by_name = {c["name"]: c for c in cols}
        rows = []
        for row in table["rows"]:
            ids = [add_cell(row["cell"], s) for s in row.get("seeds") or [None]]
            row = {**row, "cell_id": ids[0], "cell_ids": ids}  # cell_id: the row's first seed
            # A row whose published number came from another attack than its column's names it
            # in `attacks: {column name: attack}`; the row is measured (and crafted) with that one.
            over = {}
            for name, ref in (row.pop("attacks", None) or {}).items():
                if by_name.get(name, {}).get("threat", "none") == "none":
                    attack_cols = [c["name"] for c in cols if c.get("threat", "none") != "none"]
                    raise ValueError(f"table {table['id']} row {_row_name(row)}: attacks: "
                                     f"{name!r} is not an attack column (columns: "
                                     f"{', '.join(attack_cols)})")
                over[name] = add_attack(ref)
            if over:
                row["attack_ids"] = over
            rows.append(row)
        for row in ({**r, "cell_id": c} for r in rows for c in r["cell_ids"]):  # every seed
            ds = plan.cells[row["cell_id"]]["dataset"]
            for col in cols:
                aid = row.get("attack_ids", {}).get(col["name"], col.get("attack_id"))
                if col.get("threat") == "white":
                    plan.white.add((row["cell_id"], aid))
                elif col.get("threat") == "black":
                    if ds not in sources:
                        raise ValueError(f"table {table['id']}: black-box column but no "
                                         f"blackbox_sources entry for dataset {ds!r}")
                    source = add_cell(sources[ds])
                    if source == row["cell_id"]:
                        raise ValueError(
                            f"table {table['id']} row {_row_name(row)}: the black-box source of "
                            f"{ds!r} ({source}) is this row's own model, so column "
                            f"{col['name']!r} would be a white-box attack; use another source "
                            f"(e.g. the same recipe with another seed) in blackbox_sources")
                    plan.black.add((row["cell_id"], source, aid))
                elif col.get("metric") == "predicted_accuracy":
                    plan.analyses.add(row["cell_id"])
                if col.get("metric") in AUTOATTACK_MEMBER_METRICS and (
                        col.get("threat") != "white"
                        or col["attack_paper"].get("attack") != "autoattack"):
                    raise ValueError(f"table {table['id']} column {col['name']!r}: metric "
                                     f"{col['metric']} is read from an AutoAttack evaluation "
                                     "(threat: white, an attack of kind autoattack)")
        plan.tables.append({**table, "rows": rows, "columns": cols})
    for name, fig in ({} if config.get("only_tables") else config.get("figures", {})).items():
        ids = [add_cell(ref) for ref in fig.get("cells", [])]
        plan.analyses.update(ids)
        labels = fig.get("labels") or [ref if isinstance(ref, str) else cid
                                       for ref, cid in zip(fig["cells"], ids)]
        if len(labels) != len(ids):
            raise ValueError(f"figures.{name}: {len(labels)} labels for {len(ids)} cells")
        # eps: the landscape's half-width, or the attack size marked on ε_L, in paper units
        plan.figures.append({"name": name, "kind": fig.get("kind", "linear"), "cells": ids,
                             "labels": list(labels), "title": fig.get("title", name),
                             "eps": fig.get("eps")})
    return plan


def load_config(path) -> dict:
    """A preset as data, read strictly: a duplicate key or a syntax error is a ConfigError naming
    the file and line (lsqueeze.runtime.yamlfile.read_yaml)."""
    return read_yaml(path)[0]


def attack_record(plan: Plan, aid: str, dataset: str) -> dict:
    """What a job needs to know about an attack: its id, paper units (for tables), pixel units."""
    return {"id": aid, "paper": plan.attacks[aid], "pixel": plan.attack_spec(aid, dataset)}
