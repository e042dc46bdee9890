"""DVC around Snakemake, end to end and offline, on the tiny preset in throwaway git repos.

Repo A: `dvc repro` runs the pipeline, `dvc push` to the default local remote (a directory beside
the clone). Repo B, a fresh `git clone` of A: `dvc pull` + `lsqueeze restore`, then Snakemake has
nothing to do and the tables are byte-identical. Editing one cell and `dvc repro` retrains that cell
only, and `dvc params diff` / `dvc metrics diff` show the edit and what it did.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from lsqueeze.runtime.files import file_digest

BIN = Path(sys.executable).parent
NOTHING = "Nothing to be done"
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
       # DVC must not phone home (the repo's .dvc/config also sets core.analytics = false)
       "DVC_NO_ANALYTICS": "1", "DVC_STUDIO_OFFLINE": "1",
       "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
       "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}


def sh(cwd, *cmd, check=True, timeout=1200):
    # The code under test is the repo's own copy (src/), not whatever the venv has installed.
    env = {**ENV, "PYTHONPATH": str(Path(cwd) / "src")}
    proc = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def _copy_tree(dst: Path) -> None:
    """The working tree as git sees it (tracked + untracked, minus ignored): what a commit of the
    current work would contain, so the test checks uncommitted edits too and runs on a fresh clone."""
    files = sh(REPO, "git", "ls-files", "-z", "--cached", "--others", "--exclude-standard").stdout
    for rel in filter(None, files.split("\0")):
        src = REPO / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)


def _files(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _dry_run(repo: Path):
    return sh(repo, "snakemake", "-n", "--cores", "1", "--configfile", "params/tiny.yaml")


def _jobs_in_last_log(repo: Path) -> list[tuple[str, str]]:
    """(rule, output) of every job in Snakemake's newest log file."""
    log = max((repo / ".snakemake" / "log").glob("*.snakemake.log"), key=os.path.getmtime)
    text = log.read_text()
    return re.findall(r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    output: ([^,\n]+)", text, re.M)


@pytest.mark.slow
def test_repro_push_pull_restore_and_one_cell_edit(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    _copy_tree(a)
    shutil.copy(REPO / "tests" / "config" / "tiny.yaml", a / "params" / "tiny.yaml")
    (a / "params.yaml").write_text("preset: tiny\n")
    for rel in ("dvc.lock", "metrics"):  # a committed demo run is not part of this run
        shutil.rmtree(a / rel, ignore_errors=True) if (a / rel).is_dir() else (a / rel).unlink(
            missing_ok=True)
    sh(a, "git", "init", "-q")
    sh(a, "git", "add", "-A")
    sh(a, "git", "commit", "-qm", "tree under test, tiny preset")

    # --- A: versioned run ---------------------------------------------------------------------
    sh(a, "dvc", "repro")
    assert NOTHING in _dry_run(a).stdout, "DVC's commit of the outs disturbed Snakemake's state"
    tables_a = {p.stem: json.loads(p.read_text()) for p in (a / "metrics/tiny/tables").glob("*.json")}
    assert {"1", "2"} <= set(tables_a)  # a few scalars per table, not every number
    assert all(len(t) <= 5 for t in tables_a.values()), tables_a
    assert (a / "metrics/tiny/models/smooth.json").is_file()
    csv_a = (a / "metrics" / "tiny_compare.csv").read_text()
    assert csv_a.startswith("table,cell,column,") and "\n2,smooth,Test," in csv_a
    sh(a, "git", "add", "dvc.lock", "metrics")
    sh(a, "git", "commit", "-qm", "tiny run")
    sh(a, "dvc", "push")  # default remote: ../lsqueeze-dvc-remote beside the clone
    assert (tmp_path / "lsqueeze-dvc-remote").is_dir()

    # --- B: fresh clone, pull, restore --------------------------------------------------------
    sh(tmp_path, "git", "clone", "-q", str(a), str(b))
    # Before any pull: plots and metrics come from committed files alone.
    plots = sh(b, "dvc", "plots", "show", "-o", "plots-out")
    assert (b / "plots-out" / "index.html").is_file(), plots.stdout + plots.stderr
    assert "smooth" in (b / "plots-out" / "index.html").read_text()
    shown = json.loads(sh(b, "dvc", "metrics", "show", "--json").stdout)
    assert shown and "values" not in json.dumps(shown)
    out = sh(b, sys.executable, "-m", "lsqueeze", "pull").stdout  # = make pull: dvc pull + restore
    assert "restored Snakemake metadata" in out
    assert "Data and pipelines are up to date" in sh(b, "dvc", "status").stdout  # nothing else
    dry = _dry_run(b)
    assert NOTHING in dry.stdout, dry.stdout[-3000:]
    tables_a, tables_b = _files(a / "results/tiny/tables"), _files(b / "results/tiny/tables")
    assert tables_a and tables_a == tables_b

    # The restored metadata is what lets Snakemake see a rule-param edit that changes no path:
    # without it a pulled workspace would call these stale evaluations up to date.
    preset = b / "params" / "tiny.yaml"
    original = preset.read_text()
    preset.write_text(original.replace("n_test: 100, batch_size", "n_test: 90, batch_size"))
    dry = _dry_run(b)
    assert NOTHING not in dry.stdout and "evaluate_white" in dry.stdout, dry.stdout[-3000:]
    preset.write_text(original)
    assert NOTHING in _dry_run(b).stdout

    # --- B: one cell's parameter changes; only that cell retrains ------------------------------
    cfg = yaml.safe_load(original)
    assert cfg["cells"]["smooth"]["alpha"] == 0.2
    preset.write_text(original.replace("smooth: {dataset: digits28, alpha: 0.2,",
                                       "smooth: {dataset: digits28, alpha: 0.1,"))
    models = b / "results/store/digits28"  # the model store: <dataset>/<recipe>/<cell>
    before = {p.parent.name: p.stat().st_mtime_ns for p in models.glob("*/*/model.pt")}
    refused = sh(b, sys.executable, "-m", "lsqueeze", "restore", check=False)
    assert refused.returncode == 2 and "params/tiny.yaml" in refused.stderr, refused.stderr
    params_diff = sh(b, "dvc", "params", "diff").stdout
    assert "cells.smooth.alpha" in params_diff and "0.1" in params_diff, params_diff
    sh(b, "dvc", "repro")

    jobs = _jobs_in_last_log(b)
    trained = [o for rule, o in jobs if rule == "train"]
    assert len(trained) == 1 and "/ls0.1-" in trained[0], jobs
    assert {rule for rule, _ in jobs} >= {"train", "evaluate_white", "aggregate"}
    after = {p.parent.name: p.stat().st_mtime_ns for p in models.glob("*/*/model.pt")}
    assert {k: after[k] for k in before if "ls0.2" not in k} == {
        k: v for k, v in before.items() if "ls0.2" not in k}, "another cell was retrained"
    assert any(k.startswith("ls0.1-") for k in after)

    # The comparison CSV (the plots data) keys numbers by the preset's cell name: only the
    # edited cell's rows change (the others' models and attacks were not rerun).
    def rows(text):
        return {tuple(r.split(",")[:3]): r for r in text.splitlines()[1:]}

    before_rows, after_rows = rows(csv_a), rows((b / "metrics" / "tiny_compare.csv").read_text())
    assert before_rows.keys() == after_rows.keys()
    changed = {k for k in before_rows if before_rows[k] != after_rows[k]}
    assert changed and {k[1] for k in changed} == {"smooth"}, changed


def _record(store, key, inputs):
    from snakemake.persistence import MetadataRecord

    store._write_record(key, MetadataRecord(rule="r", input=inputs, params=["'x'"],
                                            record_format_version=6, incomplete=False))


def test_snapshot_restore_order_records_and_reanchoring(tmp_path):
    """Unit level: times come back in the original order (ties kept), records come back with the
    original checkout's absolute paths re-anchored, changed files lose both."""
    from lsqueeze.plan import restore

    orig, clone = tmp_path / "orig", tmp_path / "clone"
    files = {"results/data/d/train.pt": 100, "results/p/models/m.pt": 200,
             "results/p/eval/e.json": 300, "results/p/eval/f.json": 300,
             "results/p/tables/t.parquet": 400}
    for rel, t in files.items():
        (orig / rel).parent.mkdir(parents=True, exist_ok=True)
        (orig / rel).write_text(rel)
        os.utime(orig / rel, ns=(t * 10**9, t * 10**9))
    (orig / "p.yaml").write_text("results: results/p\ndata_dir: results/data\n"
                                 "store: results/p/store\n")
    store = restore._persistence(orig)
    _record(store, "results/p/models/m.pt", [f"{orig}/params/ref.csv", "results/data/d/train.pt"])
    with pytest.raises(restore.RestoreError, match="data_dir"):
        restore.snapshot(orig / "p.yaml", ["results/p"], root=orig)
    state = restore.snapshot(orig / "p.yaml", ["results/data", "results/p"], root=orig)
    assert state == orig / "results/p" / restore.STATE_NAME

    shutil.copytree(orig / "results", clone / "results")  # a pull: fresh, scrambled times
    for i, rel in enumerate(reversed(sorted(files))):
        os.utime(clone / rel, ns=(10**18 + i, 10**18 + i))
    (clone / "results/p/eval/f.json").write_text("edited after the run, so longer")
    os.utime(clone / "results/p/eval/f.json", ns=(10**18 + 9, 10**18 + 9))
    done = restore.restore(root=clone, state_file=clone / "results/p" / restore.STATE_NAME,
                           stage=None)
    assert done["skipped"] == ["results/p/eval/f.json"] and done["records"] == 1
    mt = {rel: (clone / rel).stat().st_mtime_ns for rel in files}
    order = ["results/data/d/train.pt", "results/p/models/m.pt", "results/p/eval/e.json",
             "results/p/tables/t.parquet"]
    assert [mt[r] for r in order] == sorted(mt[r] for r in order) and len(set(mt.values())) == 5
    assert mt["results/p/eval/f.json"] == 10**18 + 9  # the changed file keeps its fresh time
    rec = restore._persistence(clone)._read_record("results/p/models/m.pt")
    assert rec.input == [f"{clone}/params/ref.csv", "results/data/d/train.pt"]
    assert rec.params == ["'x'"] and rec.incomplete is False


def test_metrics_keys_are_cell_names(tmp_path):
    import pandas as pd

    from lsqueeze.report.dvc_metrics import write_metrics

    test = {"name": "Test", "metric": "test_accuracy"}
    pgd = {"name": "x", "threat": "white", "attack_id": "pgd",
           "attack_paper": {"attack": "pgd", "loss": "xent", "eps": 0.3, "restarts": 1}}
    plan = {"tolerance_pct": 5, "tables": [{"id": "2", "columns": [test, pgd], "rows": [
        {"cell": "smooth", "cell_id": "digits28/ls0.2-sq0-gn0.3-k60-s0", "label": "LS + noise"},
        {"cell": "squeeze", "cell_id": "digits28/ls0-sq0.5-gn0.5-k60-s0"}]}]}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    pd.DataFrame([
        {"table": "2", "row": 8, "cell_id": "digits28/ls0.2-sq0-gn0.3-k60-s0", "column": "Test",
         "measured_pct": 90.0, "published_pct": 99.0, "delta_pct": -9.0},
        {"table": "2", "row": 8, "cell_id": "digits28/ls0.2-sq0-gn0.3-k60-s0", "column": "x",
         "measured_pct": None, "published_pct": 70.0, "delta_pct": None},
        {"table": "2", "row": 1, "cell_id": "digits28/ls0-sq0.5-gn0.5-k60-s0", "column": "Test",
         "measured_pct": 97.0, "published_pct": 99.0, "delta_pct": -2.0},
        {"table": "2", "row": 1, "cell_id": "digits28/ls0-sq0.5-gn0.5-k60-s0", "column": "x",
         "measured_pct": 50.123, "published_pct": None, "delta_pct": None},
    ]).assign(measurement=lambda f: f.cell_id + "|" + f.column,  # lsqueeze.report.agreement.judge's
              status=["outside", None, "within", None], replicate_spread_pct=None  # columns
              ).to_parquet(tmp_path / "table_2_compare.parquet")
    (tmp_path / "m" / "models").mkdir(parents=True)
    (tmp_path / "m" / "models" / "gone.json").write_text("{}")  # a model an older run had
    m = write_metrics(tmp_path / "plan.json", tmp_path, tmp_path / "m", tmp_path / "c.csv",
                      tmp_path / "c.png")
    assert m["compared"] == 2 and m["within_tolerance"] == 1
    t = m["tables"]["2"]
    assert t["mean_abs_delta"] == 5.5 and t["compared"] == 2 and t["within_tolerance"] == 1
    assert "values" not in t  # every number goes to the CSV, not to `dvc metrics show`
    # a few headline accuracies per model, by the preset's cell name; none where not measured
    assert m["accuracy_pct"] == {"smooth": {"clean": 90.0},
                                 "squeeze": {"clean": 97.0, "pgd": 50.12}}
    # one file per model, per table, and the summary: `dvc metrics show` prints a line for each
    files = {p.relative_to(tmp_path / "m").as_posix(): json.loads(p.read_text())
             for p in (tmp_path / "m").rglob("*.json")}
    # each model's name as the tables print it: its row's label (a plan without the cells'
    # settings and a row without a label: the cell name)
    assert files == {"models/smooth.json": {"clean": 90.0, "model": "LS + noise"},
                     "models/squeeze.json": {"clean": 97.0, "pgd": 50.12, "model": "squeeze"},
                     "tables/2.json": t,
                     "summary.json": {k: v for k, v in m.items()
                                      if k not in ("tables", "accuracy_pct", "model")}}
    from lsqueeze.cli import main  # the stage's command, into the directory a run left

    assert main(["metrics", "--plan", str(tmp_path / "plan.json"), "--tables", str(tmp_path),
                 "--out", str(tmp_path / "m")]) == 0
    assert json.loads((tmp_path / "m/models/smooth.json").read_text()) == {
        "clean": 90.0, "model": "LS + noise"}
    assert m["environment_lock"] == "sha256:" + file_digest(REPO / "requirements.lock")
    # the plot's data: only numbers with a published value and a measured one (none at 0)
    lines = (tmp_path / "c.csv").read_text().splitlines()
    assert lines == ["table,cell,column,measured,published,delta", "2,smooth,Test,90.0,99.0,-9.0",
                     "2,squeeze,Test,97.0,99.0,-2.0"]
    # the same plot as a PNG, which `dvc plots show` shows offline (dvc.yaml declares both)
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    plots = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["pipeline"]["plots"]
    assert [next(iter(p)) for p in plots] == ["metrics/${preset}_compare.csv",
                                              "metrics/${preset}_compare.png"]


def test_dvc_metrics_show_one_line_per_model_at_the_papers_size(tmp_path):
    """The paper preset's plan, every number measured (100.00, the widest): `dvc metrics show`
    prints one line per model, per table and the summary; the models alone (the README's view)
    fit 100 columns."""
    import pandas as pd

    from lsqueeze.plan.build import build_plan, load_config
    from lsqueeze.report.dvc_metrics import write_metrics

    plan = build_plan(load_config(REPO / "params" / "paper.yaml"))
    (tmp_path / "plan.json").write_text(json.dumps({"tolerance_pct": 5, "tables": plan.tables}))
    for t in plan.tables:
        pd.DataFrame([{"table": str(t["id"]), "row": i, "cell_id": r["cell_id"], "column": c["name"],
                       "measured_pct": 100.0, "published_pct": 100.0, "delta_pct": 0.0,
                       "measurement": f"{r['cell_id']}|{c['name']}", "status": "within",
                       "replicate_spread_pct": None}
                      for i, r in enumerate(t["rows"]) for c in t["columns"]]
                     ).to_parquet(tmp_path / f"table_{t['id']}_compare.parquet")
    repo = tmp_path / "repo"
    repo.mkdir()
    sh(repo, "git", "init", "-q")
    sh(repo, "dvc", "init", "-q")
    m = write_metrics(tmp_path / "plan.json", tmp_path, repo / "metrics" / "paper")
    models, tables = m["accuracy_pct"], m["tables"]
    assert len(models) >= 50 and len(tables) == len(plan.tables)
    everything = sh(repo, "dvc", "metrics", "show", "metrics/paper").stdout.splitlines()
    assert len(everything) == 1 + 1 + len(tables) + len(models), everything[:3]
    shown = sh(repo, "dvc", "metrics", "show", "metrics/paper/models").stdout.splitlines()
    assert len(shown) == 1 + len(models)
    assert shown[0].split() == ["Path", "aa", "clean", "model", "pgd", "worst"]
    assert max(map(len, shown)) <= 120, max(shown, key=len)  # the path, the name, 4 numbers
    assert all(f"metrics/paper/models/{cell}.json" in "\n".join(shown) for cell in models)


def test_plot_template_skips_unpublished_points_and_draws_y_equals_x():
    """The committed Vega-Lite template, filled by DVC's renderer as `dvc plots show` fills it:
    a point needs both numbers, the tooltip names table, cell and column, a y = x line."""
    from dvc_render import VegaRenderer

    points = [{"table": "2", "cell": "smooth", "column": "Test", "measured": "90.0",
               "published": "99.0", "delta": "-9.0", "rev": "workspace"},
              {"table": "strong", "cell": "squeeze", "column": "AutoAttack", "measured": "0.0",
               "published": "", "delta": "", "rev": "workspace"}]
    props = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["pipeline"]["plots"][0]
    props = dict(next(iter(props.values())))
    assert props["template"] == "measured_vs_published"
    renderer = VegaRenderer(points, "metrics/tiny_compare.csv", template_dir=str(REPO / ".dvc/plots"),
                            **{k: v for k, v in props.items() if k not in ("cache", "persist")})
    spec = renderer.get_filled_template()
    text = json.dumps(spec)
    assert "<DVC_METRIC" not in text and spec["data"]["values"] == points
    line, dots = spec["layer"]
    assert line["mark"]["type"] == "line" and line["encoding"]["x"]["field"] == \
        line["encoding"]["y"]["field"] == "percent"
    assert [v["percent"] for v in line["data"]["values"]] == [0, 100]
    keep = dots["transform"][0]["filter"]
    assert "datum['published'] !== ''" in keep and "datum['measured'] !== ''" in keep
    assert (dots["encoding"]["x"]["field"], dots["encoding"]["y"]["field"]) == ("published",
                                                                                "measured")
    assert {"table", "cell", "column", "measured", "published", "delta"} <= {
        t["field"] for t in dots["encoding"]["tooltip"]}
    assert dots["encoding"]["x"]["title"] == "published accuracy (%)"


def test_a_committed_dvc_lock_is_the_commits_own():
    """`dvc status` in a fresh clone tells the truth. The repository commits no dvc.lock and no
    metrics of its own (the README says the first `dvc repro` writes them): a lock committed
    beside the code goes stale with the first code change. A commit that records a run (README,
    "Versioning with DVC") commits its lock, whose code and params must then be the commit's."""
    tracked = sh(REPO, "git", "ls-files", "dvc.lock", "metrics").stdout.split()
    if not tracked:
        readme = (REPO / "README.md").read_text()
        assert "commits no `dvc.lock`" in readme and "the first `dvc repro` writes" in readme
        return
    status = json.loads(sh(REPO, "dvc", "status", "--json").stdout or "{}")
    changed = [entry for stage in status.values() for entry in stage
               if isinstance(entry, dict) and ("changed deps" in entry or "changed params" in entry)]
    assert not changed, f"dvc.lock is not this commit's run (dvc repro, or git rm it): {changed}"


def test_gitignore_keeps_dvc_and_report_outputs_out():
    ignored = sh(REPO, "git", "check-ignore", "dvc_plots/index.html", "report.html").stdout
    assert ignored.split() == ["dvc_plots/index.html", "report.html"]


def test_pull_with_an_unreachable_remote_says_so_in_one_line(tmp_path):
    """A fresh clone whose remote is the author's sibling directory: one line, no traceback."""
    repo = tmp_path / "clone"
    (repo / ".dvc").mkdir(parents=True)
    shutil.copy(REPO / ".dvc" / "config", repo / ".dvc" / "config")
    sh(repo, "git", "init", "-q")
    env = {**ENV, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-m", "lsqueeze", "pull"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    missing = tmp_path / "lsqueeze-dvc-remote"
    assert str(missing) in lines[0] and "does not exist on this machine" in lines[0]
    assert "dvc remote modify local url" in lines[0]
    missing.mkdir()  # once the store is there, the check passes and names it
    from lsqueeze.jobs.remote import check_remote

    assert check_remote(repo) == str(missing)


def test_a_failed_pull_warns_against_force(monkeypatch, tmp_path):
    """DVC's own message after a failed checkout suggests --force, which deletes every output the
    remote lacks: `lsqueeze pull` steers away from it, in the README's words."""
    from lsqueeze.jobs import remote

    monkeypatch.setattr(remote, "check_remote", lambda root, name: "/some/store")
    monkeypatch.setattr(remote.subprocess, "run",
                        lambda *a, **k: subprocess.CompletedProcess(a, 1))
    with pytest.raises(remote.RemoteError, match="no dvc.lock here: this commit records no run"):
        remote.pull(tmp_path, None)  # nothing recorded: nothing to pull
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    with pytest.raises(remote.RemoteError, match="Do not rerun it with --force.*fix the remote"):
        remote.pull(tmp_path, None)
    readme = (REPO / "README.md").read_text()
    assert "do not use `dvc pull --force`" in readme
