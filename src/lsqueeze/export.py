"""A trained model for users: load it in three lines, or export it as a RobustBench-style checkpoint
with a model card.

    import lsqueeze
    model = lsqueeze.load_model("results/store/mnist/r1a2b3c4d/ls0-sq2-gn0.5-k100k-s0-clip")
    logits = model(x)  # x: N×C×H×W floats in [0, 1]

`lsqueeze export MODEL_DIR --out DIR [--measurements measurements.parquet]` lays its files out as
RobustBench's model zoo does, under `DIR/<dataset>/Linf/`:
- `<name>.pt2`: the model as a `torch.export` program, which plain PyTorch loads without lsqueeze
  (`torch.export.load(path).module()`), any batch size;
- `<name>.pt`: a plain state_dict of fp32 tensors, loadable with `torch.load(weights_only=True)`
  into `lsqueeze.science.models.build_model(card["recipe"], card["input"]["shape"])`;
- `<name>.sha256`: the digests of both;
- `<name>.json` + `<name>.md`: the model card (lsqueeze.card), RobustBench's model-info fields
  and the project's own. A number the measurements do not hold is "not measured", never 0.

Why torch.export and not TorchScript: torch.jit.trace and torch.jit.script are deprecated in the
PyTorch this project pins, and a trace bakes every shape it computes into constants without
saying so (SAME padding, the per-image standardization's floor); torch.export checks the code
it captures, records the batch dimension as free and the image shape as fixed, and fails loudly
instead. Its .pt2 files load in a PyTorch of the same or a newer version.

A model directory is what training writes: `model.pt` and the `metrics.json` that vouches for it
(its cell id and sha256, lsqueeze.runtime.integrity). Both are checked before anything is loaded.

Nothing here runs in the workflow: no job's numbers depend on this module.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

from lsqueeze.card import NOT_MEASURED, THREAT_MODEL, card_markdown, model_card
from lsqueeze.plan.build import cell_id, config_hash
from lsqueeze.plan.perexample import worst_of_list
from lsqueeze.plan.records import check_record
from lsqueeze.registries.datasets import IMAGE_SHAPE, TEST_SIZE  # noqa: F401 (tests read them here)
from lsqueeze.runtime.files import JobError, atomic_path, file_digest, read_json
from lsqueeze.runtime.integrity import IntegrityError, verify_model

ATTACK_KEYS = ("threat", "attack_id", "attack", "loss", "attack_steps", "step_size", "restarts",
               "random_start", "source_id")


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
    if rows.empty:  # another run's file: a card "not measured" everywhere would hide the mix-up
        cells = sorted({str(c) for c in frame["cell_id"].dropna()})
        held = ", ".join(cells[:3]) + (f" and {len(cells) - 3} more" if len(cells) > 3 else "")
        raise ExportError(f"{path}: holds no measurement of cell {spec['id']} (it holds "
                          f"{held or 'no cell'}); give the measurements of the run that "
                          "evaluated this model, or export without --measurements")
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
    names = rows["model"].dropna() if "model" in rows.columns else pd.Series([], dtype=object)
    return {"source": str(path), "source_sha256": file_digest(path),
            "clean_in_parquet": bool(len(clean)), "rows": table,
            "attacks": _attacks(attacked[attacked["threat"] != "worst"], scale),
            "masking": _masking(frame, spec["id"]),
            "name": str(names.iloc[0]) if len(names) else None}


def _attacks(rows, scale: float) -> list[dict]:
    """Every attack measured on the model, one dict each: its settings, ε in the paper's units
    and in [0, 1] pixels (None and unbounded: true for an attack without a bound), accuracy."""
    out = []
    for r in rows.sort_values(["threat", "attack_id"]).to_dict("records"):
        eps = float(r["eps"])
        a = {k: _plain(r.get(k)) for k in ATTACK_KEYS if k in r}
        a.update(eps=eps if math.isfinite(eps) else None,
                 eps_pixel=eps / scale if math.isfinite(eps) else None,
                 unbounded=not math.isfinite(eps), value=float(r["value"]), n=_count(r["n"]))
        out.append(a)
    return out


def _plain(v):
    """A Parquet cell as JSON takes it: None for a missing value, Python numbers."""
    import pandas as pd

    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return None
    return v.item() if hasattr(v, "item") else v


def _masking(frame, cid: str) -> list[dict]:
    """The gradient-masking checks of the model (lsqueeze.report.masking), computed from the
    whole measurements file: a black-box check needs its source model's rows."""
    from lsqueeze.report.masking import masking_flags

    if "dataset" not in frame.columns:  # the cell id begins with it
        frame = frame.assign(dataset=frame["cell_id"].astype(str).str.split("/").str[0])
    flags = masking_flags(frame)
    return [{k: _plain(v) for k, v in r.items() if k not in ("cell_id", "dataset")}
            for r in flags[flags["cell_id"] == cid].to_dict("records")]


def export_name(cid: str) -> str:
    """A file-system-safe name for a cell id: mnist/ls0-sq2-gn0.5-k100k-s0 ->
    mnist_ls0-sq2-gn0.5-k100k-s0."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", cid).strip("._") or "model"


# --- writing ----------------------------------------------------------------------------------

def _write_text(path: Path, text: str) -> None:
    with atomic_path(path, digest=False) as tmp:
        tmp.write_text(text)


def export_program(model, shape, path: Path) -> None:
    """The model as a torch.export program with a free batch dimension (1 to 65,536 images),
    written atomically (through a file handle: no temporary name goes into the archive)."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    # 2 images, not 1 (export would take a batch of 1 for a constant); drawn from a fixed seed,
    # as the archive keeps the example: one model exported twice gives one digest
    example = torch.rand(2, *shape, generator=torch.Generator().manual_seed(0))
    # traced with gradients on: attacks differentiate the loaded program with respect to x
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},), strict=False)
    with atomic_path(path, digest=False) as tmp, open(tmp, "wb") as fh:
        torch.export.save(program, fh)


def export(model_dir, out_dir, measurements=None) -> dict[str, Path]:
    """Write `<name>.pt2`, `<name>.pt`, `<name>.sha256`, `<name>.md` and `<name>.json` of a model
    directory into `out_dir/<dataset>/Linf/`, RobustBench's zoo layout (each file atomically);
    return their paths by kind. A measurements file that holds the cell but no attack on it is
    exported with "not measured" and a one-line warning on stderr."""
    import torch

    from lsqueeze.science.models import n_params

    metrics, model_path = checked_record(model_dir)
    measured = cell_measurements(measurements, metrics) if measurements else None
    if measured is not None and not measured["rows"]:
        print(f"lsqueeze export: warning: {measurements} holds no attack on cell "
              f"{metrics['spec']['id']}: its robust accuracy is \"not measured\"",
              file=sys.stderr)
    model = _build_and_load(metrics, model_path)
    state = {k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().contiguous()
             for k, v in model.state_dict().items()}
    spec = metrics["spec"]
    name = export_name(spec["id"])
    out = Path(out_dir) / spec["cell"]["dataset"] / THREAT_MODEL
    paths = {"program": out / f"{name}.pt2", "checkpoint": out / f"{name}.pt",
             "sha256": out / f"{name}.sha256", "card": out / f"{name}.md",
             "json": out / f"{name}.json"}
    # through a file handle: torch.save(obj, <path>) would record the temp file's name in the
    # archive, so one model exported twice would get two digests
    with atomic_path(paths["checkpoint"], digest=False) as tmp, open(tmp, "wb") as fh:
        torch.save(state, fh)
    export_program(model.float(), IMAGE_SHAPE[spec["cell"]["dataset"]], paths["program"])
    sums = {k: file_digest(paths[k]) for k in ("checkpoint", "program")}
    _write_text(paths["sha256"], "".join(f"{sums[k]}  {paths[k].name}\n"
                                         for k in ("checkpoint", "program")))
    files = {k: (paths[k].name, sums[k]) for k in ("checkpoint", "program")}
    card = model_card(metrics, files, n_params(model), measured,
                      name=(measured or {}).get("name"))
    _write_text(paths["json"], json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    _write_text(paths["card"], card_markdown(card))
    return paths
