"""The model card `lsqueeze export` writes beside a checkpoint: RobustBench's model-info fields
first, then this project's own.

RobustBench's fields (robustbench/model_info/<dataset>/<threat>/<name>.json), written as it writes
them, accuracies as percent strings with two decimals:
`name`, `dataset`, `threat_model`, `eps`, `clean_acc`, `autoattack_acc`, `architecture`,
`additional_data`, `number_forward_passes`, `reference`, `footnote`. A number the measurements
do not hold is "not measured", never 0 (and never a number a parser would take for one).

This project's own: the cell id and file stem, the input convention, the paper's units, the
training (method, α/β/σ, steps, seed) and its recipe, every attack measured on the model (the
paper's PGD-40 among them, black-box transfers with their source), the robust accuracy at each ε
(AutoAttack and the worst case over every attack), the gradient-masking checks, the digests of
the checkpoint, the trained model, the measurements and the environment lock, and the commit
that trained the model.
"""

from __future__ import annotations

import math
from pathlib import Path

from lsqueeze.plan.build import model_name, num, steps_tag
from lsqueeze.registries.datasets import ADV_TRAINING, IMAGE_SHAPE, TEST_SIZE
from lsqueeze.runtime.files import code_version, lock_digest

NOT_MEASURED = "not measured"
THREAT_MODEL = "Linf"
PAPER = ('Shafahi, Ghiasi, Huang, Goldstein (2019), "Label Smoothing and Logit Squeezing: '
         'A Replacement for Adversarial Training?", arXiv:1910.11585')
ROBUSTBENCH_FIELDS = ("name", "dataset", "threat_model", "eps", "clean_acc", "autoattack_acc",
                      "architecture", "additional_data", "number_forward_passes", "reference",
                      "footnote")
def _pct_str(value) -> str:
    """RobustBench's spelling of an accuracy: percent with two decimals, as a string."""
    return NOT_MEASURED if not isinstance(value, (int, float)) else f"{100 * float(value):.2f}"


def eps_str(eps: float, scale: float) -> str:
    """RobustBench's spelling of ε: in [0, 1] pixels ("0.3"), or as 8-bit levels where the
    dataset's units are 0-255 ("8/255")."""
    return num(eps) if scale == 1 else f"{num(eps)}/{num(scale)}"


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


def _headline(measured: dict | None, paper_eps: float | None) -> dict | None:
    """The ε row the RobustBench fields report: the paper's ε where AutoAttack ran there, else
    the largest ε AutoAttack ran at, else the paper's ε (AutoAttack then "not measured")."""
    rows = (measured or {}).get("rows") or []
    with_aa = [r for r in rows if isinstance(r["autoattack"], dict)]
    for r in with_aa:
        if paper_eps is not None and math.isclose(r["eps"], paper_eps):
            return r
    if with_aa:
        return max(with_aa, key=lambda r: r["eps"])
    return next((r for r in rows if paper_eps is not None and math.isclose(r["eps"], paper_eps)),
                None)


def _footnote(head: dict | None, masking: list[dict]) -> str | None:
    notes = []
    if head and isinstance(head["autoattack"], dict) and head["autoattack"].get("n"):
        notes.append(f"AutoAttack (standard) on the first {head['autoattack']['n']:,} test images")
    if head and isinstance(head["worst_case"], dict):
        w = head["worst_case"]
        notes.append(f"worst case per image over {len(w.get('worst_of') or [])} evaluations: "
                     f"{100 * w['value']:.2f}%")
    flagged = sorted({m["check"] for m in masking if m.get("flagged")})
    if flagged:
        notes.append("gradient masking flagged: " + ", ".join(flagged))
    return "; ".join(notes) or None


def _arch_text(arch: dict) -> str:
    layers = ", ".join(f"{k} {v}" for k, v in arch.items() if k not in ("name", "parameters"))
    return f"{arch['name']} ({layers}; {arch['parameters']:,} parameters)"


def model_card(metrics: dict, files: dict, n_params: int, measured: dict | None,
               name: str | None = None) -> dict:
    """The card as a dict (the .json). files: {"checkpoint": (file, sha256), "program":
    (file, sha256)}; measured: export.cell_measurements (None without --measurements); name:
    the model's display name (the measurements' `model` column), else the method's words."""
    import torch

    spec = metrics["spec"]
    cell, recipe = spec["cell"], spec["recipe"]
    dataset = cell["dataset"]
    scale = float(recipe["pixel_scale"])
    paper = ADV_TRAINING.get(dataset, {}).get("eps")
    arch = {**recipe["arch"], "parameters": n_params}
    head = _headline(measured, paper)
    masking = (measured or {}).get("masking") or []
    eps = head["eps"] if head else paper
    display = name or f"{model_name(cell)} ({spec['id'].split('/', 1)[-1]})"
    (ckpt, ckpt_sha), (prog, prog_sha) = files["checkpoint"], files["program"]
    return {
        "name": display,
        "dataset": dataset,
        "threat_model": THREAT_MODEL,
        "eps": None if eps is None else eps_str(eps, scale),
        "clean_acc": _pct_str(metrics["test_accuracy"]),
        "autoattack_acc": _pct_str(head["autoattack"]["value"])
        if head and isinstance(head["autoattack"], dict) else NOT_MEASURED,
        "architecture": _arch_text(arch),
        "additional_data": False,
        "number_forward_passes": 1,
        "reference": PAPER,
        "footnote": _footnote(head, masking),
        # --- this project's own ---
        "cell_id": spec["id"],
        "file": Path(ckpt).stem,
        "input": {"shape": list(IMAGE_SHAPE[dataset]), "layout": "NCHW", "range": [0.0, 1.0],
                  "dtype": "float32"},
        "units": {"pixel_scale": scale, "paper_eps": paper,
                  "paper_eps_pixel": None if paper is None else paper / scale},
        "arch": arch,
        "training": _training(cell, recipe),
        "precision": metrics.get("precision"),
        "diverged": bool(metrics.get("diverged", False)),
        "recipe": recipe,
        "clean_accuracy": {"value": metrics["test_accuracy"],
                           "n": metrics.get("n_test", TEST_SIZE.get(dataset)),
                           "source": "metrics.json (the whole test split, after training)"},
        "robust_accuracy": measured["rows"] if measured else NOT_MEASURED,
        "worst_case": head["worst_case"] if head else NOT_MEASURED,
        "attacks": measured["attacks"] if measured else NOT_MEASURED,
        "masking": masking if measured else NOT_MEASURED,
        "measurements": None if not measured else {
            k: measured[k] for k in ("source", "source_sha256")},
        "checkpoint": {"file": ckpt, "sha256": ckpt_sha,
                       "format": "state_dict, fp32, torch.load(weights_only=True)"},
        "program": {"file": prog, "sha256": prog_sha,
                    "format": "torch.export ExportedProgram, batch size free: "
                              "torch.export.load(file).module()",
                    "torch": torch.__version__},
        "model_sha256": metrics.get("model_sha256"),
        "training_commit": metrics.get("code_version"),
        # the lock the model was trained with (None: trained before training records recorded it)
        "training_environment_lock": metrics.get("environment_lock"),
        "torch": metrics.get("torch"),
        # the environment lock (requirements.lock) of the checkout that exported it
        "environment_lock": lock_digest(),
        "code_version": code_version(),
    }


def _pct(entry, note: str = "") -> str:
    """72.30% (n = 1,000): an accuracy and the test images it was measured on."""
    if not isinstance(entry, dict):
        return NOT_MEASURED
    notes = ([] if entry.get("n") is None else [f"n = {entry['n']:,}"]) + ([note] if note else [])
    if entry.get("worst_of"):
        k = len(entry["worst_of"])
        notes.append(f"over {k} evaluation{'' if k == 1 else 's'}")
    return f"{100 * entry['value']:.2f}%" + (f" ({'; '.join(notes)})" if notes else "")


def _how(card: dict) -> str:
    t, scale = card["training"], card["units"]["pixel_scale"]

    def units(value) -> str:  # a paper-unit value, and in [0, 1] pixels where they differ
        return num(value) if scale == 1 else f"{num(value)} ({num(value / scale)} in [0, 1] pixels)"
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
    return how + f"; {t['steps']:,} steps{tag}, seed {t['seed']}"


def _attack_lines(card: dict) -> list[str]:
    lines = ["| threat | attack | ε (paper's units) | accuracy | source model |",
             "|---|---|---|---|---|"]
    for a in card["attacks"]:
        lines.append(f"| {a['threat']} | `{a['attack_id']}` | {num(a['eps'])} | {_pct(a)} | "
                     f"{a.get('source_id') or ''} |")
    return lines


def _masking_lines(card: dict) -> list[str]:
    lines = ["| check | flagged | attack | reference | detail |", "|---|---|---|---|---|"]
    for m in card["masking"]:
        lines.append(f"| {m['check']} | {'**yes**' if m['flagged'] else 'no'} | "
                     f"`{m.get('attack_id') or ''}` | `{m.get('reference_attack_id') or ''}` | "
                     f"{m.get('detail') or ''} |")
    return lines


def card_markdown(card: dict) -> str:
    rb = [(k, card[k]) for k in ROBUSTBENCH_FIELDS]
    shape = "×".join(map(str, card["input"]["shape"]))
    rows = [
        ("Cell", f"`{card['cell_id']}`"),
        ("Input", f"NCHW float32 images in [0, 1], {shape} (no normalization outside)"),
        ("Training", _how(card)),
        ("Precision", f"{card['precision']}" + (" — diverged: the weights are not finite"
                                                 if card["diverged"] else "")),
        ("Clean accuracy", _pct(card["clean_accuracy"], "on the whole test split after "
                                                       "training, metrics.json")),
        ("Program", f"`{card['program']['file']}`, sha256 `{card['program']['sha256']}`"),
        ("Checkpoint", f"`{card['checkpoint']['file']}`, sha256 `{card['checkpoint']['sha256']}`"),
        ("Trained model", f"sha256 `{card['model_sha256']}` (model.pt)"),
        ("Trained by", f"{card['training_commit']} (torch {card['torch']}"
                       + (f", requirements.lock `{card['training_environment_lock']}`)"
                          if card.get("training_environment_lock") else ")")),
        ("Environment", (f"requirements.lock `{card['environment_lock']}` (the exporting checkout)"
                         if card.get("environment_lock")
                         else "not exported from a checkout (no requirements.lock)")),
        ("Exported by", f"lsqueeze {card['code_version']}"),
    ]
    lines = [f"# {card['name']}", "",
             f"A model trained by lsqueeze, reproducing {card['reference']}.", "",
             "## RobustBench fields", "", "| field | value |", "|---|---|",
             *(f"| `{k}` | {v} |" for k, v in rb), "",
             "## This model", "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows), "",
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
                       "as robust only if it is classified correctly and survived every attack "
                       "run on the model at that ε (white-box and black-box). From "
                       f"`{m['source']}` (sha256 `{m['source_sha256'][:16]}…`)."), "",
                  "### Every attack", "", *_attack_lines(card), ""]
        if card["masking"]:
            lines += ["### Gradient-masking checks", "", *_masking_lines(card), ""]
    lines += ["## Load", "", "Without lsqueeze, with PyTorch alone:", "", "```python",
              "import torch", "",
              f"model = torch.export.load(\"{card['program']['file']}\").module()",
              "logits = model(x)  # x: N×C×H×W float32 in [0, 1]", "```", "",
              "The state_dict, into lsqueeze's own model:", "", "```python", "import json", "",
              "import torch", "from lsqueeze.science.models import build_model", "",
              f"card = json.load(open(\"{card['file']}.json\"))",
              "model = build_model(card[\"recipe\"], card[\"input\"][\"shape\"])",
              (f"model.load_state_dict(torch.load(\"{card['checkpoint']['file']}\", "
               "weights_only=True))"),
              "model.eval()", "```", ""]
    return "\n".join(lines)
