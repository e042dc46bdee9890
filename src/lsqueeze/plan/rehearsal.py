"""A preset -> its rehearsal preset: the same DAG (every rule, every job, the same commands) at
toy scale, in a directory of its own (`lsqueeze rehearse`, lsqueeze.jobs.rehearse).

Only sizes change, and each so that what the real run exercises is still exercised:
- training steps: the distinct step counts of a dataset's cells, in order, become 4, 5, 6, ...:
  cells that differ only in steps (Table 6's k sweep) stay distinct cells, and with the recipe's
  learning-rate boundaries given as fractions of the steps (0.5, 0.75) every boundary is crossed
  (steps 2 and 3 of 4);
- the recipe's batch size: 2, so that WRN-28-10 steps in seconds on a CPU; every other recipe key
  (architecture, optimizer, schedule, β/N, augmentation) and every cell value (α, β, σ, clipping,
  the adversary of adversarial training, the seed) stays the preset's, and so does the precision
  policy;
- test images: the first 4 (eval.n_test, analysis.n_test), attacked 2 at a time; landscapes on
  2 images over a 3 × 3 grid; a checkpoint every 2 steps, so that checkpointing runs too;
- attacks keep their ids and settings: their steps and restarts are capped when they run
  (lsqueeze.runtime.rehearsal), so the tables, the masking checks and the claims that select
  columns by steps read the real preset's attacks.
"""

from __future__ import annotations

import copy

from lsqueeze.runtime.rehearsal import BANNER

MIN_STEPS = 4           # with boundaries at 0.5 and 0.75 of the steps: both crossed
BATCH_SIZE = 2
N_TEST = 4
ATTACK_STEPS = 3        # the caps at run time: PGD-1000 runs 3 steps, 10 restarts run 2
ATTACK_RESTARTS = 2


def _cells(config: dict):
    """Every cell given as settings in the preset (named under `cells:`, or inline in a table
    row, a figure or a black-box source): the dicts to shrink in place."""
    yield from (c for c in (config.get("cells") or {}).values() if isinstance(c, dict))
    for table in config.get("tables") or []:
        yield from (r["cell"] for r in table.get("rows") or [] if isinstance(r.get("cell"), dict))
    for fig in (config.get("figures") or {}).values():
        yield from (c for c in fig.get("cells") or [] if isinstance(c, dict))
    yield from (c for c in (config.get("blackbox_sources") or {}).values() if isinstance(c, dict))


def step_map(config: dict) -> dict[str, dict[int, int]]:
    """{dataset: {real steps: rehearsal steps}}: each dataset's distinct step counts in order,
    from MIN_STEPS up (distinct cells stay distinct, their order stays)."""
    found: dict[str, set[int]] = {}
    for c in _cells(config):
        if "steps" in c and "dataset" in c:
            found.setdefault(c["dataset"], set()).add(int(c["steps"]))
    return {ds: {s: MIN_STEPS + i for i, s in enumerate(sorted(steps))}
            for ds, steps in found.items()}


def rehearsal_preset(config: dict, source: str, mirrors: dict | None = None,
                     checksums: str | None = None) -> dict:
    """The rehearsal of `config` (read from `source`), with results, store and data relative to
    the rehearsal's own working directory; `mirrors` {dataset: URL} and `checksums` (the
    generated files' MD5 sums, a JSON file) for the datasets it downloads."""
    out = copy.deepcopy(config)
    steps = step_map(out)
    for c in _cells(out):
        if "steps" in c and "dataset" in c:
            c["steps"] = steps[c["dataset"]][int(c["steps"])]
    name = str(config.get("preset", "preset"))
    out["preset"] = f"{name}-rehearsal"
    out["description"] = f"{BANNER} (rehearsal of {source}: its DAG at toy scale)"
    out["results"] = f"results/{name}"
    out["store"] = "results/store"
    out["data_dir"] = "results/data"
    out["device"] = "auto"
    out["train"] = {**(config.get("train") or {}), "checkpoint_every": 2}
    out["eval"] = {**(config.get("eval") or {}), "n_test": N_TEST, "batch_size": BATCH_SIZE}
    out["analysis"] = {**(config.get("analysis") or {}), "n_test": N_TEST, "landscape_images": 2,
                       "landscape_points": 3}
    datasets = sorted(steps)
    out["recipes"] = {ds: {**(config.get("recipes") or {}).get(ds, {}), "batch_size": BATCH_SIZE}
                      for ds in sorted(set(datasets) | set(config.get("recipes") or {}))}
    out["claims"] = {**(config.get("claims") or {}), "note": BANNER + "."}
    if mirrors:
        out["mirrors"] = {**(config.get("mirrors") or {}), **mirrors}
    out["rehearsal"] = {"of": str(source), "banner": BANNER, "attack_steps": ATTACK_STEPS,
                        "attack_restarts": ATTACK_RESTARTS,
                        **({"checksums": str(checksums)} if checksums else {})}
    return out


def datasets_of(config: dict) -> list[str]:
    """The datasets a preset's cells use (those a rehearsal generates files for)."""
    return sorted({c["dataset"] for c in _cells(config) if "dataset" in c})


def _kind(config: dict, ref) -> tuple:
    """A row's kind of training: its dataset, method, and which of α, β, σ it sets."""
    cell = (config.get("cells") or {}).get(ref, {}) if isinstance(ref, str) else ref
    method = cell.get("method", "regularized")
    on = tuple(bool(float(cell.get(k) or 0)) and method != "natural"
               for k in ("alpha", "beta", "sigma"))
    return (cell.get("dataset"), method, *on)


def subset(config: dict) -> dict:
    """The part of a preset that still runs every job kind once: in each table, the first row of
    each kind of training (dataset; natural, regularized or adversarial; with or without label
    smoothing, logit squeezing, noise) and every row that names its own
    attack, with every column (every attack configuration, white-box and black-box, so every
    black-box source); the first row with seeds keeps two of them (the mean ± sd and the claims'
    spread); the first figure of each figure kind. The claims run on what is left."""
    out = copy.deepcopy(config)
    seeded = False
    for table in out.get("tables") or []:
        rows, kinds = [], set()
        for row in table.get("rows") or []:
            kind = _kind(config, row["cell"])
            if kind in kinds and not row.get("attacks"):
                continue
            kinds.add(kind)
            if row.get("seeds"):
                if seeded:
                    row.pop("seeds")
                else:
                    row["seeds"], seeded = list(row["seeds"])[:2], True
            rows.append(row)
        table["rows"] = rows
    kinds, figures = set(), {}
    for name, fig in (out.get("figures") or {}).items():
        if fig.get("kind", "linear") not in kinds:
            kinds.add(fig.get("kind", "linear"))
            figures[name] = fig
    if "figures" in out:
        out["figures"] = figures
    return out
