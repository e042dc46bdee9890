"""Reproduction pipeline for Shafahi et al. (2019), label smoothing and logit squeezing."""

__version__ = "0.1.0"
