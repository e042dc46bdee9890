"""A trained model for users: load it in three lines, or export it as a RobustBench-style checkpoint
with a model card.

    import lsqueeze
    model = lsqueeze.load_model("results/store/mnist/r1a2b3c4d/ls0-sq2-gn0.5-k100k-s0-clip")
    logits = model(x)  # x: N×C×H×W floats in [0, 1]

`lsqueeze export MODEL_DIR --out DIR [--measurements measurements.parquet]` writes `<name>.pt` (a
plain state_dict of fp32 tensors, loadable with `torch.load(weights_only=True)` into
`lsqueeze.science.models.build_model(card["recipe"], card["input"]["shape"])`), `<name>.sha256`, and the
model card `<name>.md` + `<name>.json`: dataset, architecture, threat model, training method and
its α/β/σ/steps/seed, clean accuracy, and, from the measurements, AutoAttack and the worst
case at each ε. A number the measurements do not hold is "not measured", never 0.

A model directory is what training writes: `model.pt` and the `metrics.json` that vouches for it
(its cell id and sha256, lsqueeze.runtime.integrity). Both are checked before anything is loaded.

Nothing here runs in the workflow: no job's numbers depend on this module.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from lsqueeze.plan.build import cell_id, config_hash, model_name, num, steps_tag
from lsqueeze.plan.perexample import worst_of_list
from lsqueeze.plan.records import check_record
from lsqueeze.registries.datasets import ADV_TRAINING, IMAGE_SHAPE, TEST_SIZE
from lsqueeze.runtime.files import (
    JobError,
    atomic_path,
    code_version,
    file_digest,
    lock_digest,
    read_json,
)
from lsqueeze.runtime.integrity import IntegrityError, verify_model

NOT_MEASURED = "not measured"
THREAT_MODEL = "Linf"
PAPER = ('Shafahi, Ghiasi, Huang, Goldstein (2019), "Label Smoothing and Logit Squeezing: '
         'A Replacement for Adversarial Training?"')


class ExportError(JobError):
    """A model directory or a measurements file that cannot be loaded or exported; one line."""


# --- loading -------------------------------------------------------------------------------------

def _model_path(model_dir) -> Path:
    path = Path(model_dir)
    if path.name == "model.pt" and not path.is_dir():
        return path  # the file itself: its directory is meant
    if not path.is_dir():
        raise ExportError(f"{path}: no such model directory (it holds model.pt and metrics.json)")
    return path / "model.pt"


def checked_record(model_dir) -> tuple[dict, Path]:
    """(metrics.json, model.pt path) of a model directory, the model file verified against the
    sha256 and cell id its training recorded; a refusal is one line naming the file."""
    model_path = _model_path(model_dir)
    metrics_path = model_path.with_name("metrics.json")
    if not model_path.is_file():
        raise IntegrityError(f"{model_path}: no such file (the trained weights of the model "
                             "directory)")
    try:
        metrics = read_json(metrics_path)
    except FileNotFoundError:
        raise IntegrityError(f"{model_path}: no metrics.json beside it, so nothing vouches for "
                             "it") from None
    except (OSError, ValueError) as exc:
        raise IntegrityError(f"{metrics_path}: unreadable ({exc})") from None
    spec = metrics.get("spec") if isinstance(metrics, dict) else None
    if not isinstance(spec, dict) or not all(k in spec for k in ("id", "cell", "recipe")):
        raise IntegrityError(f"{metrics_path}: holds no training spec (id, cell, recipe); not a "
                             "metrics.json written by `lsqueeze train`")
    try:
        described = cell_id(spec["cell"])
    except (KeyError, TypeError, ValueError):
        described = None
    if described != spec["id"]:
        raise IntegrityError(f"{metrics_path}: its spec is for cell {spec['id']!r} but describes "
                             f"{described!r} (edited by hand?)")
    check_record(metrics_path, metrics)  # in a store: the cell its folder names
    verify_model(model_path, spec["id"])  # metrics.json's id and the file's sha256
    dataset = spec["cell"].get("dataset")
    if dataset not in IMAGE_SHAPE:
        raise ExportError(f"{metrics_path}: dataset {dataset!r} has no known image shape "
                          f"(known: {', '.join(IMAGE_SHAPE)})")
    return metrics, model_path


def _build_and_load(metrics: dict, model_path: Path, device="cpu"):
    from lsqueeze.runtime.files import load_torch
    from lsqueeze.science.models import build_model

    spec = metrics["spec"]
    model = build_model(spec["recipe"], IMAGE_SHAPE[spec["cell"]["dataset"]])
    try:
        model.load_state_dict(load_torch(model_path, map_location="cpu"))
    except JobError:
        raise
    except RuntimeError as exc:  # another architecture's weights, or not a tensor file
        first = str(exc).strip().splitlines()[0]
        raise ExportError(f"{model_path}: does not load into the {spec['recipe']['arch']['name']} "
                          f"its metrics.json describes ({first})") from None
    return model.to(device).eval()


def load_model(model_dir, device="cpu"):
    """The trained model of a model directory (`model.pt` + `metrics.json`), ready to attack.

    The weights are checked first against the sha256 and cell id their training recorded in
    metrics.json: a corrupted, replaced or missing file is refused with one line naming it
    (lsqueeze.runtime.integrity.IntegrityError). The model is returned in eval mode on `device`, in the
    standard (NCHW) memory format, and takes N×C×H×W float images in [0, 1], as the pipeline's
    attacks feed it: any normalization happens inside the model, and ε is measured in that
    [0, 1] pixel space (the paper's ε divided by the recipe's `pixel_scale`).

    `model_dir` may also be the path of its model.pt."""
    metrics, model_path = checked_record(model_dir)
    return _build_and_load(metrics, model_path, device)


# --- the measurements of one cell ----------------------------------------------------------------

def _count(n) -> int | None:
    import pandas as pd

    return None if pd.isna(n) else int(n)


def _entry(row, **extra) -> dict:
    return {"value": float(row["value"]), "n": _count(row["n"]), "attack_id": row["attack_id"],
            **extra}


def cell_measurements(path, metrics: dict) -> dict:
    """Clean accuracy, AutoAttack and the worst case of the model's cell at each ε, read from a
    long-form measurements Parquet (`tables/measurements.parquet`). A number it lacks is
    NOT_MEASURED. Refuses a Parquet whose training row of the cell is not this model's training
    (another recipe, or another run's clean accuracy)."""
    import pandas as pd

    from lsqueeze.runtime.files import read_parquet

    try:
        frame = read_parquet(path)
    except FileNotFoundError:
        raise ExportError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise ExportError(f"{path}: not a measurements Parquet ({exc})") from None
    needed = {"cell_id", "threat", "attack_id", "attack", "eps", "metric", "value", "n"}
    if not needed <= set(frame.columns):
        missing = ", ".join(sorted(needed - set(frame.columns)))
        raise ExportError(f"{path}: not a measurements Parquet (no column {missing})")
    spec = metrics["spec"]
    rows = frame[(frame["cell_id"] == spec["id"]) & frame["value"].notna()]
    clean = rows[(rows["threat"] == "none") & (rows["metric"] == "test_accuracy")]
    if len(clean):
        row = clean.iloc[0]
        if not math.isclose(float(row["value"]), float(metrics["test_accuracy"]), abs_tol=1e-9):
            raise ExportError(f"{path}: cell {spec['id']} has clean accuracy {row['value']:.4f} "
                              f"there, but {metrics['test_accuracy']:.4f} in this model's "
                              "metrics.json: the Parquet measured another training of the cell")
        if "config_hash" in row and isinstance(row["config_hash"], str) \
                and row["config_hash"] != config_hash(spec):
            raise ExportError(f"{path}: cell {spec['id']} was measured there under another recipe "
                              "than this model's metrics.json records")
    attacked = rows[(rows["metric"] == "accuracy") & rows["eps"].notna()
                    & rows["threat"].isin(["white", "black", "worst"])]
    scale = float(spec["recipe"].get("pixel_scale", 1.0))
    table = []
    for eps in sorted({float(e) for e in attacked["eps"] if math.isfinite(float(e))}):
        at = attacked[attacked["eps"].astype(float) == eps]
        aa = at[at["attack"].astype(str).str.lower().str.startswith("autoattack")
                | at["attack_id"].astype(str).str.startswith("aa-")]
        # a worst transfer accuracy (a model with black-box attacks only) is no robust accuracy
        worst = at[(at["threat"] == "worst") & (at["attack"].astype(str) == "worst_case")]
        entry = {"eps": eps, "eps_pixel": eps / scale}
        if len(aa):  # several AutoAttack versions at one ε: the lowest (the strongest) counts
            entry["autoattack"] = _entry(aa.sort_values(["value", "attack_id"]).iloc[0])
        else:
            entry["autoattack"] = NOT_MEASURED
        if len(worst):
            w = worst.sort_values("value").iloc[0]
            of = worst_of_list(w.get("worst_of")) if "worst_of" in w else None
            entry["worst_case"] = _entry(w, worst_of=of or [])
        else:
            entry["worst_case"] = NOT_MEASURED
        table.append(entry)
    return {"source": str(path), "source_sha256": file_digest(path),
            "clean_in_parquet": bool(len(clean)), "rows": table,
            "attacks": int(pd.Series(attacked["attack_id"]).nunique())}


# --- the card ------------------------------------------------------------------------------------

def export_name(cid: str) -> str:
    """A file-system-safe name for a cell id: mnist/ls0-sq2-gn0.5-k100k-s0 ->
    mnist_ls0-sq2-gn0.5-k100k-s0."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", cid).strip("._") or "model"


def _training(cell: dict, recipe: dict) -> dict:
    out = {"method": model_name(cell), "kind": cell["method"], "steps": int(cell["steps"]),
           "seed": int(cell["seed"])}
    if cell["method"] == "adv":
        a = cell["adv"]
        out["adversary"] = {k: a.get(k) for k in ("attack", "loss", "steps", "eps", "step_size",
                                                  "random_start")}
        out["adversary"]["eps_pixel"] = float(a["eps"]) / recipe["pixel_scale"]
    else:
        out.update(alpha=cell["alpha"], beta=cell["beta"], sigma=cell["sigma"],
                   sigma_pixel=cell["sigma"] / recipe["pixel_scale"],
                   clip_noise=bool(cell.get("clip_noise", False)))
    return out


def model_card(metrics: dict, checkpoint: str, checkpoint_sha256: str, n_params: int,
               measured: dict | None) -> dict:
    spec = metrics["spec"]
    cell, recipe = spec["cell"], spec["recipe"]
    dataset = cell["dataset"]
    scale = float(recipe["pixel_scale"])
    paper = ADV_TRAINING.get(dataset, {}).get("eps")
    arch = dict(recipe["arch"])
    clean = {"value": metrics["test_accuracy"], "n": TEST_SIZE.get(dataset),
             "source": "metrics.json (the whole test split, after training)"}
    return {
        "name": export_name(spec["id"]),
        "cell_id": spec["id"],
        "paper": PAPER,
        "dataset": dataset,
        "architecture": {"name": arch.pop("name"), **arch, "parameters": n_params},
        "input": {"shape": list(IMAGE_SHAPE[dataset]), "layout": "NCHW", "range": [0.0, 1.0],
                  "dtype": "float32"},
        "threat_model": {"norm": THREAT_MODEL, "pixel_scale": scale,
                         "paper_eps": paper, "paper_eps_pixel": None if paper is None
                         else paper / scale},
        "training": _training(cell, recipe),
        "precision": metrics.get("precision"),
        "diverged": bool(metrics.get("diverged", False)),
        "recipe": recipe,
        "clean_accuracy": clean,
        "robust_accuracy": measured["rows"] if measured else NOT_MEASURED,
        "measurements": None if not measured else {
            k: measured[k] for k in ("source", "source_sha256", "attacks")},
        "checkpoint": {"file": checkpoint, "sha256": checkpoint_sha256, "format":
                       "state_dict, fp32, torch.load(weights_only=True)"},
        "model_sha256": metrics.get("model_sha256"),
        "trained_with": metrics.get("code_version"),
        "torch": metrics.get("torch"),
        "code_version": code_version(),
        # the environment lock (requirements.lock) of the checkout that exported it
        "environment_lock": lock_digest(),
    }


def _pct(entry, note: str = "") -> str:
    """72.30% (n = 1,000): an accuracy and the test images it was measured on."""
    if not isinstance(entry, dict):
        return NOT_MEASURED
    notes = ([] if entry.get("n") is None else [f"n = {entry['n']:,}"]) + ([note] if note else [])
    if entry.get("worst_of"):
        k = len(entry["worst_of"])
        notes.append(f"over {k} attack{'' if k == 1 else 's'}")
    return f"{100 * entry['value']:.2f}%" + (f" ({'; '.join(notes)})" if notes else "")


def card_markdown(card: dict) -> str:
    t, arch, thr = card["training"], card["architecture"], card["threat_model"]
    scale = thr["pixel_scale"]

    def units(value) -> str:  # a paper-unit value, and in [0, 1] pixels where they differ
        return num(value) if scale == 1 else f"{num(value)} ({num(value / scale)} in [0, 1] pixels)"
    layers = ", ".join(f"{k} {v}" for k, v in arch.items() if k not in ("name", "parameters"))
    if t["kind"] == "adv":
        a = t["adversary"]
        how = (f"{t['method']}: {a['attack'].upper()}-{a['steps']} ({a['loss']}), ε = "
               f"{units(a['eps'])}, step {units(a['step_size'])}")
    else:
        clip = ", noise clipped to [0, 1]" if t["clip_noise"] else ""
        how = (f"{t['method']}: α = {num(t['alpha'])}, β = {num(t['beta'])}, "
               f"σ = {units(t['sigma'])}{clip}")
    tag = steps_tag(t["steps"])
    tag = "" if tag == str(t["steps"]) else f" ({tag})"
    how += f"; {t['steps']:,} steps{tag}, seed {t['seed']}"
    if thr["paper_eps"] is None:
        eps = "ε: see the accuracy below"
    else:
        eps = (f"the paper's ε = {num(thr['paper_eps'])} in its units = "
               f"{num(thr['paper_eps_pixel'])} in [0, 1] pixels")
    shape = "×".join(map(str, card["input"]["shape"]))
    rows = [
        ("Dataset", f"{card['dataset']}"),
        ("Architecture", f"{arch['name']} ({layers}; {arch['parameters']:,} parameters)"),
        ("Input", f"NCHW float32 images in [0, 1], {shape} (no normalization outside)"),
        ("Threat model", f"{thr['norm']}, {eps}"),
        ("Training", how),
        ("Precision", f"{card['precision']}" + (" — diverged: the weights are not finite"
                                                 if card["diverged"] else "")),
        ("Clean accuracy", _pct(card["clean_accuracy"], "on the whole test split after "
                                                       "training, metrics.json")),
        ("Checkpoint", f"`{card['checkpoint']['file']}`, sha256 `{card['checkpoint']['sha256']}`"),
        ("Trained model", f"sha256 `{card['model_sha256']}` (model.pt)"),
        ("Code version", (f"exported by lsqueeze {card['code_version']}; trained by "
                          f"{card['trained_with']} (torch {card['torch']})")),
        ("Environment", (f"requirements.lock `{card['environment_lock']}`" if card.get("environment_lock")
                         else "not exported from a checkout (no requirements.lock)")),
    ]
    lines = [f"# {card['cell_id']}: {t['method']}", "",
             f"A model trained by lsqueeze, reproducing {card['paper']}.", "",
             "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows), "",
             "## Accuracy", ""]
    robust = card["robust_accuracy"]
    if not isinstance(robust, list):
        lines += ["Robust accuracy: not measured (exported without `--measurements`).", ""]
    elif not robust:
        lines += [(f"Robust accuracy: not measured (`{card['measurements']['source']}` holds "
                   "no attack on this cell)."), ""]
    else:
        lines += ["| ε (paper's units) | ε ([0, 1] pixels) | clean | AutoAttack | worst case |",
                  "|---|---|---|---|---|"]
        for r in robust:
            lines.append(f"| {num(r['eps'])} | {num(r['eps_pixel'])} | "
                         f"{_pct(card['clean_accuracy'])} | {_pct(r['autoattack'])} | "
                         f"{_pct(r['worst_case'])} |")
        m = card["measurements"]
        lines += ["", ("Accuracies on the first n test images. The worst case counts an image "
                       "as robust only if it survived every attack run on the model at that ε "
                       f"(white-box and black-box). From `{m['source']}` (sha256 "
                       f"`{m['source_sha256'][:16]}…`)."), ""]
    lines += ["## Load", "", "```python", "import json", "", "import torch",
              "from lsqueeze.science.models import build_model", "",
              f"card = json.load(open(\"{card['name']}.json\"))",
              "model = build_model(card[\"recipe\"], card[\"input\"][\"shape\"])",
              (f"model.load_state_dict(torch.load(\"{card['checkpoint']['file']}\", "
               "weights_only=True))"),
              "model.eval()  # inputs: N×C×H×W in [0, 1]", "```", ""]
    return "\n".join(lines)


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path, digest=False) as tmp:
        tmp.write_text(text)


def export(model_dir, out_dir, measurements=None) -> dict[str, Path]:
    """Write `<name>.pt`, `<name>.sha256`, `<name>.md` and `<name>.json` of a model directory
    into out_dir (each atomically); return their paths by kind."""
    import torch

    from lsqueeze.science.models import n_params

    metrics, model_path = checked_record(model_dir)
    measured = cell_measurements(measurements, metrics) if measurements else None
    model = _build_and_load(metrics, model_path)
    state = {k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().contiguous()
             for k, v in model.state_dict().items()}
    name = export_name(metrics["spec"]["id"])
    out = Path(out_dir)
    paths = {"checkpoint": out / f"{name}.pt", "sha256": out / f"{name}.sha256",
             "card": out / f"{name}.md", "json": out / f"{name}.json"}
    # through a file handle: torch.save(obj, <path>) would record the temp file's name in the
    # archive, so one model exported twice would get two digests
    with atomic_path(paths["checkpoint"], digest=False) as tmp, open(tmp, "wb") as fh:
        torch.save(state, fh)
    sha = file_digest(paths["checkpoint"])
    _write_text(paths["sha256"], f"{sha}  {paths['checkpoint'].name}\n")
    card = model_card(metrics, paths["checkpoint"].name, sha, n_params(model), measured)
    _write_text(paths["json"], json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    _write_text(paths["card"], card_markdown(card))
    return paths
