"""Fault trials before any job: paths with spaces, a dry run that writes nothing, and presets,
options and JSON arguments that are refused in one line naming the file, line and key.
"""

import json
import os
import re
from pathlib import Path

import pytest
import yaml

from conftest import REPO, cell_dir, run_snakemake
from lsqueeze.cli import main as lsqueeze_main
from lsqueeze.plan import build as C
from lsqueeze.plan.schema import ConfigError, read_yaml, validate, validate_file

TINY_TEXT = (REPO / "tests/config/tiny.yaml").read_text()


def preset_with(tmp_path, old=None, new=None, name="preset.yaml"):
    """The tiny preset with one text edit, written to tmp_path; (path, 1-based line of the edit)."""
    text, line = TINY_TEXT, None
    if old is not None:
        assert TINY_TEXT.count(old) == 1, old
        line = TINY_TEXT[:TINY_TEXT.index(old)].count("\n") + 1
        text = TINY_TEXT.replace(old, new)
    path = tmp_path / name
    path.write_text(text)
    return path, line


def listing(root):
    """Every path under root except Snakemake's own state directory."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if ".snakemake" not in p.relative_to(root).parts)


def validate_cli(capsys, path):
    """`lsqueeze validate path`: (exit code, the stderr lines)."""
    code = lsqueeze_main(["validate", str(path)])
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.slow
def test_results_dir_with_a_space_runs_and_writes_nowhere_else(tmp_path):
    """Train, a white-box evaluation and the tables plan under `results/with space/`, with files
    where an unquoted `> {log}` would redirect (`results/with`, `results/da`): they survive."""
    work = tmp_path / "work"
    (work / "results").mkdir(parents=True)
    cfg = yaml.safe_load(TINY_TEXT)
    cfg.update(results="results/with space/tiny", data_dir="results/da ta",
               store="results/with space/store")
    preset = tmp_path / "preset.yaml"
    preset.write_text(yaml.safe_dump(cfg, sort_keys=False))
    for name in ("with", "da"):
        (work / "results" / name).write_text("keep me\n")
    plan = C.build_plan(cfg)
    cell, attack = min(plan.white)
    res = work / "results/with space/tiny"
    store = work / cell_dir(cfg, cell)
    targets = [store / f"eval-n100/white/{attack}.json", res / "plan/tables.json"]
    # targets relative to the working directory, as the rules write them, and before the
    # --configfile option, which takes several files
    run_snakemake(work, *(str(t.relative_to(work)) for t in targets), "--configfile", str(preset))
    for name in ("with", "da"):
        assert (work / "results" / name).read_text() == "keep me\n"
    assert json.loads(targets[0].read_text())["accuracy"] >= 0
    assert (store / "model.pt").is_file()
    assert (work / "results/with space/store/logs/train").is_dir()
    assert (work / "results/da ta/digits28/test.pt").is_file()
    written = json.loads(targets[1].read_text())
    assert {t["id"] for t in written["tables"]} == {t["id"] for t in plan.tables}
    assert not list(res.rglob("*.tmp"))  # the plan is written atomically, no temp file left


@pytest.mark.slow
def test_dry_run_writes_nothing(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    preset, _ = preset_with(tmp_path)
    before = listing(work)
    proc = run_snakemake(work, "-n", configfile=preset)
    assert "tables_plan" in proc.stdout  # the plan is a job of the run, not a side effect of -n
    assert listing(work) == before == []


@pytest.mark.slow
def test_dry_run_of_a_read_only_results_dir(tmp_path):
    archive = tmp_path / "archive"
    archive.mkdir()
    archive.chmod(0o555)
    if os.access(archive, os.W_OK):  # root ignores file modes; nobody can create files in /proc
        archive = Path("/proc/lsqueeze-read-only-archive")
    preset, _ = preset_with(tmp_path, "results: results/tiny", f"results: {archive}/tiny")
    work = tmp_path / "work"
    work.mkdir()
    try:
        proc = run_snakemake(work, "-n", configfile=preset)
    finally:
        (tmp_path / "archive").chmod(0o755)
    assert "tables_plan" in proc.stdout
    assert not any((tmp_path / "archive").iterdir())


@pytest.mark.parametrize("old, new, key, words", [
    ("sigma: 0.3,", "sigma: .nan,", "cells.smooth.sigma", ["nan is not a finite number"]),
    ("sigma: 0.3,", "sigma: .inf,", "cells.smooth.sigma", ["inf is not a finite number"]),
    ("sigma: 0.3,", "sigma: 0.3, sigma: 0.4,", None, ["duplicate key 'sigma'"]),
    ('id: "2"', 'id: "1"', "tables.1.id", ["duplicate table id '1'"]),
    ("results: results/tiny", "results: ''", "results", ["names no directory"]),
    ("results: results/tiny", "results: /", "results", ["names no directory"]),
    ("data_dir: results/data", "data_dir: /", "data_dir", ["names no directory"]),
    ("train: {checkpoint_every: 50}", "train: {checkpoint_every: 50, device: gpu}", "train.device",
     ["'gpu' is not allowed"]),
    ("train: {checkpoint_every: 50}", "train: {checkpoint_every: 50, precison: bf16}",
     "train.precison", ["unknown key 'precison'"]),
    ("cells:\n", "recipes: {digits28: {arch: {name: resnet}}}\ncells:\n",
     "recipes.digits28.arch.name", ["'resnet' is not allowed", "madry_cnn"]),
    ("beta: 0.5,", "beta: 1e+9,", "cells.squeeze.beta", ["write 1.0e+09"]),
    ("sigma: 0.3,", "sigma: 0.3],", None, ["YAML syntax error", "expected ',' or '}'"]),
    # a table id names files: no path separators, no `..`
    ('id: "2"', 'id: "x/../../../../ESCAPED"', "tables.1.id", ["is not a table id"]),
    ('id: "2"', "id: 2", "tables.1.id", ["is not a table id"]),
    # table_2_compare.parquet: table 2's comparison and table 2_compare's layout
    ("id: strong", "id: 2_compare", "tables.2.id", ["'2_compare' writes table_2_compare.parquet",
                                                    "table '2'"]),
    ("id: strong", "id: 2-compare", None, []),  # a control: no file named twice, valid
    # a file name has at most 255 bytes: refused before the run, not at the aggregation
    ("id: strong", f"id: {'x' * 250}", "tables.2.id", ["250 bytes long", "shorten it"]),
    ("id: strong", f"id: {'x' * 200}", None, []),  # a control
    # an FGSM or multi-restart adversary cannot train a model: training runs PGD
    ("natural: {dataset: digits28, method: natural, steps: 60}",
     "natural: {dataset: digits28, method: adv, adv: fgsm_xent, steps: 60}", "cells.natural.adv",
     ["with PGD, not 'fgsm'"]),
    ("natural: {dataset: digits28, method: natural, steps: 60}",
     "natural: {dataset: digits28, method: adv, steps: 60, adv: {attack: pgd, eps: 0.3, "
     "step_size: 0.1, steps: 5, restarts: 3}}", "cells.natural.adv", ["restarts 3", "one attempt"]),
    ("natural: {dataset: digits28, method: natural, steps: 60}",
     "natural: {dataset: digits28, method: adv, steps: 60, adv: {attack: pgd, eps: null, "
     "step_size: 0.1, steps: 5}}", "cells.natural.adv", ["needs a bounded eps"]),
    # results and data_dir: a directory of their own, not the working directory or above it
    ("results: results/tiny", "results: .", "results", ["'.' is the working directory"]),
    ("results: results/tiny", "results: ..", "results", ["or a directory above it"]),
    ("results: results/tiny", "results: results/..", "results", ["is the working directory"]),
    ("data_dir: results/data", "data_dir: .", "data_dir", ["is the working directory"]),
    ("results: results/tiny", f"results: {REPO.parent}", "results", ["or a directory above it"]),
    # an ε beyond the image's range is no bound: an unbounded attack says so (eps: null)
    ("fgsm_xent: {attack: fgsm, loss: xent, eps: 0.3}", "fgsm_xent: {attack: fgsm, loss: xent, "
     "eps: 2.0}", "attacks.fgsm_xent.eps", ["more than the whole [0, 1] range", "eps null"]),
    # the model store too, and no output among the checkout's own files
    ("data_dir: results/data", "store: ..\ndata_dir: results/data", "store",
     ["or a directory above it"]),
    ("data_dir: results/data", "store: .\ndata_dir: results/data", "store",
     ["is the working directory"]),
    ("data_dir: results/data", f"store: {REPO}/src\ndata_dir: results/data", "store",
     ["inside the checkout's own src/ folder"]),
    ("results: results/tiny", f"results: {REPO}/params/tiny", "results",
     ["inside the checkout's own params/ folder"]),
    ("data_dir: results/data", f"data_dir: {REPO}/results/data", None, []),  # a control
    # column names the table layout uses itself
    ("name: Train,", "name: k,", "tables.1.columns.0.name", ["'k'", "layout uses itself"]),
    ("name: Train,", "name: α,", "tables.1.columns.0.name", ["'α'", "layout uses itself"]),
    ("name: Train,", "name: model,", "tables.1.columns.0.name", ["'model'"]),
    ("name: Train,", "name: cell_id,", "tables.1.columns.0.name", ["'cell_id'"]),
    ("name: Train,", "name: seeds,", "tables.1.columns.0.name", ["'seeds'"]),
    ("name: Train,", "name: Test sd,", "tables.1.columns.0.name", ["'Test sd'", "<column> sd"]),
])
def test_bad_preset_is_one_line_naming_file_line_and_key(tmp_path, capsys, old, new, key, words):
    path, line = preset_with(tmp_path, old, new)
    code, err = validate_cli(capsys, path)
    if not words:  # a control edit: still valid
        assert code == 0 and not err, err
        return
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"lsqueeze validate: {path}:"), err
    where = re.match(rf"lsqueeze validate: {re.escape(str(path))}:(\d+)", err[0])
    assert where and int(where.group(1)) == line, (line, err)  # the edited line
    for w in ([f"config error at {key}:"] if key else []) + words:
        assert w in err[0], (w, err)


def test_empty_preset_is_one_line(tmp_path, capsys):
    path = tmp_path / "empty.yaml"
    path.write_text("{}\n")
    code, err = validate_cli(capsys, path)
    assert code == 2 and err == [f"lsqueeze validate: {path}: the preset is empty: it needs preset, "
                                 "results and tables (e.g. params/demo.yaml)"]


@pytest.mark.slow
def test_snakemake_refuses_an_empty_preset_instead_of_planning_the_paper(tmp_path):
    """`{}` is a preset given, not "no preset": the paper preset must not stand in for it."""
    preset = tmp_path / "empty.yaml"
    preset.write_text("{}\n")
    work = tmp_path / "work"
    work.mkdir()
    proc = run_snakemake(work, "-n", configfile=preset, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and f"{preset}: the preset is empty" in out, out[-2000:]
    assert "Traceback" not in out and "rule train" not in out
    assert listing(work) == []


def _alias_bomb(mapping: bool) -> str:
    """Nine levels of nine aliases: a few lines that stand for 9^9 values."""
    lines = ["  l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):
        refs = [f"k{j}: *l{i - 1}" if mapping else f"*l{i - 1}" for j in range(9)]
        lines.append(f"  l{i}: &l{i} " + ("{" + ", ".join(refs) + "}" if mapping
                                          else "[" + ", ".join(refs) + "]"))
    return "bomb:\n" + "\n".join(lines) + "\n"


@pytest.mark.parametrize("tail, words", [
    (_alias_bomb(mapping=False), ["more than 200000 values once its aliases are expanded"]),
    (_alias_bomb(mapping=True), ["more than 200000 values once its aliases are expanded"]),
    ("loop: &loop [*loop]\n", ["contains itself through an alias"]),
])
def test_alias_bomb_is_refused_in_one_line(tmp_path, tail, words):
    """A YAML "billion laughs" must not hang validation, nor a self-referring alias overflow it."""
    import subprocess
    import sys

    path = tmp_path / "bomb.yaml"
    path.write_text(TINY_TEXT + tail)
    proc = subprocess.run([sys.executable, "-m", "lsqueeze", "validate", str(path)],
                          capture_output=True, text=True, timeout=60)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1, proc.stderr[-2000:]
    assert err[0].startswith(f"lsqueeze validate: {path}:") and all(w in err[0] for w in words), err


def test_a_non_utf8_byte_is_one_line_naming_line_and_column(tmp_path, capsys):
    text = TINY_TEXT.replace("title: Table 1 (tiny)", "title: Table 1 (tiné)")
    line = text[:text.index("tiné")].count("\n") + 1
    column = text.index("tiné") - text.rfind("\n", 0, text.index("tiné")) + 3  # the é, 1-based
    path = tmp_path / "latin1.yaml"
    path.write_bytes(text.encode("latin-1"))
    code, err = validate_cli(capsys, path)
    assert code == 2 and err == [f"lsqueeze validate: {path}:{line}:{column}: not UTF-8 text "
                                 "(byte 0xe9); save the file as UTF-8"], err
    with pytest.raises(ConfigError, match="not UTF-8"):
        C.load_config(path)


def test_missing_or_unreadable_preset_is_one_line(tmp_path, capsys):
    code, err = validate_cli(capsys, tmp_path / "nope.yaml")
    assert code == 2 and err == [f"lsqueeze validate: {tmp_path / 'nope.yaml'}: no such file"]
    code, err = validate_cli(capsys, tmp_path)  # a directory
    assert code == 2 and len(err) == 1 and "cannot read" in err[0]


def test_duplicate_keys_are_refused_wherever_a_preset_is_read(tmp_path):
    path, _ = preset_with(tmp_path, "preset: tiny\n", "preset: tiny\npreset: other\n")
    for read in (C.load_config, validate_file, read_yaml):
        with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}:\d+:1: duplicate key 'preset'"):
            read(path)
    from lsqueeze.plan.restore import snapshot

    with pytest.raises(ConfigError, match="duplicate key"):
        snapshot(path, ["results"], root=tmp_path)


def test_numbers_spelled_with_a_plus_give_ids_the_workflow_matches(tmp_path):
    """1.0e+09 is written 1e+09 in ids (config.num): the wildcard patterns must accept it."""
    cfg = yaml.safe_load(TINY_TEXT)
    cfg["cells"]["squeeze"]["beta"] = 1.0e9
    cfg["attacks"]["pgd_xent"]["step_size"] = 1.0e9  # (an eps that large is refused: no bound)
    plan = C.build_plan(validate(cfg))
    assert any("sq1e+09" in c for c in plan.cells) and any("a1e+09" in a for a in plan.attacks)
    for cid in plan.cells:
        dataset, tag = cid.split("/")
        assert re.fullmatch(C.WILDCARDS["dataset"], dataset) and re.fullmatch(C.WILDCARDS["tag"], tag)
    assert all(re.fullmatch(C.WILDCARDS["attack"], a) for a in plan.attacks)
    common = (REPO / "workflow/rules/common.smk").read_text()
    for name, key in (("dataset", "dataset"), ("tag", "tag"), ("source", "tag"), ("attack", "attack")):
        assert f'{name}=WILDCARDS["{key}"]' in common  # one definition, shared with the check


@pytest.mark.slow
def test_snakemake_plans_a_cell_whose_id_has_a_plus(tmp_path):
    preset, _ = preset_with(tmp_path, "beta: 0.5,", "beta: 1.0e+9,")
    target = f"{cell_dir(preset, 'digits28/ls0-sq1e+09-gn0.5-k60-s0')}/metrics.json"
    proc = run_snakemake(tmp_path, "-n", target, configfile=preset)
    assert "rule train:" in proc.stdout and target in proc.stdout


@pytest.mark.slow
def test_snakemake_refuses_a_store_outside_the_results(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    proc = run_snakemake(work, "-n", "--config", "store=..", configfile=REPO / "tests/config/tiny.yaml",
                         check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "config error at store: '..' is the working directory" in out
    assert "Traceback" not in out and listing(work) == []


@pytest.mark.slow
def test_snakemake_refuses_a_duplicate_key_before_any_job(tmp_path):
    preset, line = preset_with(tmp_path, "sigma: 0.3,", "sigma: 0.3, sigma: 0.4,")
    work = tmp_path / "work"
    work.mkdir()
    proc = run_snakemake(work, "-n", configfile=preset, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and f"{preset}:{line}:" in out and "duplicate key 'sigma'" in out
    assert "Traceback" not in out
    assert listing(work) == []


def test_a_cw_confidence_is_in_the_attack_id_where_it_is_not_the_default():
    """It changes the number: two presets that differ only in it must not share a store file.
    At the default the id is what it always was, so existing stores keep their paths."""
    from lsqueeze.plan.build import attack_id
    from lsqueeze.registries.attack_kinds import resolve

    pgd = {"attack": "pgd", "loss": "cw", "eps": 0.3, "step_size": 0.01, "steps": 40,
           "random_start": True}
    ids = [attack_id(resolve({**pgd, **conf})) for conf in ({}, {"confidence": 50.0},
                                                             {"confidence": 0})]
    assert ids == ["pgd-cw-n40-e0.3-a0.01-r1-rand"] * 2 + ["pgd-cw-n40-e0.3-a0.01-r1-rand-c0"]
    fgsm = {"attack": "fgsm", "loss": "cw", "eps": 0.3}
    assert attack_id(resolve(fgsm)) == "fgsm-cw-e0.3"
    assert attack_id(resolve({**fgsm, "confidence": 10})) == "fgsm-cw-e0.3-c10"
    # the cross-entropy loss has no confidence: the same attack, the same id
    assert attack_id(resolve({**fgsm, "loss": "xent", "confidence": 10})) == "fgsm-xent-e0.3"
    for aid in ids + ["fgsm-cw-e0.3-c-5"]:
        assert re.fullmatch(C.WILDCARDS["attack"], aid)
