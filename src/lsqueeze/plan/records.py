"""A record read from the model store must be the one its path names.

A store path says what its file holds (lsqueeze.plan.layout): the cell (<dataset>/<recipe
key>/<tag>), the evaluated images (eval-all, or eval-n<N>: the first N), the threat, the black-box
source and the attack id. A file's digest vouches for its bytes, not for where it lies: a record
copied, with its digest, into another cell's folder would be read as that cell's, and change its
table and its worst case without a word. Every reader of a store record checks it here first.
"""

from __future__ import annotations

import re
from pathlib import Path

from lsqueeze.plan.build import WILDCARDS, cell_id
from lsqueeze.plan.perexample import WORST, eps_key, unpack, worst_cases
from lsqueeze.runtime.files import JobError, digest_path, repair_hint


class RecordMismatch(JobError):
    """A record that is not the one its path names (one line, naming the file)."""


def _is(pattern: str, text: str) -> bool:
    return re.fullmatch(WILDCARDS[pattern], text) is not None


def expected(path) -> dict | None:
    """What a store path says its record holds ({kind, cell_id, ...}); None for a path that is not
    in a store's layout (a model directory exported elsewhere, a file named by hand)."""
    parts = Path(path).parts
    cell_at = {"metrics.json": 4}.get(parts[-1]) if parts else None
    if cell_at is None and len(parts) >= 6 and parts[-2] == "white":
        cell_at, kind = 6, "white"
    elif cell_at is None and len(parts) >= 7 and parts[-3] == "black":
        cell_at, kind = 7, "black"
    elif cell_at is not None:
        kind = "train"
    else:
        return None
    if len(parts) < cell_at:
        return None
    dataset, recipe, tag = parts[-cell_at], parts[-cell_at + 1], parts[-cell_at + 2]
    if not (_is("dataset", dataset) and _is("recipe", recipe) and _is("tag", tag)):
        return None
    want = {"kind": kind, "cell_id": f"{dataset}/{tag}"}
    if kind == "train":
        return want
    subset = parts[-cell_at + 3]
    if not (subset.startswith("eval-") and _is("subset", subset[5:])):
        return None
    want["attack_id"] = Path(parts[-1]).stem
    want["n"] = int(subset[6:]) if subset[5:] != "all" else None
    if kind == "black":
        want["source_id"] = f"{dataset}/{parts[-2]}"
    return want


def _found(rec: dict, kind: str) -> dict:
    """The same keys as `expected`, read from the record itself."""
    if kind == "train":
        spec = rec.get("spec") or {}
        return {"kind": "train", "cell_id": rec.get("id", spec.get("id")),
                "described": cell_id(spec["cell"]) if isinstance(spec.get("cell"), dict) else None}
    return {"kind": rec.get("kind"), "cell_id": rec.get("cell_id"),
            "described": cell_id(rec["cell"]) if isinstance(rec.get("cell"), dict) else None,
            "attack_id": (rec.get("attack") or {}).get("id"), "n": rec.get("n"),
            "source_id": rec.get("source_id")}


def check_record(path, rec) -> dict:
    """Refuse (RecordMismatch) a store record that is not the one its path names: another kind,
    cell, attack, black-box source or number of images, or test images other than the first n."""
    want = expected(path)
    if want is None:
        return rec
    if not isinstance(rec, dict):
        raise RecordMismatch(f"{path}: not a record of this package (a JSON object)")
    if not digest_path(path).exists():  # every store record is written with one
        raise RecordMismatch(f"{path}: no sha256 recorded beside it ({digest_path(path).name}), "
                             f"so nothing vouches for its content; {repair_hint(path)}")
    try:
        got = _found(rec, want["kind"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordMismatch(f"{path}: unreadable record ({exc})") from None
    got.setdefault("described", None)
    checks = [(k, want[k], got.get(k)) for k in want if want[k] is not None]
    checks.append(("cell", want["cell_id"], got["described"]))
    for key, expect, have in checks:
        if have != expect:
            raise RecordMismatch(f"{path}: holds the record of {key} {have!r}, but its path is "
                                 f"{key} {expect!r} (copied or moved from another place?); "
                                 f"{repair_hint(path)}")
    if want["kind"] != "train" and "per_example" in rec:
        try:
            images, _ = unpack(rec["per_example"], rec.get("n"))
        except ValueError as exc:
            raise RecordMismatch(f"{path}: {exc}; {repair_hint(path)}") from None
        if images.start != 0:
            raise RecordMismatch(f"{path}: evaluates test images {images.start}..{images.stop - 1},"
                                 f" not the first {len(images)}; {repair_hint(path)}")
    return rec


def worst_case_gaps(plan: dict, records: list[dict]) -> list[str]:
    """Where a table's worst case combines fewer attacks than the table's columns at its ε: a
    column's record left out of the inputs (a hand-edited list), or evaluated on other test
    images than the rest (another n). The worst case is then over the others, or absent, and
    looks complete: the aggregation says so."""
    combined = {(w["cell_id"], eps_key(w["eps"])): {a.split(":", 1)[1].split("@")[0]
                                                    for a in w["attacks"] if ":" in a}
                for w in worst_cases(records) if w["accuracy"] is not None}  # "clean": no attack
    gaps = []
    for table in plan["tables"]:
        columns = table["columns"]
        for worst in (c for c in columns if c.get("threat") == WORST):
            eps = eps_key((worst.get("attack_paper") or {}).get("eps"))
            wanted = [c for c in columns if c.get("threat") in ("white", "black")
                      and c.get("metric", "accuracy") == "accuracy"  # not AutoAttack's members
                      and eps_key((c.get("attack_paper") or {}).get("eps")) == eps]
            for row in table["rows"]:
                for cid in row.get("cell_ids") or [row["cell_id"]]:
                    got = combined.get((cid, eps))
                    left = [c["name"] for c in wanted if got is None or c["attack_id"] not in got]
                    if left:
                        gaps.append(f"table {table['id']}, {cid}: the worst case at ε {eps} "
                                    + ("is missing" if got is None else "leaves out")
                                    + f" {', '.join(left)} (no record among the inputs, or one "
                                    "evaluated on other test images than the rest)")
    return gaps
