"""Tiered memory: device → host → disk, with budgets, LRU spill, prefetch and
out-of-core streaming (``vg.memory``)."""

from __future__ import annotations

from .budgets import human, parse_size
from .manager import DEVICE, DISK, HOST, MEM, TIERS, Storage

__all__ = ["DEVICE", "DISK", "HOST", "MEM", "TIERS", "Storage", "human", "parse_size"]
