"""Where every file of a run lives: the one definition that the workflow (workflow/rules/
common.smk, whose rules hold the same paths as wildcard patterns) and a run without Snakemake
(bench/reproduce.py) share, with the tables plan that the aggregation reads.

The model store, shared by presets (README, "One model store for every preset"):
    <store>/<dataset>/<recipe key>/<tag>/model.pt, metrics.json
                                        /adv-<subset>/<attack id>.pt
                                        /eval-<subset>/white/<attack id>.json
                                        /eval-<subset>/black/<source tag>/<attack id>.json
A preset's own folder (<results>): plan/, tables/, figures/, analysis/<cell id>/, logs/.
"""

from __future__ import annotations

import json

from lsqueeze.plan.build import Plan, attack_record, num, subset_key
from lsqueeze.registries.figure_kinds import figure_kind

STORE = "results/store"  # defaults of the preset keys store and data_dir
DATA = "results/data"
LANDSCAPE_EPS = 10.0  # the paper's −10 ≤ ε1, ε2 ≤ 10 (Figures 5, 9): a landscape's default


class Layout:
    def __init__(self, plan: Plan):
        config = plan.config
        self.plan = plan
        self.results = config["results"].rstrip("/")
        self.store = config.get("store", STORE).rstrip("/")
        self.data = config.get("data_dir", DATA).rstrip("/")
        self.subset = subset_key(config.get("eval", {}).get("n_test"))

    # --- one file each
    def cell_dir(self, cid: str) -> str:
        return f"{self.store}/{self.plan.store_dir(cid)}"

    def model(self, cid: str) -> str:
        return f"{self.cell_dir(cid)}/model.pt"

    def metrics(self, cid: str) -> str:
        return f"{self.cell_dir(cid)}/metrics.json"

    def split_dir(self, dataset: str) -> str:
        return f"{self.data}/{dataset}"

    def adv_set(self, source: str, aid: str) -> str:
        return f"{self.cell_dir(source)}/adv-{self.subset}/{aid}.pt"

    def white(self, cid: str, aid: str) -> str:
        return f"{self.cell_dir(cid)}/eval-{self.subset}/white/{aid}.json"

    def black(self, target: str, source: str, aid: str) -> str:
        tag = source.split("/", 1)[1]
        return f"{self.cell_dir(target)}/eval-{self.subset}/black/{tag}/{aid}.json"

    def analysis(self, cid: str, name: str = "linear.parquet") -> str:
        return f"{self.results}/analysis/{cid}/{name}"

    # --- the run's files, as the aggregation reads them
    def fragments(self) -> list[str]:
        """Every training and evaluation JSON of the plan, in the aggregation's order."""
        plan = self.plan
        return ([self.metrics(c) for c in sorted(plan.cells)]
                + [self.white(c, a) for c, a in sorted(plan.white)]
                + [self.black(t, s, a) for t, s, a in sorted(plan.black)])

    def analyses(self) -> dict[str, str]:
        """{linear-model analysis Parquet: its cell id} for the tables' Eq. 4 columns."""
        return {self.analysis(c): c for c in sorted(self.plan.analyses)}

    def tables_plan(self) -> dict:
        """What the aggregation reads besides the fragments (the plan file's content)."""
        plan, config = self.plan, self.plan.config
        datasets = sorted({c["dataset"] for c in plan.cells.values()})
        return {
            "tables": plan.tables,
            "cells": plan.cells,
            "pixel_scale": {d: plan.recipe(d)["pixel_scale"] for d in datasets},
            # chance accuracy, below which a broken model's agreement says nothing (agreement.py)
            "num_classes": {d: plan.recipe(d)["num_classes"] for d in datasets},
            "analysis_files": self.analyses(),
            "tolerance_pct": config.get("eval", {}).get("tolerance_pct", 5.0),
            "preset": config.get("preset"),  # the tables' provenance header names it
        }

    # --- what the workflow asks for: its targets, and each job's arguments
    def targets(self) -> dict[str, list[str]]:
        """The run's final files: the tables (Parquet per table, Markdown, the long form), the
        figures (the summary and each preset figure) and the claims."""
        res = self.results
        return {
            "tables": [f"{res}/tables/measurements.parquet", f"{res}/tables/tables.md",
                       *(f"{res}/tables/table_{t['id']}.parquet" for t in self.plan.tables)],
            "figures": [f"{res}/figures/summary.png",
                        *(f"{res}/figures/{f['name']}.png" for f in self.plan.figures)],
            "claims": [f"{res}/tables/claims.md", f"{res}/tables/claims.parquet"],
        }

    def spec_json(self, cid: str) -> str:
        """A cell's training spec as a job's `--spec` (sorted keys: one text per spec, so a
        rule's params change exactly when the spec does)."""
        return json.dumps(self.plan.train_spec(cid), sort_keys=True)

    def attack_json(self, aid: str, dataset: str) -> str:
        """An attack as a job's `--attack`: its id, paper units and pixel units."""
        return json.dumps(attack_record(self.plan, aid, dataset), sort_keys=True)

    def figure_spec(self, fig: dict) -> str:
        """A preset figure's `--spec` of `lsqueeze figure`: title, labels, each cell's pixel
        scale, its ε."""
        plan = self.plan
        scales = [plan.recipe(plan.cells[c]["dataset"])["pixel_scale"] for c in fig["cells"]]
        return json.dumps({"title": fig["title"], "labels": fig["labels"], "pixel_scales": scales,
                           "eps": fig["eps"]}, sort_keys=True)

    def figure_inputs(self, fig: dict) -> list[str]:
        """A figure's per-model Parquets in its order: what its kind reads
        (lsqueeze.registries.figure_kinds), the loss landscape at the figure's ε."""
        reads = figure_kind(fig["kind"]).reads
        if reads == "landscape":
            name = f"landscape-e{num(fig['eps'] or LANDSCAPE_EPS)}.parquet"
        else:
            name = f"{reads}.parquet"
        return [self.analysis(c, name) for c in fig["cells"]]
