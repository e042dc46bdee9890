"""Fault trials: what a hostile or careless user does to a run, and what the pipeline must do in return.

Each test reproduces one trial (a killed job resumed after an edit, a corrupted or swapped model, a
GPU preset on a machine without a GPU, bad quoting, writes while parsing, validation gaps) and asserts
a clear one-line error or the right result, with nothing lost.
"""
