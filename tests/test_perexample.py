"""Per-example results: the stored vectors round-trip, a damaged one is refused, and the worst
case is the share of images that survive every attack at one ε — not the best attack's accuracy."""

import numpy as np
import pytest
import torch

from lsqueeze.plan.perexample import (
    accuracy_after,
    pack,
    pack_members,
    unpack,
    unpack_members,
    worst_case_id,
    worst_cases,
)


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


def test_the_worst_case_counts_clean_correctness():
    """An image the model gets wrong clean is not robust, even if an attack's output (a random
    start, a transfer image) happens to be classified right."""
    pgd = _rec("white", "pgd", [1, 1, 1, 0])
    pgd["clean_per_example"] = pack(np.array([1, 0, 1, 1], dtype=bool))
    fgsm = _rec("black", "fgsm", [1, 1, 0, 1], source="m/nat")
    (w,) = worst_cases([pgd, fgsm])
    assert (w["n"], w["correct"], w["kind"]) == (4, 1, "worst_case")
    assert w["attacks"] == ["clean", "black:fgsm@m/nat", "white:pgd"] and w["warnings"] == []


def test_attacks_on_different_images_give_the_worst_case_over_the_common_ones():
    pgd = _rec("white", "pgd", [1, 0, 1, 1])            # images 0..3
    aa = _rec("white", "aa", [1, 1, 1])                 # images 0..2
    (w,) = worst_cases([pgd, aa])
    assert (w["n"], w["correct"], w["start"], w["stop"]) == (3, 2, 0, 3)
    assert len(w["warnings"]) == 2  # the subsets, and no clean record
    assert "worst case over the 3 images 0..2 they share" in w["warnings"][0]
    shifted = {**aa, "per_example": pack(np.array([0, 1, 1], dtype=bool), start=2)}  # 2..4
    (w,) = worst_cases([pgd, shifted])
    assert (w["n"], w["correct"], w["start"]) == (2, 1, 2)
    apart = {**aa, "per_example": pack(np.array([1, 1, 1], dtype=bool), start=10)}
    (w,) = worst_cases([pgd, apart])
    assert w["accuracy"] is None and "no two of them share" in w["warnings"][-1]


def test_a_record_without_per_image_results_is_named_not_silently_dropped():
    old = {k: v for k, v in _rec("white", "old", [1, 1, 1, 1]).items() if k != "per_example"}
    (w,) = worst_cases([_rec("white", "pgd", [1, 0, 1, 1]), old])
    assert w["attacks"] == ["white:pgd"] and w["correct"] == 3
    assert "white:old: no per-image results" in w["warnings"][0]
    assert worst_cases([old]) == []


def test_a_model_with_black_box_attacks_only_gets_a_worst_transfer_accuracy():
    recs = [_rec("black", "fgsm", [1, 1, 0, 1], source="m/nat"),
            _rec("black", "pgd", [1, 0, 1, 1], source="m/nat")]
    (w,) = worst_cases(recs)
    assert w["kind"] == "worst_transfer" and w["correct"] == 2 and w["warnings"] == []
    assert worst_case_id(0.3, w["kind"]) == "worst-transfer-e0.3"


def test_member_breakdown_round_trips_and_gives_the_accuracy_after_each_member():
    members = ["apgd-ce", "apgd-t", "fab-t", "square"]
    codes = np.array([-1, 0, 1, 2, 2, 4, -1, 3, -1, -1], dtype=np.int8)
    stored = pack_members(torch.from_numpy(codes), members)
    got_members, got = unpack_members(stored, 10)
    assert got_members == members and np.array_equal(got, codes)
    assert accuracy_after(members, got) == pytest.approx(
        {"clean": 0.9, "apgd-ce": 0.8, "apgd-t": 0.6, "fab-t": 0.5, "square": 0.4})
    with pytest.raises(ValueError, match="codes for a record of 11 images"):
        unpack_members(stored, 11)
    with pytest.raises(ValueError, match="codes"):
        pack_members(np.array([5]), members)
