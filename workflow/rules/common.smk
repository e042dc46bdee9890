import json
import os
import sys
from pathlib import Path

# The package the jobs run, and this file imports, is the one in this checkout, whatever the
# virtual environment installed (two checkouts may share one): its code is what the fingerprints
# below hash. Jobs inherit the environment, so PYTHONPATH carries it to them.
SRC = str(Path(workflow.basedir) / "src")
if sys.path[0] != SRC:
    sys.path.insert(0, SRC)
if os.environ.get("PYTHONPATH", "").split(os.pathsep)[0] != SRC:
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")]))

from lsqueeze.config import WILDCARDS, attack_record, build_plan
from lsqueeze.fingerprint import fingerprint
from lsqueeze.schema import ConfigError, validate_sources

# Fail before any job runs: schema + semantic checks, one line naming file, line and key. The
# configfiles are re-read strictly (Snakemake's own loader keeps the last of two equal keys).
try:
    validate_sources(config, workflow.configfiles, workflow.source_path("../../params/schema.json"))
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None

PLAN = build_plan(config)
RES = config["results"].rstrip("/")
DATA = config.get("data_dir", "results/data").rstrip("/")
PY = sys.executable  # the interpreter that runs Snakemake has the package installed
EVAL = config.get("eval", {})
# Whether GPU jobs may run on a CPU (`device:`, lsqueeze.integrity): checked by each job, where the
# GPU is (a login node has none). On the command line, not a param: `--config device=auto` runs a
# GPU preset on a CPU without rerunning anything.
DEVICE = config.get("device", "cuda")
# The package code behind each stage's numbers (lsqueeze/fingerprint.py), a param of its rules:
# editing a loss or an attack reruns exactly the jobs it can change; comments and docstrings don't.
STAGES = ("data", "train", "evaluate", "analysis", "tables", "figures", "claims_report")
CODE = {stage: fingerprint(stage, Path(SRC) / "lsqueeze") for stage in STAGES}


# One definition with lsqueeze.config, which checks that every id it makes matches them.
wildcard_constraints:
    dataset=WILDCARDS["dataset"],
    tag=WILDCARDS["tag"],
    source=WILDCARDS["tag"],
    attack=WILDCARDS["attack"],


def cid(w):
    return f"{w.dataset}/{w.tag}"


def spec_json(cell_id):
    return json.dumps(PLAN.train_spec(cell_id), sort_keys=True)


def attack_json(w):
    return json.dumps(attack_record(PLAN, w.attack, w.dataset), sort_keys=True)


def model_path(cell_id):
    return f"{RES}/models/{cell_id}/model.pt"


def metrics_path(cell_id):
    return f"{RES}/models/{cell_id}/metrics.json"


WHITE = [f"{RES}/eval/{c}/white/{a}.json" for c, a in sorted(PLAN.white)]
BLACK = [f"{RES}/eval/{t}/black/{s.split('/')[1]}/{a}.json" for t, s, a in sorted(PLAN.black)]
ANALYSES = {f"{RES}/analysis/{c}/linear.parquet": c for c in sorted(PLAN.analyses)}
METRICS = [metrics_path(c) for c in sorted(PLAN.cells)]


def _tables_plan():
    datasets = {c["dataset"] for c in PLAN.cells.values()}
    return {
        "tables": PLAN.tables,
        "cells": PLAN.cells,
        "pixel_scale": {d: PLAN.recipe(d)["pixel_scale"] for d in sorted(datasets)},
        # chance accuracy, below which a broken model's agreement says nothing (agreement.py)
        "num_classes": {d: PLAN.recipe(d)["num_classes"] for d in sorted(datasets)},
        "analysis_files": ANALYSES,
        "tolerance_pct": EVAL.get("tolerance_pct", 5.0),
        "preset": config.get("preset"),  # the tables' provenance header names it
    }


# The tables plan is the output of rule tables_plan (report.smk), never written while the workflow
# is read: a dry run writes nothing, and a preview with an edited preset cannot change the plan a
# running aggregation reads. Its params carry the plan, so it is rewritten exactly when it changes.
PLAN_FILE = f"{RES}/plan/tables.json"
PLAN_JSON = json.dumps(_tables_plan(), sort_keys=True, default=str)

TABLES = [f"{RES}/tables/measurements.parquet", f"{RES}/tables/tables.md"]
TABLES += [f"{RES}/tables/table_{t['id']}.parquet" for t in PLAN.tables]
FIGURES = [f"{RES}/figures/summary.png"]
FIGURES += [f"{RES}/figures/{f['name']}.png" for f in PLAN.figures]  # `figures:` in the preset
