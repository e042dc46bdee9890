# Globals, paths and input functions of the workflow; the other .smk files hold rules only.
import json
import re
import shlex
import sys
from pathlib import Path

from snakemake.settings.types import DeploymentMethod

# The package the jobs run, and this file imports, is the one in this checkout, whatever the
# virtual environment installed (two checkouts may share one): its code is what the fingerprints
# below hash.
SRC = str(Path(workflow.basedir) / "src")
if sys.path[0] != SRC:
    sys.path.insert(0, SRC)

from lsqueeze.plan.build import WILDCARDS, build_plan
from lsqueeze.runtime.files import SPLIT_FILES, damage, file_digest
from lsqueeze.runtime.fingerprint import fingerprint
from lsqueeze.plan.layout import Layout
from lsqueeze.plan.schema import ConfigError, validate_sources

# Fail before any job runs: schema + semantic checks, one line naming file, line and key. The
# configfiles are re-read strictly (Snakemake's own loader keeps the last of two equal keys).
try:
    validate_sources(
        config,
        workflow.configfiles,
        workflow.source_path("../../src/lsqueeze/data/schema.json"),
        checkout=workflow.basedir,
    )
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None

PLAN = build_plan(config)
# Every path of the run (lsqueeze.plan.layout, shared with runs without Snakemake): the model store,
# shared by every preset that names it (each cell's model, adversarial sets and evaluations under
# <dataset>/<recipe key>/<tag>), and the preset's own folder (RES: tables, figures, claims,
# analyses, logs). The rules below hold the same paths as wildcard patterns.
LAYOUT = Layout(PLAN)
RES, STORE, DATA = LAYOUT.results, LAYOUT.store, LAYOUT.data
# A split edited on disk reruns nothing (splits are read as `ancient`, below) and the first job
# that reads it refuses it; every run also says so at once, with the command that rebuilds it,
# even when no job is left to read it ("Nothing to be done").
for _split in sorted(SPLIT_FILES):
    for _dataset in sorted({cell["dataset"] for cell in PLAN.cells.values()}):
        _problem = damage(Path(DATA) / _dataset / _split, if_newer=True)
        if _problem:
            print(f"lsqueeze: error: {_problem}", file=sys.stderr)
EVAL = config.get("eval", {})
ANALYSIS = config.get("analysis", {})


def _shell_literal(value: str) -> str:
    """A shell word for shell.prefix, which Snakemake formats like a rule's command."""
    return shlex.quote(value).replace("{", "{{").replace("}", "}}")


# Every job's shell starts here: `python` is the interpreter that runs Snakemake (with
# `--sdm conda`, that of workflow/envs/lsqueeze.yaml) and imports this checkout's src/. Two run
# options reach the jobs as environment variables rather than rule params, so that changing them
# reruns nothing: whether a GPU job may run on a CPU (`device:`, lsqueeze.runtime.integrity; checked by
# each job, where the GPU is: `--config device=auto` runs a GPU preset on a CPU) and the `train:`
# options (checkpoint interval, precision, ...: how to train, not what).
# The preset's device also stands as the default in each GPU rule's command
# (`--device "${LSQUEEZE_DEVICE:-<device>}"`), so the command `snakemake -p` prints reruns as
# printed by hand, where the exported variable is not set; the rule's text stays the same, so
# changing the device still reruns nothing.
DEVICE = config.get("device", "cuda")
_ENV = {
    # the package is this checkout's (lsqueeze/__main__.py switches only a hand-run command to the
    # package of the checkout it is run from; a job of this workflow runs this one, wherever)
    "LSQUEEZE_CHECKOUT_SRC": SRC,
    "LSQUEEZE_DEVICE": DEVICE,
    "LSQUEEZE_TRAIN_OPTIONS": json.dumps(config.get("train", {}), sort_keys=True),
}
# A rehearsal (`lsqueeze rehearse`, lsqueeze.runtime.rehearsal): its attack caps and banner, a run
# option like the two above; a real preset has no `rehearsal:` and its jobs never see the variable.
REHEARSAL = config.get("rehearsal")
if REHEARSAL:
    _ENV["LSQUEEZE_REHEARSAL"] = json.dumps(REHEARSAL, sort_keys=True)
# The same for the run options: the JSON, escaped for a double-quoted ${VAR:-default}.
TRAIN_OPTIONS = re.sub(r'([\\"$`}])', r"\\\1", _ENV["LSQUEEZE_TRAIN_OPTIONS"])
_PREFIX = f"export PYTHONPATH={_shell_literal(SRC)}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
if DeploymentMethod.CONDA not in workflow.deployment_settings.deployment_method:
    _PREFIX += f'export PATH={_shell_literal(str(Path(sys.executable).parent))}:"$PATH"; '
_PREFIX += "".join(f"export {k}={_shell_literal(v)}; " for k, v in _ENV.items())
shell.prefix(_PREFIX)
ENV = "../envs/lsqueeze.yaml"  # every rule's `conda:`: the environment its job needs
# The package code behind each stage's numbers (lsqueeze/runtime/fingerprint.py), a param of its rules:
# editing a loss or an attack reruns exactly the jobs it can change; comments and docstrings don't.
STAGES = {
    "data": "jobs.data",
    "train": "jobs.train",
    "evaluate": "jobs.evaluate",
    "analysis": "jobs.analysis",
    "tables": "report.tables",
    "figures": "report.figures",
    "summary": "report.summary",
    "claims_report": "report.claims_report",
}
CODE = {stage: fingerprint(module, Path(SRC) / "lsqueeze") for stage, module in STAGES.items()}


# One definition with lsqueeze.plan.build, which checks that every id it makes matches them.
wildcard_constraints:
    dataset=WILDCARDS["dataset"],
    tag=WILDCARDS["tag"],
    source=WILDCARDS["tag"],
    attack=WILDCARDS["attack"],
    recipe=WILDCARDS["recipe"],
    subset=WILDCARDS["subset"],


def n_flag(section: dict) -> str:
    """`--n N` (the first N test images) where the preset section sets n_test; the whole set else."""
    return f"--n {section['n_test']}" if section.get("n_test") else ""


N_ANALYSIS = n_flag(ANALYSIS)


def subset_flag(w):
    """The evaluated test images are part of an evaluation's address: `all`, or `n<N>` (the
    first N, `--n N`)."""
    return "" if w.subset == "all" else f"--n {w.subset[1:]}"


# Path patterns the rules share: a cell's folder in the store, and the source model of a set.
CELL = f"{STORE}/{{dataset}}/{{recipe}}/{{tag}}"
SOURCE_CELL = f"{STORE}/{{dataset}}/{{recipe}}/{{source}}"
MODEL = f"{CELL}/model.pt"
SOURCE_MODEL = f"{SOURCE_CELL}/model.pt"
SOURCE_METRICS = f"{SOURCE_CELL}/metrics.json"
ADV_SET = f"{SOURCE_CELL}/adv-{{subset}}/{{attack}}.pt"
# A split is read as `ancient`: its modification time reruns nothing. A split edited on disk would
# otherwise make Snakemake rerun every job made from it, deleting each model before the job
# refuses the split; the first job that reads it refuses it in one line instead, with the command
# that rebuilds it (lsqueeze.runtime.files.repair_hint). The data job gives the recorded split
# back or refuses (lsqueeze.runtime.integrity.install_splits), so rebuilding one reruns nothing
# either. (A missing split is rebuilt, and reruns what was made from it.)
TEST_SET = ancient(f"{DATA}/{{dataset}}/test.pt")


def cid(w, tag=None):
    """The cell of a job's wildcards (`tag`: another cell of its dataset, e.g. its source); a
    store path under another recipe than this preset's is refused (its model would be trained or
    read under the wrong recipe)."""
    tag = tag or w.tag
    if hasattr(w, "recipe") and w.recipe != PLAN.recipe_key(w.dataset):
        raise WorkflowError(
            f"{STORE}/{w.dataset}/{w.recipe}/{tag}: recipe {w.recipe} is not this preset's "
            f"{w.dataset} recipe ({PLAN.recipe_key(w.dataset)})"
        )
    return f"{w.dataset}/{tag}"


def model_of(w):
    """The store's model of an analysis job's cell (analyses stay in the preset's folder)."""
    return LAYOUT.model(cid(w))


def cell_spec(w):
    """The training spec of the wildcards' cell, as JSON: the param of every job on one model."""
    return LAYOUT.spec_json(cid(w))


def attack_json(w):
    return LAYOUT.attack_json(w.attack, w.dataset)


# The tables plan is the output of rule tables_plan (report.smk), never written while the workflow
# is read: a dry run writes nothing, and a preview with an edited preset cannot change the plan a
# running aggregation reads. Its params carry the plan, so it is rewritten exactly when it changes.
PLAN_FILE = f"{RES}/plan/tables.json"
PLAN_JSON = json.dumps(LAYOUT.tables_plan(), sort_keys=True, default=str)

# The checkout's own inputs of the tables and claims (the published values, the claims), given to
# their rules by content, not as input files: an input's absolute path is recorded with each
# output, so a clone of a finished run in another directory (or a checkout newer than its
# results) would rerun them for nothing. An edit to either file changes its digest, which reruns
# exactly the rules that read it; the path itself is a derived param (a function of `input`),
# which Snakemake does not compare.
REFERENCE = f"{workflow.basedir}/src/lsqueeze/data/paper_tables.csv"
CLAIMS_FILE = f"{workflow.basedir}/src/lsqueeze/data/claims.yaml"
REFERENCE_SHA256 = file_digest(REFERENCE)
CLAIMS_SHA256 = file_digest(CLAIMS_FILE)

TARGETS = LAYOUT.targets()
TABLES, FIGURES, CLAIMS = TARGETS["tables"], TARGETS["figures"], TARGETS["claims"]


def data_dir(w, input):
    """The directory of a job's dataset split (train.pt, test.pt)."""
    return str(Path(input.test).parent)


def raw_dir(w, output):
    """Where `lsqueeze data` keeps the downloaded archives: raw/<dataset> beside the splits."""
    return str(Path(output.train).parent.parent / "raw" / w.dataset)


def mirror_arg(w):
    """The preset's mirror of the dataset; a rehearsal adds its own checksums of the files it
    generated (it passes them in the open: they replace the official ones in its runs only)."""
    mirror = config.get("mirrors", {}).get(w.dataset)
    arg = f"--mirror {shlex.quote(mirror)}" if mirror else ""
    sums = (REHEARSAL or {}).get("checksums")
    return f"{arg} --rehearsal-checksums {shlex.quote(sums)}" if sums else arg


def train_data(w):
    ds = PLAN.cells[cid(w)]["dataset"]
    return {"train": ancient(f"{DATA}/{ds}/train.pt"), "test": ancient(f"{DATA}/{ds}/test.pt")}


def parent_dir(w, output):
    return str(Path(output[0]).parent)


# Aggregation: one page per table for the report (report.smk).
TABLE_IDS = [t["id"] for t in PLAN.tables]

# The paper's figures (figures.smk): one job per configured figure (`figures:` in the preset),
# reading the per-model analysis Parquets of its cells in the figure's order.
FIGS = {f["name"]: f for f in PLAN.figures}
FIGURE_NAMES = "|".join(map(re.escape, FIGS)) or "(?!)"  # (?!): no figure configured


def figure_inputs(w):
    return LAYOUT.figure_inputs(FIGS[w.figure])


def figure_spec(w):
    return LAYOUT.figure_spec(FIGS[w.figure])
