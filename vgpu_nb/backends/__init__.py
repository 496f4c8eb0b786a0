"""Backends: one module each behind :mod:`vgpu_nb.backends.base`."""
