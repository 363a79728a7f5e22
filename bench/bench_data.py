"""Data stage figures: prepare 1,000,000 chat rows (read, check, census, mix, hold out, sample, hash, write).

    python -m bench data

The rows are generated into a temporary project (0.1 % with an empty assistant turn and 0.1 % with a
stringified-JSON one, so quarantine is exercised); the spec samples half, holds out 1 % and stratifies
by a category column. Generation and the stage each run in their own child process: the stage's child
reports its own time and peak resident memory, and a child's peak (ru_maxrss) starts from its parent's
size at fork, so the parent stays small.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import line

ROOT = Path(__file__).resolve().parent.parent
ROWS = 1_000_000

# what the child runs: the data stage function itself, timed, then its own peak RSS
CHILD = """
import json, resource, sys, time
from pathlib import Path
from tunebook.compiler.schema import Spec
from tunebook.runtime.context import StageContext
from tunebook.runtime import data

root = Path(sys.argv[1])
spec = Spec.model_validate({"name": "bench", "model": {"base": "builtin:tiny"}, "data": {
    "train": [{"source": "chat.jsonl"}], "sample_ratio": 0.5, "validation_split": 0.01, "stratify": "category"}})
t0 = time.perf_counter()
data.run(StageContext(root=root, name="bench", spec=spec, params={"spec": "bench.yaml"}))
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def generate(path: Path, n: int, seed: int = 0) -> None:
    """n chat rows of varied length, written with polars (a Python loop would take longer than the stage)."""
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(seed)
    words = np.array("the a model data train eval loss token layer weight answer question why how what when "
                     "gradient batch step learning rate schedule warmup adapter rank alpha".split())
    sentences = pl.Series([" ".join(rng.choice(words, size=int(k))) for k in rng.integers(5, 60, size=4096)])
    i = pl.int_range(n, eager=True)
    question = pl.format("{} {}?", i, sentences.gather(rng.integers(0, 4096, size=n)))
    answer = sentences.gather(rng.integers(0, 4096, size=n))
    bad = rng.random(n)
    answer = (pl.when(pl.Series(bad < 0.001)).then(pl.lit(""))
              .when(pl.Series(bad > 0.999)).then(pl.format('{{"answer": "{}"}}', answer)).otherwise(answer))
    frame = pl.select(
        messages=pl.concat_list(pl.struct(role=pl.lit("user"), content=question), pl.struct(role=pl.lit("assistant"), content=answer)),
        category=pl.Series(rng.choice(list("abcd"), size=n, p=[0.4, 0.3, 0.2, 0.1])),
    )
    frame.write_ndjson(path)


def main() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    with tempfile.TemporaryDirectory() as d:
        make = f"from pathlib import Path; from bench.bench_data import generate; generate(Path({d!r}) / 'chat.jsonl', {ROWS})"
        subprocess.run([sys.executable, "-c", make], cwd=ROOT, env=env, check=True)
        out = subprocess.run([sys.executable, "-c", CHILD, d], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
    line("data_1m_rows_s", result["seconds"], "s", "<=", 60)
    line("data_1m_rows_peak_mib", result["peak_mib"], "MiB", "<=", 2048)


if __name__ == "__main__":
    main()
