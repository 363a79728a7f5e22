"""What the reliability suite tried, for the line it prints at the end (see conftest.py).

Tests add to these counts as they go; a count only means something if the test that made it passed,
which the summary checks before saying "nothing lost".
"""

from __future__ import annotations

from collections import Counter

COUNTS: Counter = Counter()  # "mutated specs", "hand edits", "kills", "hostile inputs"


def tried(kind: str, n: int = 1) -> None:
    COUNTS[kind] += n
