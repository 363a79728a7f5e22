"""Builders for small records, and the two fixture records (tests/fixtures/records)."""

from __future__ import annotations


def binary(n: int, right: int, flip: int = 0) -> tuple[list[float], list[float]]:
    """Aligned 0/1 scores: `right` of n correct, then `flip` of those turned wrong."""
    old = [1.0] * right + [0.0] * (n - right)
    new = [0.0] * flip + old[flip:]
    return old, new
