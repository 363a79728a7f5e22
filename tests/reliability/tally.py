"""What the reliability suite tried, for the line it prints at the end (see conftest.py).

Tests add to these counts as they go; a count only means something if the test that made it passed,
which the summary checks before saying "nothing lost".
"""

from __future__ import annotations

from collections import Counter

COUNTS: Counter = Counter()  # "mutated specs", "hand edits", "kills", "hostile inputs", and ISSUE16_KINDS

# What issue 16's tests try, one kind per class of attack (docs/reliability.md, sections 8-11).
ISSUE16_KINDS = ("confinement escapes", "secret leaks", "bad records", "name collisions", "injections", "faults")


def tried(kind: str, n: int = 1) -> None:
    COUNTS[kind] += n
