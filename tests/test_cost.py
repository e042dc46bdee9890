"""`lsqueeze cost`: projected GPU-hours from the committed step times, for every preset."""

import csv
import math
from pathlib import Path

import pytest

from conftest import PRESETS
from lsqueeze import cli
from lsqueeze.jobs import cost
from lsqueeze.plan.build import build_plan, load_config
from lsqueeze.registries.attack_kinds import image_steps

PARAMS = Path(__file__).resolve().parents[1] / "params"


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_every_preset_has_a_finite_positive_cost(preset):
    est = cost.estimate(load_config(preset))
    total = est["total"]
    assert math.isfinite(total["total_h"]) and total["total_h"] > 0
    assert total["total_h"] == pytest.approx(total["train_h"] + total["attack_h"])
    assert est["tables"] and all(t["total_h"] > 0 for t in est["tables"].values())


def _csv_seconds(arch, kind):
    with open(cost.STEP_TIMES, newline="") as fh:
        return next(float(r["seconds"]) for r in csv.DictReader(fh)
                    if r["gpu"] == "h100" and r["arch"] == arch and r["kind"] == kind)


def test_paper_tables_cost_what_their_cells_cost():
    """Each table's training hours are its own cells' (rows + black-box source) steps × the
    measured step time; the total counts every cell once."""
    config = load_config(PARAMS / "paper.yaml")
    plan = build_plan(config)
    est = cost.estimate(config)

    def cell_hours(cid):
        cell = plan.cells[cid]
        arch = plan.recipe(cell["dataset"])["arch"]["name"]
        factor = 1 + (cell["adv"]["steps"] if cell["method"] == "adv" else 0)
        return cell["steps"] * factor * _csv_seconds(arch, "train") / 3600

    sources = {plan.cells[s]["dataset"]: s for _, s, _ in plan.black}
    for table in plan.tables:
        cells = {c for r in table["rows"] for c in r["cell_ids"]}  # every seed of a row
        if any(col.get("threat") == "black" for col in table["columns"]):
            cells |= {sources[plan.cells[c]["dataset"]] for c in cells}
        got = est["tables"][str(table["id"])]
        assert got["cells"] == len(cells)
        assert got["train_h"] == pytest.approx(sum(cell_hours(c) for c in cells))
    assert est["total"]["train_h"] == pytest.approx(sum(cell_hours(c) for c in plan.cells))
    per_table = [t["total_h"] for t in est["tables"].values()]
    assert max(per_table) <= est["total"]["total_h"] <= sum(per_table)


def test_attack_passes_scale_with_steps_restarts_and_images():
    assert image_steps({"attack": "fgsm"}) == 1
    pgd = {"attack": "pgd", "steps": 40, "restarts": 10, "random_start": True}
    assert image_steps(pgd) == 400
    assert image_steps({**pgd, "random_start": False}) == 40  # restarts are identical
    config = load_config(PARAMS / "table2.yaml")
    full = cost.estimate(config)["total"]["attack_h"]
    tenth = cost.estimate({**config, "eval": {**config["eval"], "n_test": 1000}})["total"]["attack_h"]
    assert tenth == pytest.approx(full / 10)


def test_cli_prints_the_table_and_names_an_unknown_gpu(capsys):
    assert cli.main(["cost", "--configfile", str(PARAMS / "table2.yaml")]) == 0
    out = capsys.readouterr().out
    assert "| 2 |" in out and "**all**" in out and "measured" in out
    assert cli.main(["cost", "--configfile", str(PARAMS / "table2.yaml"), "--gpu", "v100"]) == 2
    err = capsys.readouterr().err
    assert "v100" in err and "h100" in err


def test_readme_cost_table_is_what_cost_computes():
    """The README's models and GPU-hours columns, and its whole-paper total, come from
    `lsqueeze cost --readme`."""
    import re

    readme = (PARAMS.parent / "README.md").read_text()
    generated = {m.group(1): (m.group(2), m.group(3)) for m in re.finditer(
        r"\| `(table\d+|paper)\.yaml`[^|]*\| (\d+) \| (~[\d.]+) \|", cost.readme_table())}
    rows = {m.group(1): (m.group(2), m.group(3)) for m in re.finditer(
        r"^\| \d+ \(`(table\d+)\.yaml`\) \| [^|]+ \| (\d+) \| (~[\d.]+) \|$", readme, re.M)}
    assert rows == {k: v for k, v in generated.items() if k != "paper"} and len(rows) == 11
    models, hours = generated["paper"]
    assert f"(`paper.yaml`: {models}\nmodels" in readme or f"(`paper.yaml`: {models} models" in readme
    assert f"is {hours} GPU-hours" in readme


def test_cost_takes_the_preset_like_validate_and_survives_a_closed_pipe(capsys):
    import subprocess
    import sys

    assert cli.main(["cost", str(PARAMS / "table2.yaml")]) == 0
    out = capsys.readouterr().out
    assert "| 2 |" in out and "fp32 cells are projected from bf16 step times" in out
    # the reader of a pipe leaves before the table is written (`| head -1` on a long table)
    code = ("import sys, builtins; from lsqueeze import cli\n"
            "def gone(*a, **k): raise BrokenPipeError(32, 'Broken pipe')\n"
            "builtins.print = gone\n"
            f"sys.exit(cli.main(['cost', {str(PARAMS / 'paper.yaml')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
