"""What a preset costs on a GPU, before anything runs: `lsqueeze cost --configfile <preset>`.

GPU-hours = Σ training steps × the measured step time of the cell's architecture, batch and
precision (an adversarially trained cell's PGD steps each count as one more step) + Σ attack
passes × the measured time per image and attack step (each attack kind's image-steps,
lsqueeze.registries.attack_kinds: FGSM 1; PGD steps × restarts; AutoAttack its members' sum; a black-box set
is crafted once per source and attack; a transfer is one forward, ⅓ of a step).
The ε_L analysis, figures and the download are minutes and are not counted.

Step times come from `lsqueeze/data/step_times.csv` (one GPU model per row, each row saying whether it
was measured, derived from a measured one, or an upper bound). An architecture or batch size
without a row is estimated from the same family's row scaled by forward FLOPs (counted on the
meta device: nothing is allocated), never below the smallest measured step: a small model on a
big GPU is bound by kernel launches, not FLOPs.

Each table is costed as if it ran alone (the cells and attacks it needs, the black-box source
included); the total counts every cell and attack once, as Snakemake runs them once.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from lsqueeze.plan.build import Plan, build_plan
from lsqueeze.registries.attack_kinds import image_steps
from lsqueeze.registries.datasets import IMAGE_SHAPE, RECIPES, TEST_SIZE
from lsqueeze.runtime.files import CHECKOUT, package_data

STEP_TIMES = package_data("step_times.csv")
TRANSFER_STEPS = 1 / 3          # one forward pass, no backward
FAMILY = {"madry_cnn": "madry_cnn", "wrn": "wrn", "madry_wrn": "wrn"}


class CostError(ValueError):
    pass


@dataclass
class Rate:
    seconds: float
    basis: str


@dataclass
class StepTimes:
    gpu: str
    rows: list[dict]
    estimates: dict = field(default_factory=dict)  # (kind, arch json, batch, precision) -> Rate

    @classmethod
    def load(cls, gpu: str, path=STEP_TIMES) -> StepTimes:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        known = sorted({r["gpu"] for r in rows})
        mine = [r for r in rows if r["gpu"] == gpu.lower()]
        if not mine:
            raise CostError(f"--gpu {gpu!r}: no step times in {path} (known: {', '.join(known)})")
        return cls(gpu.lower(), mine)

    def rate(self, kind: str, recipe: dict, image_shape, precision: str) -> Rate:
        """Seconds per training step (kind train) or per image-step (kind attack)."""
        arch = recipe["arch"]
        batch = recipe["batch_size"] if kind == "train" else None
        key = (kind, repr(sorted(arch.items())), batch, precision)
        if key not in self.estimates:
            self.estimates[key] = self._rate(kind, arch, recipe, image_shape, batch, precision)
        return self.estimates[key]

    def _rate(self, kind, arch, recipe, image_shape, batch, precision) -> Rate:
        rows = [r for r in self.rows if r["kind"] == kind]
        same = [r for r in rows if r["arch"] == arch["name"]
                and (batch is None or int(r["batch_size"]) == batch)]
        # Only the paper's shapes were measured: a row stands for its arch at paper size.
        if same and _paper_size(arch):
            exact = [r for r in same if r["precision"] == precision]
            row = (exact or same)[0]
            note = "" if exact else f" ({row['precision']} time: {precision} not measured)"
            return Rate(float(row["seconds"]), f"{row['basis']}{note}")
        family = FAMILY.get(arch["name"])
        refs = [r for r in rows if FAMILY.get(r["arch"]) == family] or rows
        if not refs:
            raise CostError(f"{STEP_TIMES}: no {kind} step times for {self.gpu}")
        ref = refs[0]
        ratio = _flops(recipe, image_shape) / _flops(_paper_recipe(ref["arch"], recipe),
                                                    image_shape)
        if kind == "train":
            ratio *= recipe["batch_size"] / int(ref["batch_size"])
        floor = min(float(r["seconds"]) for r in rows)
        if float(ref["seconds"]) * ratio < floor:
            return Rate(floor, "estimated: the smallest measured time (launch-bound)")
        return Rate(float(ref["seconds"]) * ratio, f"estimated from {ref['arch']} by FLOPs")


def _paper_size(arch: dict) -> bool:
    if arch["name"] == "wrn":
        return arch.get("depth") == 28 and arch.get("widen") == 10
    if arch["name"] == "madry_wrn":
        return arch.get("units", 5) == 5 and arch.get("widen", 10) == 10
    if arch["name"] == "madry_cnn":
        return (arch.get("conv1"), arch.get("conv2"), arch.get("fc")) == (32, 64, 1024)
    return False


def _paper_recipe(name: str, recipe: dict) -> dict:
    paper = {"madry_cnn": RECIPES["mnist"]["arch"], "wrn": {"name": "wrn", "depth": 28, "widen": 10}}
    arch = paper.get(name) or next(r["arch"] for r in RECIPES.values() if r["arch"]["name"] == name)
    return {**recipe, "arch": dict(arch)}


def _flops(recipe: dict, image_shape) -> float:
    """Forward FLOPs of one image, counted on the meta device."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from lsqueeze.science.models import build_model

    with torch.device("meta"):
        model = build_model(recipe, image_shape)
        x = torch.zeros(1, *image_shape)
    with FlopCounterMode(display=False) as counter:
        model(x)
    return float(counter.get_total_flops())


@dataclass
class Costs:
    """Seconds per job: trainings by cell id, attacks by (kind, ids...)."""

    train: dict[str, float]
    attack: dict[tuple, float]
    basis: dict[str, str]


def job_costs(plan: Plan, times: StepTimes) -> Costs:
    config = plan.config
    precision = config.get("train", {}).get("precision", "auto")
    precision = "bf16" if precision == "auto" else precision  # what `auto` is on a CUDA GPU
    n_test = config.get("eval", {}).get("n_test")
    train, attack, basis = {}, {}, {}

    def shape(ds):
        recipe = plan.recipe(ds)
        return recipe, IMAGE_SHAPE.get(ds)

    for cid, cell in plan.cells.items():
        recipe, img = shape(cell["dataset"])
        rate = times.rate("train", recipe, img, precision)
        factor = 1 + (int(cell["adv"]["steps"]) if cell["method"] == "adv" else 0)
        train[cid] = cell["steps"] * factor * rate.seconds
        basis[f"train {recipe['arch']['name']} batch {recipe['batch_size']}"] = (
            f"{rate.seconds * 1e3:.3g} ms/step, {rate.basis}")

    def per_image(ds):
        recipe, img = shape(ds)
        rate = times.rate("attack", recipe, img, "fp32")  # evaluation runs without autocast
        basis[f"attack {recipe['arch']['name']}"] = f"{rate.seconds * 1e6:.3g} µs/image-step, {rate.basis}"
        size = TEST_SIZE.get(ds, 10_000)
        n = min(int(n_test), size) if n_test else size  # n_test beyond the split: all of it
        return n, rate.seconds

    for cid, aid in plan.white:
        n, sec = per_image(plan.cells[cid]["dataset"])
        attack[("white", cid, aid)] = n * image_steps(plan.attacks[aid]) * sec
    for src, aid in plan.crafted:
        n, sec = per_image(plan.cells[src]["dataset"])
        attack[("craft", src, aid)] = n * image_steps(plan.attacks[aid]) * sec
    for target, src, aid in plan.black:
        n, sec = per_image(plan.cells[target]["dataset"])
        attack[("black", target, src, aid)] = n * TRANSFER_STEPS * sec
    return Costs(train, attack, basis)


def table_jobs(plan: Plan, table: dict) -> tuple[set[str], set[tuple]]:
    """The trainings and attack jobs one table needs on its own (black-box sources included)."""
    rows = {c for r in table["rows"] for c in r.get("cell_ids", [r["cell_id"]])}  # every seed

    def attack_ids(threat):  # the columns' attacks and the rows' per-column overrides
        ids = {col.get("attack_id") for col in table["columns"] if col.get("threat") == threat}
        names = {col["name"] for col in table["columns"] if col.get("threat") == threat}
        return ids | {a for r in table["rows"] for n, a in (r.get("attack_ids") or {}).items()
                      if n in names}

    white_ids, black_ids = attack_ids("white"), attack_ids("black")
    white = {("white", c, a) for c, a in plan.white if c in rows and a in white_ids}
    black = {("black", t, s, a) for t, s, a in plan.black if t in rows and a in black_ids}
    crafts = {("craft", s, a) for _, _, s, a in black}
    cells = rows | {s for _, s, _ in crafts}
    return cells, white | black | crafts


def estimate(config: dict, gpu: str = "h100", step_times=STEP_TIMES) -> dict:
    """{'tables': {id: {train_h, attack_h, total_h, cells}}, 'total': {...}, 'basis': {...}}."""
    plan = build_plan(config)
    costs = job_costs(plan, StepTimes.load(gpu, step_times))
    tables = {}
    for table in plan.tables:
        cells, attacks = table_jobs(plan, table)
        tr = sum(costs.train[c] for c in cells) / 3600
        at = sum(costs.attack[a] for a in attacks) / 3600
        tables[str(table["id"])] = {"cells": len(cells), "train_h": tr, "attack_h": at,
                                    "total_h": tr + at}
    tr, at = sum(costs.train.values()) / 3600, sum(costs.attack.values()) / 3600
    out = {"gpu": gpu.lower(), "tables": tables, "basis": costs.basis,
           "total": {"cells": len(plan.cells), "train_h": tr, "attack_h": at, "total_h": tr + at}}
    if not all(math.isfinite(v) for v in (tr, at)):
        raise CostError("a step time in lsqueeze/data/step_times.csv is not a finite number")
    return out


def report(est: dict, preset: str) -> str:
    lines = [f"Projected GPU-hours for {preset} on one {est['gpu'].upper()} "
             "(lsqueeze/data/step_times.csv: the plain loop, one job per GPU)", "",
             "| table | cells | training h | attacks h | total h |", "|---|---|---|---|---|"]
    for tid, t in est["tables"].items():
        lines.append(f"| {tid} | {t['cells']} | {t['train_h']:.3g} | {t['attack_h']:.3g} | "
                     f"{t['total_h']:.3g} |")
    t = est["total"]
    lines.append(f"| **all** (each job once) | {t['cells']} | {t['train_h']:.3g} | "
                 f"{t['attack_h']:.3g} | **{t['total_h']:.3g}** |")
    lines += ["", "Step times used:"] + [f"- {k}: {v}" for k, v in sorted(est["basis"].items())]
    projected = sorted({m for v in est["basis"].values()
                        for m in re.findall(r"\((\w+) time: (\w+) not measured\)", v)})
    for measured, wanted in projected:
        lines.append(f"Note: {wanted} cells are projected from {measured} step times ({wanted} "
                     "was not measured on this GPU): expect them to take longer.")
    return "\n".join(lines)


def approx_hours(h: float) -> str:
    """GPU-hours as the README prints them: two significant digits, '~'."""
    return f"~{h:.2g}" if h < 10 else f"~{h:.0f}"


README_TABLES = range(1, 12)


def readme_table(gpu: str = "h100", params=None) -> str:
    """The README's cost table: each table<N>.yaml on its own (models, GPU-hours), then the paper
    preset, every job once (from the checkout's params/ by default). Rows keep the README's own
    descriptions; a test keeps them equal."""
    from lsqueeze.plan.build import load_config

    if params is None:
        if CHECKOUT is None:
            raise CostError("--readme reads the presets of a checkout; this package is installed "
                            "outside one")
        params = CHECKOUT / "params"

    lines = ["| preset | models | GPU-hours |", "|---|---|---|"]
    for t in README_TABLES:
        total = estimate(load_config(Path(params) / f"table{t}.yaml"), gpu)["total"]
        lines.append(f"| `table{t}.yaml` | {total['cells']} | {approx_hours(total['total_h'])} |")
    total = estimate(load_config(Path(params) / "paper.yaml"), gpu)["total"]
    lines.append(f"| `paper.yaml` (each job once) | {total['cells']} | "
                 f"{approx_hours(total['total_h'])} |")
    return "\n".join(lines)
