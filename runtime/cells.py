"""An eval *cell*: one result file per (checkpoint, suite), `<out>/<checkpoint>/<cell>.json`, keyed by a
fingerprint of the weights, the suite's settings and its inputs (runtime/evaluate.py explains the
sweep). Shared by the eval stage and the suites it runs (judge, reward, general, held-out).
"""

from __future__ import annotations

from pathlib import Path

from tunebook.files import read_json


class EvalCellError(Exception):
    """One cell could not be computed (e.g. a judge endpoint stayed unreachable). The sweep finishes
    the other cells, keeps everything finished, and fails at the end with all such messages."""


def read_cell(path: Path, fp: str | None) -> dict | None:
    """The cell at `path` if it has fingerprint `fp` (any fingerprint when fp is None)."""
    cell = read_json(path)
    return cell if isinstance(cell, dict) and (fp is None or cell.get("fingerprint") == fp) else None
