"""Per-example results: the stored vectors round-trip, a damaged one is refused, and the worst
case is the share of images that survive every attack at one ε — not the best attack's accuracy."""

import numpy as np
import pytest
import torch

from lsqueeze.plan.perexample import pack, unpack, worst_case_id, worst_cases


def test_pack_round_trips_and_is_compact():
    bits = torch.rand(1000, generator=torch.Generator().manual_seed(0)) > 0.5
    stored = pack(bits, start=0)
    assert stored["start"] == 0 and stored["stop"] == 1000
    assert len(stored["bits"]) <= 172  # 125 bytes, base64
    index, back = unpack(stored, n=1000)
    assert index == range(1000) and np.array_equal(back, bits.numpy())


def test_a_damaged_vector_is_refused():
    stored = pack(np.array([True, False, True]))
    with pytest.raises(ValueError, match="of a record of 4 images"):
        unpack(stored, n=4)
    with pytest.raises(ValueError, match="unreadable"):
        unpack({**stored, "bits": "not base64!"})
    with pytest.raises(ValueError, match="bytes for images 0..99"):
        unpack({**stored, "stop": 100})


def _rec(kind, attack, bits, eps=0.3, cell="m/a", source=None):
    bits = np.array(bits, dtype=bool)
    rec = {"kind": kind, "cell_id": cell, "cell": {"dataset": "m"}, "n": len(bits),
           "attack": {"id": attack, "paper": {"eps": eps}}, "per_example": pack(bits)}
    return {**rec, "source_id": source} if source else rec


def test_worst_case_is_per_image_not_the_minimum_accuracy():
    # Each attack alone leaves 3 of 4 images; together they leave 1.
    recs = [_rec("white", "pgd", [1, 1, 1, 0]), _rec("white", "aa", [1, 0, 1, 1]),
            _rec("black", "fgsm", [1, 1, 0, 1], source="m/nat"),
            _rec("white", "pgd-e0.5", [0, 0, 0, 0], eps=0.5)]
    by_eps = {w["eps"]: w for w in worst_cases(recs)}
    w = by_eps[0.3]
    assert (w["n"], w["correct"], w["accuracy"]) == (4, 1, 0.25)
    assert w["attacks"] == ["black:fgsm@m/nat", "white:aa", "white:pgd"]
    assert by_eps[0.5]["accuracy"] == 0.0 and by_eps[0.5]["attacks"] == ["white:pgd-e0.5"]
    assert worst_case_id(0.3) == "worst-e0.3" and worst_case_id(None) == "worst-einf"


def test_no_worst_case_over_part_of_the_attacks():
    """An evaluation without a vector (an older run) or over other images: no number at all."""
    old = {k: v for k, v in _rec("white", "old", [1, 1, 1, 1]).items() if k != "per_example"}
    assert worst_cases([_rec("white", "pgd", [1, 0, 1, 1]), old]) == []
    other = _rec("white", "aa", [1, 0, 1])
    assert worst_cases([_rec("white", "pgd", [1, 0, 1, 1]), other]) == []
