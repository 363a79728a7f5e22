"""Run every bench/bench_*.py (its `main()`), in name order; one failing benchmark does not stop the rest.

    python -m bench            # all
    python -m bench cli data   # only bench_cli.py and bench_data.py
"""

from __future__ import annotations

import importlib
import sys
import traceback
from pathlib import Path

names = sorted(p.stem for p in Path(__file__).parent.glob("bench_*.py"))
wanted = sys.argv[1:]
for name in names:
    if wanted and name.removeprefix("bench_") not in wanted:
        continue
    print(f"# {name}", flush=True)
    try:
        importlib.import_module(f"bench.{name}").main()
    except Exception:  # noqa: BLE001 - a benchmark reports, it never fails the build
        print(f"# {name} failed:\n# " + traceback.format_exc().replace("\n", "\n# "), flush=True)
