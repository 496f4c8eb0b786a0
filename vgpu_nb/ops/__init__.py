"""The built-in op library: reductions and linear algebra (more in later issues)."""

from .linalg import matmul
from .reductions import argmax, argmin, dot, max, mean, min, norm, prod, std, sum, var

__all__ = ["argmax", "argmin", "dot", "matmul", "max", "mean", "min", "norm", "prod", "std"]
__all__ += ["sum", "var"]
