"""The paper preset: every published number has a (row, column), every model a training job."""

import json
import re
import time

import pandas as pd
import pytest
import yaml

from conftest import PRESETS, REPO, run_snakemake
from lsqueeze.jobs.paper_presets import dump, make_preset
from lsqueeze.plan.build import build_plan, load_config
from lsqueeze.plan.schema import validate
from lsqueeze.report.tables import published

CSV = REPO / "src/lsqueeze/data/paper_tables.csv"
PAPER = REPO / "params" / "paper.yaml"
BASELINE = {"natural": "natural", "adv": "adv", "madry_adv": "adv", "pgd2_adv": "adv"}


@pytest.fixture(scope="module")
def plan():
    return build_plan(validate(load_config(PAPER)))


# Figures 2 and 8 compare two models that no table has: the weak (PGD-2) adversary and logit
# squeezing without noise. Every other figure model is a table cell.
FIGURE_ONLY = {"mnist/at2-e0.3-a0.2-rand-k100k-s0", "mnist/ls0-sq0.5-gn0-k400k-s0"}


def table_cells(plan) -> dict:
    ids = {c for t in plan.tables if not str(t["id"]).startswith("strong")
           for r in t["rows"] for c in r["cell_ids"]} | {s for _, s, _ in plan.black}
    return {cid: plan.cells[cid] for cid in ids}


def expected_models() -> set:
    """Distinct trained models read straight from the CSV (independently of presets.py):
    regularized (dataset, α, β, σ, k, seed) — a row repeating an earlier row's parameters in the
    same table (Table 6 rows 14/15) is a replicate with the next seed — one natural / adversarial
    baseline per dataset, and the black-box sources (MNIST: natural; CIFAR-10: a second
    adversarially trained model, seed 1)."""
    ref = pd.read_csv(CSV)
    rows = ref[ref.model == "regularized"].drop_duplicates(["table", "row"])
    sweeps = {9, 10, 11}  # one model, one row per attack
    seed = rows.groupby(["table", "dataset", "alpha", "beta", "sigma", "k"]).cumcount()
    models = {("reg", r.dataset, float(r.alpha), float(r.beta), float(r.sigma), int(r.k),
               0 if r.table in sweeps else int(s)) for r, s in zip(rows.itertuples(), seed)}
    models |= {(BASELINE[r.model], r.dataset, 0) for r in ref[ref.model != "regularized"].itertuples()}
    black = set(ref[ref.threat == "black"].dataset)
    models |= {("natural", "mnist", 0)} & {("natural", d, 0) for d in black}
    models |= {("adv", "cifar10", 1)} & {("adv", d, 1) for d in black}
    # headline rows train with seeds 0, 1, 2 (mean ± sd in the tables, spread in the claims)
    headline = {1: {1, 2, 3, 4}, 2: {1, 4, 8, 13}, 3: {1, 5, 7, 8}, 5: {1, 2, 3}}
    for r in ref.drop_duplicates(["table", "row"]).itertuples():
        if r.row in headline.get(r.table, ()):
            for s in (1, 2):
                models.add(("reg", r.dataset, float(r.alpha), float(r.beta), float(r.sigma),
                            int(r.k), s) if r.model == "regularized" else (BASELINE[r.model], r.dataset, s))
    return models


def _key(cell: dict):
    if cell["method"] == "adv":
        return ("adv", cell["dataset"], cell["seed"])
    if cell["alpha"] == cell["beta"] == cell["sigma"] == 0 and cell["dataset"] in ("mnist", "cifar10") \
            and cell["steps"] in (100_000, 80_000):
        return ("natural", cell["dataset"], cell["seed"])
    return ("reg", cell["dataset"], cell["alpha"], cell["beta"], cell["sigma"], cell["steps"],
            cell["seed"])


def test_every_paper_model_is_a_cell(plan):
    cells = table_cells(plan)
    assert {_key(c) for c in cells.values()} == expected_models()
    # 63 parameter sets, 2 replicates (Table 6 rows 14/15), the CIFAR-10 black-box source, and
    # two more seeds of the 13 distinct headline models (Table 1's baselines are Tables 2/3's
    # Madry rows too; CIFAR-10 Madry seed 1 is the black-box source already)
    assert len(cells) == len(expected_models()) == 66 + 2 * 13 - 1
    assert set(plan.cells) - set(cells) == FIGURE_ONLY


def test_every_published_number_has_a_place(plan):
    """Each CSV row is the published value of exactly one (table row, column) of the preset."""
    ref = pd.read_csv(CSV)
    hits = []
    for table in plan.tables:
        if "paper_table" not in table:  # the stronger attacks are beyond the paper
            assert str(table["id"]).startswith("strong-")
            continue
        for row in table["rows"]:
            for col in table["columns"]:
                v = published(ref, table, row, col)
                assert v is not None, (table["id"], row, col["name"])
                hits.append((table["paper_table"], row.get("paper_row"), col["name"], v))
    assert len(hits) == len(ref)  # 710 numbers, none twice, none missing
    assert len(set(hits)) == len(hits)


def test_preset_cells_match_the_csv_rows(plan):
    ref = pd.read_csv(CSV)
    for table in (t for t in plan.tables if "paper_table" in t):
        for row in table["rows"]:
            cell = plan.cells[row["cell_id"]]
            sub = ref[ref.table == table["paper_table"]]
            r = sub[sub.row == row["paper_row"]].iloc[0] if "paper_row" in row else sub.iloc[0]
            assert r.dataset == cell["dataset"]
            if r.model == "regularized":
                assert (r.alpha, r.beta, r.sigma, r.k) == (cell["alpha"], cell["beta"], cell["sigma"],
                                                           cell["steps"])
            else:
                assert cell["method"] == ("adv" if "adv" in r.model else "regularized")


def test_baselines_and_sources_follow_the_paper(plan):
    cells = {cid: c for cid, c in table_cells(plan).items() if c["method"] == "adv"}
    by_ds = {c["dataset"]: c for c in cells.values()}
    assert by_ds["mnist"]["adv"]["steps"] == 40 and by_ds["mnist"]["adv"]["step_size"] == 0.01
    assert by_ds["cifar10"]["adv"]["steps"] == 7 and by_ds["cifar10"]["adv"]["step_size"] == 2
    assert (by_ds["cifar100"]["adv"]["steps"], by_ds["cifar100"]["adv"]["step_size"]) == (2, 5)
    assert {c["dataset"]: c["steps"] for c in cells.values()} == {"mnist": 100_000, "cifar10": 80_000,
                                                                  "cifar100": 80_000}
    sources = {s for _, s, _ in plan.black}
    assert sources == {"mnist/ls0-sq0-gn0-k100k-s0", "cifar10/at7-e8-a2-rand-k80k-s1"}
    # CIFAR attacks are in 0-255 units and converted by the pixel scale only in jobs
    a = plan.attack_spec("pgd-xent-n20-e8-a2-r1-rand", "cifar10")
    assert a["eps"] == pytest.approx(8 / 255) and a["step_size"] == pytest.approx(2 / 255)


def test_committed_presets_are_generated_from_the_csv():
    assert dump(make_preset(CSV)) == PAPER.read_text(), "run `lsqueeze make-preset`"
    for t in range(1, 12):
        text = (REPO / "params" / f"table{t}.yaml").read_text()
        assert dump(make_preset(CSV, tables={t}, name=f"table{t}")) == text


def test_per_table_presets_reuse_the_paper_ids(plan):
    union = set()
    for t in range(1, 12):
        sub = build_plan(validate(load_config(REPO / "params" / f"table{t}.yaml")))
        assert set(sub.cells) <= set(plan.cells)
        assert {tb["paper_table"] for tb in sub.tables} == {t}
        union |= set(sub.cells)
    assert union == set(plan.cells) - FIGURE_ONLY


def test_dry_run_lists_every_training_job_in_seconds(tmp_path, plan):
    t0 = time.perf_counter()
    proc = run_snakemake(tmp_path, "-n", "--quiet", "rules")
    elapsed = time.perf_counter() - t0
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout, flags=re.M))
    assert int(counts["train"]) == len(plan.cells) == 91 + len(FIGURE_ONLY)
    assert int(counts["evaluate_white"]) == len(plan.white)
    assert int(counts["evaluate_black"]) == len(plan.black)
    assert int(counts["craft"]) == len(plan.crafted)
    assert elapsed < 30, f"dry run took {elapsed:.1f}s"


def test_no_black_box_job_attacks_its_own_target(plan):
    """Tables 4 and 8 list Madry's model as a black-box target; its source is another PGD-7 model
    (seed 1), as the published numbers attack an independently trained model."""
    assert plan.black and all(t != s for t, s, _ in plan.black)
    madry = "cifar10/at7-e8-a2-rand-k80k-s0"
    assert {s for t, s, _ in plan.black if t == madry} == {"cifar10/at7-e8-a2-rand-k80k-s1"}
    assert len({a for t, _, a in plan.black if t == madry}) == 6


def test_plan_refuses_a_source_that_is_its_target():
    cfg = yaml.safe_load(PAPER.read_text())
    cfg["blackbox_sources"]["cifar10"] = "cifar10-madry"  # the Madry row's own model
    with pytest.raises(ValueError) as err:
        build_plan(cfg)
    msg = str(err.value)
    assert "\n" not in msg and "table 4 " in msg and "cifar10-madry" in msg and "own model" in msg


def test_mnist_madry_black_box_pgd_is_the_leaderboard_attack(plan):
    """mnist_challenge's leaderboard: 96.81% for "PGD on the cross-entropy loss for the naturally
    trained public network" (40 steps of 0.01, random start) — Table 2 row 13 / Table 6 row 40."""
    ref = pd.read_csv(CSV)
    leaderboard = "pgd-xent-n40-e0.3-a0.01-r1-rand"
    madry, natural = "mnist/at40-e0.3-a0.01-rand-k100k-s0", "mnist/ls0-sq0-gn0-k100k-s0"
    for tid, paper_row in (("2", 13), ("6", 40)):
        table = next(t for t in plan.tables if t["id"] == tid)
        row = next(r for r in table["rows"] if r.get("paper_row") == paper_row)
        col = next(c for c in table["columns"] if c["name"] == "black PGD-40 CW")
        assert row["cell_id"] == madry and row["attack_ids"] == {col["name"]: leaderboard}
        assert published(ref, table, row, col) == pytest.approx(96.81)
        assert plan.attacks[leaderboard]["loss"] == "xent" and plan.attacks[leaderboard]["random_start"]
        # every other row keeps the column's attack: PGD-40 on the CW loss, no random start
        assert col["attack_id"] == "pgd-cw-n40-e0.3-a0.01-r1"
        assert not any("attack_ids" in r for r in table["rows"] if r is not row)
    assert (madry, natural, leaderboard) in plan.black
    assert (madry, natural, "pgd-cw-n40-e0.3-a0.01-r1") not in plan.black


def test_noise_cells_clip_and_train_in_fp32(plan):
    """The authors' code clips noisy images to [0,1]; the paper trained in fp32."""
    noisy = [c for c in plan.cells.values() if c["sigma"] > 0]
    assert noisy and all(c["clip_noise"] for c in noisy)
    assert all(cid.endswith("-clip") for cid, c in plan.cells.items() if c["sigma"] > 0)
    assert not any(c["clip_noise"] for c in plan.cells.values() if c["sigma"] == 0)
    for path in [PAPER] + [REPO / "params" / f"table{t}.yaml" for t in range(1, 12)]:
        text = path.read_text()
        assert yaml.safe_load(text)["train"]["precision"] == "fp32", path.name
        assert "train.precision: fp32 because" in text  # the NOTE says why


def test_replicate_rows_get_their_own_seed(plan):
    """Table 6 rows 14/15 repeat rows 2/3's parameters: separate models, differing in seed only."""
    table = next(t for t in plan.tables if t["id"] == "6")
    by_row = {r["paper_row"]: r["cell_id"] for r in table["rows"]}
    for first, again in ((2, 14), (3, 15)):
        a, b = plan.cells[by_row[first]], plan.cells[by_row[again]]
        assert by_row[first] != by_row[again]
        assert (a["seed"], b["seed"]) == (0, 1) and {**a, "seed": 1} == b
    assert len(set(by_row.values())) == len(by_row)


@pytest.mark.parametrize("mutate,key", [
    (lambda c: c["cells"]["smooth"].update(sigmaa=0.3), "sigmaa"),
    (lambda c: c["cells"]["smooth"].update(sigma=-0.1), "cells.smooth.sigma"),
    (lambda c: c["cells"]["smooth"].update(alpha=1.5), "cells.smooth.alpha"),
    (lambda c: c["cells"]["smooth"].update(dataset="imagenet"), "cells.smooth.dataset"),
    (lambda c: c["tables"][0]["columns"][0].update(attack="nope"), "nope"),
])
def test_bad_preset_fails_in_snakemake_before_any_job(tmp_path, mutate, key):
    cfg = yaml.safe_load((REPO / "params/demo.yaml").read_text())
    mutate(cfg)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = run_snakemake(tmp_path, "-n", configfile=path, check=False)
    assert proc.returncode != 0
    assert key in proc.stderr + proc.stdout
    assert "rule " not in proc.stdout and not (tmp_path / "results").exists()  # no job, no plan file


def test_mnist_cpu_preset_plans_real_mnist(tmp_path):
    cfg = REPO / "params" / "mnist_cpu.yaml"
    plan = build_plan(validate(load_config(cfg)))
    assert {c["dataset"] for c in plan.cells.values()} == {"mnist"}
    assert all(c["steps"] >= 10_000 for c in plan.cells.values())  # robustness needs ~1e4 steps
    proc = run_snakemake(tmp_path, "-n", "--quiet", "rules", configfile=cfg)
    # 5 models, the two headline ones with seeds 0, 1, 2
    assert len(plan.cells) == 9
    assert re.search(r"^train\s+9$", proc.stdout, flags=re.M)


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_every_preset_column_finds_at_most_one_published_value(preset):
    # what the tables plan job checks when a run starts, for every committed preset
    from lsqueeze.report.tables import check_published

    check_published({"tables": build_plan(validate(load_config(preset))).tables}, pd.read_csv(CSV))


def test_a_row_the_paper_did_not_train_has_no_published_value():
    ref = pd.read_csv(CSV)
    table = {"id": "1", "paper_table": 1}
    col = {"name": "FGSM X-ent", "paper": {"attack": "fgsm", "loss": "xent"}}
    assert published(ref, table, {"paper_row": 1}, col) is not None
    assert published(ref, table, {}, col) is None  # Table 1 has several rows: none is this one


def test_plan_job_refuses_an_ambiguous_paper_filter_in_one_line(tmp_path, capsys):
    from lsqueeze.cli import main

    plan = {"tables": [{"id": "x", "paper_table": 11, "rows": [{"cell_id": "c"}],
                        "columns": [{"name": "any", "paper": {"loss": "cw"}}]}]}
    out = tmp_path / "plan.json"
    code = main(["plan", "--plan", json.dumps(plan), "--reference", str(CSV), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "column 'any'" in err[0] and "narrow it" in err[0]
    assert not out.exists()


@pytest.mark.parametrize("table", sorted(p.name for p in (REPO / "params").glob("table*.yaml")))
def test_a_table_preset_trains_and_attacks_nothing_the_paper_preset_would_redo(table):
    """Run one table today and the paper tomorrow: every model, black-box set and evaluation of a
    table preset has the address in the shared store that the paper preset asks for, so the
    paper run plans none of them again (tests/test_incremental.py shows it through Snakemake)."""
    from lsqueeze.plan.build import build_plan, subset_key

    def addresses(path):
        cfg = yaml.safe_load((REPO / "params" / path).read_text())
        plan, subset = build_plan(cfg), subset_key(cfg.get("eval", {}).get("n_test"))
        return ({plan.store_dir(c) for c in plan.cells},
                {(plan.store_dir(c), subset, a) for c, a in plan.white},
                {(plan.store_dir(t), plan.store_dir(s), subset, a) for t, s, a in plan.black})

    for mine, papers in zip(addresses(table), addresses("paper.yaml")):
        assert mine <= papers, sorted(mine - papers)[:3]
