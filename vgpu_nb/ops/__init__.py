"""The built-in op library: reductions, linear algebra and elementwise math (lazy, fused
expressions on vg.Array; more in later issues)."""

from .elementwise import (
    abs,
    acos,
    asin,
    atan,
    atan2,
    ceil,
    cos,
    cosh,
    erf,
    exp,
    exp2,
    floor,
    fma,
    fmod,
    isfinite,
    isinf,
    isnan,
    log,
    log2,
    log10,
    maximum,
    minimum,
    pow,
    round,
    sin,
    sinh,
    sqrt,
    tan,
    tanh,
    trunc,
    where,
)
from .linalg import matmul
from .reductions import argmax, argmin, dot, max, mean, min, norm, prod, std, sum, var

__all__ = [
    "abs", "acos", "argmax", "argmin", "asin", "atan", "atan2", "ceil", "cos", "cosh", "dot",
    "erf", "exp", "exp2", "floor", "fma", "fmod", "isfinite", "isinf", "isnan", "log",
    "log10", "log2", "matmul", "max", "maximum", "mean", "min", "minimum", "norm", "pow",
    "prod", "round", "sin", "sinh", "sqrt", "std", "sum", "tan", "tanh", "trunc", "var",
    "where",
]  # fmt: skip
