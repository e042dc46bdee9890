"""Per-example results: which test images survived an attack, and the worst case over attacks.

Every evaluation record (white-box and black-box) carries `per_example`: the range of test-set
indices it attacked and one bit per image (1 = still classified correctly), packed and base64'd —
125 bytes per 1,000 images. From these the aggregation computes the worst case per model and ε as
RobustBench and AutoAttack report robust accuracy: an image counts as robust only if it survives
*every* attack run on that model at that ε (white-box and black-box alike). The minimum of the
attacks' accuracies is only an upper bound of it. An attack added to a finished run adds its own
vector; the worst case is recomputed from the stored ones without rerunning the others.
"""

from __future__ import annotations

import base64
import math

import numpy as np

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


def worst_case_id(eps) -> str:
    return f"{WORST}-e{eps_key(eps)}"


def worst_cases(records: list[dict]) -> list[dict]:
    """One result per (model, ε) over the evaluation records (white and black) at that ε.

    Returns [{cell, cell_id, eps, n, correct, accuracy, attacks}], `attacks` the ids combined.
    A (model, ε) where some evaluation has no stored vector (a run from before they were stored)
    or attacked other images than the rest gets no worst case: a worst case over part of the
    attacks would be a number that looks complete and is not.
    """
    groups: dict[tuple, list[dict]] = {}
    for rec in records:
        if rec.get("kind") in ("white", "black"):
            key = (rec["cell_id"], eps_key(rec["attack"]["paper"].get("eps")))
            groups.setdefault(key, []).append(rec)
    out = []
    for (cid, _eps), recs in sorted(groups.items()):
        if any("per_example" not in r for r in recs):
            continue
        vectors = []
        for r in recs:
            try:
                vectors.append((r, *unpack(r["per_example"], r["n"])))
            except ValueError as exc:
                raise ValueError(f"{cid}, {r['kind']} {r['attack']['id']}: {exc}") from None
        if len({idx for _, idx, _ in vectors}) != 1:
            continue
        survived = np.logical_and.reduce([bits for _, _, bits in vectors])
        attacks = sorted({f"{r['kind']}:{r['attack']['id']}"
                          + (f"@{r['source_id']}" if r.get("source_id") else "")
                          for r, _, _ in vectors})
        out.append({"cell": recs[0]["cell"], "cell_id": cid,
                    "eps": recs[0]["attack"]["paper"].get("eps"), "n": len(survived),
                    "correct": int(survived.sum()), "accuracy": float(survived.mean()),
                    "attacks": attacks})
    return out
