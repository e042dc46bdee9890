"""What counts as no value, in one place: None, NaN (of any float type) and pandas' NA, the
empty cells of a Parquet table or a measurement row. No pandas import: the registries use it."""

from __future__ import annotations


def missing(v) -> bool:
    if v is None:
        return True
    try:
        return bool(v != v)  # NaN is the one value unequal to itself
    except (TypeError, ValueError):  # pandas' NA compares to NA, which has no truth value
        return True
