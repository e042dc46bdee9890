"""Where a preset's run stands in its model store, model by model: trained, stopped at a
checkpoint (and whether today's code would resume it), or not started; and how many of its
evaluations are on disk.

A long preset runs in stretches (a CPU preset over several days, a cluster job that hits its
time limit), and Snakemake says which jobs are left but not how far a stopped training got, nor
that an edit to the training code would restart it from step 0. This reads the store only: the
checkpoint a training saved last (state.pt, checked against its digest like every file read),
never a running job's progress beyond it.
"""

from __future__ import annotations

from pathlib import Path

from lsqueeze.plan.build import build_plan
from lsqueeze.plan.layout import Layout
from lsqueeze.runtime.files import load_torch, read_json
from lsqueeze.runtime.fingerprint import fingerprint
from lsqueeze.runtime.integrity import checkpoint_key, stale_reason


def _checkpoint(state_path: Path, key: str, device_type: str | None, precision: str | None) -> dict:
    try:
        st = load_torch(state_path)
    except (OSError, RuntimeError, ValueError) as exc:  # unreadable or not its digest
        return {"state": "checkpoint", "step": None, "resumes": False, "why": str(exc)}
    why = stale_reason(st, key, device_type, precision)
    return {"state": "checkpoint", "step": int(st.get("step", 0)), "resumes": why is None,
            "why": why}


def run_status(config: dict, device_type: str | None = None, precision: str | None = None) -> list[dict]:
    """One entry per model of the preset: id, steps, state ("trained", "checkpoint", "not
    started"), and its evaluations done / planned. device_type, precision: how this machine would
    train (a checkpoint of another kind of device or precision is not resumed)."""
    plan = build_plan(config)
    layout = Layout(plan)
    code = fingerprint("jobs.train")
    evals: dict[str, list[str]] = {c: [] for c in plan.cells}
    for cid, aid in plan.white:
        evals[cid].append(layout.white(cid, aid))
    for target, source, aid in plan.black:
        evals[target].append(layout.black(target, source, aid))
    out = []
    for cid in sorted(plan.cells):
        cell_dir = Path(layout.cell_dir(cid))
        entry = {"id": cid, "steps": plan.cells[cid]["steps"],
                 "evals_done": sum(Path(p).is_file() for p in evals[cid]),
                 "evals": len(evals[cid])}
        if (cell_dir / "model.pt").is_file() and (cell_dir / "metrics.json").is_file():
            m = read_json(cell_dir / "metrics.json")
            entry.update(state="trained", step=m.get("steps_done"),
                         test_accuracy=m.get("test_accuracy"), diverged=m.get("diverged"))
        elif (cell_dir / "state.pt").is_file():
            key = checkpoint_key(plan.train_spec(cid), code)
            entry.update(_checkpoint(cell_dir / "state.pt", key, device_type, precision))
        else:
            entry.update(state="not started", step=0)
        out.append(entry)
    return out


def _training(e: dict) -> str:
    if e["state"] == "trained":
        acc = e.get("test_accuracy")
        return (f"trained, {e['step']:,} steps" + (" (diverged)" if e.get("diverged") else "")
                + (f", test {100 * acc:.2f}%" if isinstance(acc, (int, float)) else ""))
    if e["state"] == "checkpoint":
        if e["step"] is None:
            return f"checkpoint unreadable, will train from step 0: {e['why']}"
        at = f"checkpoint at step {e['step']:,} of {e['steps']:,} ({100 * e['step'] / e['steps']:.0f}%)"
        return at + (": resumes" if e["resumes"] else f": will train from step 0 ({e['why']})")
    return "not started"


def render(entries: list[dict], preset: str, store: str) -> str:
    trained = sum(e["state"] == "trained" for e in entries)
    done, planned = sum(e["evals_done"] for e in entries), sum(e["evals"] for e in entries)
    lines = [f"{preset}: {trained} of {len(entries)} models trained, {done} of {planned} "
             f"evaluations done (store {store})", "",
             "| model | training | evaluations |", "|---|---|---|"]
    lines += [f"| {e['id']} | {_training(e)} | {e['evals_done']} of {e['evals']} |" for e in entries]
    return "\n".join(lines)
