"""What counts as no value, in one place: None, NaN (of any float type) and pandas' NA, the
empty cells of a Parquet table or a measurement row; a list or an array cell is a value. No
pandas import: the registries use it."""

from __future__ import annotations


def missing(v) -> bool:
    if v is None:
        return True
    try:
        return bool(v != v)  # NaN is the one value unequal to itself
    except TypeError:  # pandas' NA compares to NA, which has no truth value
        return True
    except ValueError:  # an array compares element-wise: not a scalar, a value
        return False
