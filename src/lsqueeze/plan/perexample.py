"""Per-example results: which test images survived an attack, and the worst case over attacks.

Every evaluation record (white-box and black-box) carries `per_example`: the range of test-set
indices it attacked and one bit per image (1 = still classified correctly), packed and base64'd —
125 bytes per 1,000 images. From these the aggregation computes the worst case per model and ε as
RobustBench and AutoAttack report robust accuracy: an image counts as robust only if it survives
*every* attack run on that model at that ε (white-box and black-box alike) and is classified
correctly clean. The minimum of the attacks' accuracies is only an upper bound of it. An attack
added to a finished run adds its own vector; the worst case is recomputed from the stored ones
without rerunning the others.
"""

from __future__ import annotations

import base64
import math

import numpy as np

from lsqueeze.runtime.values import missing

WORST = "worst"  # the threat (and attack kind) of a worst-case row


def pack(correct, start: int = 0) -> dict:
    """{start, stop, bits}: correctness of test images start..stop-1, one bit each."""
    bits = np.asarray(correct.cpu() if hasattr(correct, "cpu") else correct, dtype=bool).ravel()
    return {"start": int(start), "stop": int(start) + len(bits),
            "bits": base64.b64encode(np.packbits(bits).tobytes()).decode("ascii")}


def unpack(per_example: dict, n: int | None = None) -> tuple[range, np.ndarray]:
    """(indices, correctness) of a stored vector; n, the record's image count, is checked."""
    try:
        start, stop = int(per_example["start"]), int(per_example["stop"])
        raw = np.frombuffer(base64.b64decode(per_example["bits"], validate=True), dtype=np.uint8)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"per_example: unreadable ({exc})") from None
    count = stop - start
    if count < 0 or len(raw) != math.ceil(count / 8) or (n is not None and n != count):
        raise ValueError(f"per_example: {len(raw)} bytes for images {start}..{stop - 1}"
                         + (f" of a record of {n} images" if n is not None else ""))
    return range(start, stop), np.unpackbits(raw, count=count).astype(bool)


def eps_key(eps) -> str:
    """ε as a worst-case id part: paper units, one spelling ('0.3', '8', 'inf')."""
    if eps is None or (isinstance(eps, float) and math.isinf(eps)):
        return "inf"
    return f"{float(eps):g}"


def worst_case_id(eps, kind: str = "worst_case") -> str:
    """worst-e<ε>; a model measured only by transfer attacks: worst-transfer-e<ε>."""
    return f"{WORST}-{'transfer-' if kind == 'worst_transfer' else ''}e{eps_key(eps)}"


def pack_members(first_broken_by, members) -> dict:
    """An ensemble's per-image breakdown (AutoAttack): the members in order and, per image, the
    1-based position of the member that first fooled it (0: misclassified clean, -1: survived
    them all), one signed byte each, base64'd."""
    codes = np.asarray(first_broken_by.cpu() if hasattr(first_broken_by, "cpu") else first_broken_by,
                       dtype=np.int8).ravel()
    if len(codes) and (codes.min() < -1 or codes.max() > len(members)):
        raise ValueError(f"members: codes {codes.min()}..{codes.max()} for {len(members)} members")
    return {"members": list(members), "first_broken_by":
            base64.b64encode(codes.tobytes()).decode("ascii")}


def unpack_members(record: dict, n: int) -> tuple[list[str], np.ndarray]:
    """(members, first_broken_by) of a stored breakdown of n images, checked."""
    try:
        members = [str(m) for m in record["members"]]
        codes = np.frombuffer(base64.b64decode(record["first_broken_by"], validate=True),
                              dtype=np.int8)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"members: unreadable ({exc})") from None
    if len(codes) != n or (len(codes) and (codes.min() < -1 or codes.max() > len(members))):
        raise ValueError(f"members: {len(codes)} codes for a record of {n} images and "
                         f"{len(members)} members")
    return members, codes


def accuracy_after(members: list[str], codes: np.ndarray) -> dict[str, float]:
    """Accuracy after the clean pass and after each member, in order (the last member's is the
    ensemble's): an image still counts after member k if no member up to k fooled it."""
    n = max(len(codes), 1)
    out = {"clean": float((codes != 0).sum() / n)}
    for k, member in enumerate(members, start=1):
        out[member] = float(((codes == -1) | (codes > k)).sum() / n)
    return out


def _common(vectors: list[tuple[str, range, np.ndarray]]):
    """(first, stop, [bits restricted to the images every vector covers])."""
    lo, hi = max(idx.start for _, idx, _ in vectors), min(idx.stop for _, idx, _ in vectors)
    return lo, hi, [bits[max(lo - idx.start, 0):max(hi - idx.start, 0)] for _, idx, bits in vectors]


def worst_cases(records: list[dict]) -> list[dict]:
    """One result per (model, ε) over the evaluation records (white and black) at that ε.

    Returns [{cell, cell_id, eps, kind, n, correct, accuracy, attacks, warnings}]. An image
    counts only if the model classifies it correctly clean (the white-box records carry that
    per image) and under every attack, on the images every record covers. `kind` is
    "worst_case", or "worst_transfer" for a model measured only by black-box attacks: the worst
    transfer accuracy is not a robust accuracy and is never reported as one. `warnings` (one
    line each) says what the number does not cover: attacks run on other test images (the
    worst case is then over the common ones), records from a run that stored no per-image
    results (left out), clean correctness not recorded. A (model, ε) with no two records on any
    common image gets accuracy None and its warning; one with no per-image results at all, nothing.
    """
    groups: dict[tuple, list[dict]] = {}
    for rec in records:
        if rec.get("kind") in ("white", "black"):
            key = (rec["cell_id"], eps_key(rec["attack"]["paper"].get("eps")))
            groups.setdefault(key, []).append(rec)
    out = []
    for (cid, _eps), recs in sorted(groups.items()):
        name = {id(r): f"{r['kind']}:{r['attack']['id']}"
                + (f"@{r['source_id']}" if r.get("source_id") else "") for r in recs}
        notes, vectors, cleans = [], [], []
        for r in recs:
            try:
                if "per_example" in r:
                    vectors.append((name[id(r)], *unpack(r["per_example"], r["n"])))
                if "clean_per_example" in r:
                    cleans.append(("clean", *unpack(r["clean_per_example"], r["n"])))
            except ValueError as exc:
                raise ValueError(f"{cid}, {name[id(r)]}: {exc}") from None
        old = sorted(name[id(r)] for r in recs if "per_example" not in r)
        if old:
            notes.append(f"{', '.join(old)}: no per-image results (an older run), left out")
        if not vectors:
            continue
        every = vectors + cleans
        lo, hi, bits = _common(every)
        base = {"cell": recs[0]["cell"], "cell_id": cid,
                "eps": recs[0]["attack"]["paper"].get("eps"), "warnings": notes}
        if hi <= lo:
            notes.append("the attacks ran on test images no two of them share: no worst case")
            out.append({**base, "n": 0, "accuracy": None})
            continue
        spans = {(idx.start, idx.stop) for _, idx, _ in every}
        if len(spans) > 1:
            notes.append("attacks ran on different test images ("
                         + ", ".join(f"{v}: {idx.start}..{idx.stop - 1}" for v, idx, _ in vectors)
                         + f"): worst case over the {hi - lo} images {lo}..{hi - 1} they share")
        if not cleans and any(r["kind"] == "white" for r in recs):
            notes.append("clean correctness per image not recorded (an older run): worst case "
                         "over the attacks alone")
        survived = np.logical_and.reduce(bits)
        black_only = all(r["kind"] == "black" for r in recs)
        out.append({**base, "kind": "worst_transfer" if black_only else "worst_case",
                    "n": len(survived), "start": lo, "stop": hi,
                    "correct": int(survived.sum()), "accuracy": float(survived.mean()),
                    "attacks": (["clean"] if cleans else []) + sorted(v for v, _, _ in vectors),
                    "warnings": notes})
    return out


def worst_of_list(v) -> list[str] | None:
    """A worst-case row's `worst_of` as a list, whether stored as one (a Parquet list reads back
    as an array) or as the "a, b" string of runs kept before it was a list."""
    if isinstance(v, str):
        return [a.strip() for a in v.split(",") if a.strip()]
    if not hasattr(v, "__len__") and missing(v):  # None, NaN, pd.NA
        return None
    return [str(a) for a in v]
