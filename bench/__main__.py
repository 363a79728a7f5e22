"""Run every bench/bench_*.py (its `main()`), in name order; one failing benchmark does not stop the rest.

    python -m bench                  # all, except the GPU figures
    python -m bench cli data         # only bench_cli.py and bench_data.py
    python -m bench real             # bench_real.py: the embedded SmolLM2 beside bare loops (python -m bench.bench_real --model DIR)
    python -m bench --gpu [--small]  # only bench_gpu.py (make bench-gpu); --small: a tiny model on CPU
"""

from __future__ import annotations

import importlib
import sys
import traceback
from pathlib import Path

args = sys.argv[1:]
gpu, small = "--gpu" in args, "--small" in args
wanted = [a for a in args if not a.startswith("--")]
names = ["bench_gpu"] if gpu else sorted(p.stem for p in Path(__file__).parent.glob("bench_*.py") if p.stem != "bench_gpu")
for name in names:
    if wanted and name.removeprefix("bench_") not in wanted:
        continue
    print(f"# {name}", flush=True)
    try:
        module = importlib.import_module(f"bench.{name}")
        module.main(small=small) if gpu else module.main()
    except Exception:  # noqa: BLE001 - a benchmark reports, it never fails the build
        print(f"# {name} failed:\n# " + traceback.format_exc().replace("\n", "\n# "), flush=True)
