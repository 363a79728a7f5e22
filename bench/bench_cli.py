"""CLI and pipeline figures: cold compile/report, compiling 1,000 specs, `dvc repro` no-op and full.

    python -m bench cli
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import line, median_time

ROOT = Path(__file__).resolve().parent.parent


def _env() -> dict:
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PYTHONPATH=str(ROOT))
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def _run(args, cwd, check=True):
    return subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, check=check)


def compile_cold() -> None:
    with tempfile.TemporaryDirectory() as d:
        shutil.copytree(ROOT / "specs", Path(d) / "specs")
        t = median_time(lambda: _run([sys.executable, "-m", "tunebook", "compile", "--force"], d), repeats=5)
    line("cli_compile_cold_s", t, "s", "<=", 1.0)


def report_cold() -> None:
    record = ROOT / "tests/fixtures/records/quickstart_like.json"
    if (ROOT / "runs/quickstart/record.json").exists():
        record = ROOT / "runs/quickstart/record.json"
    with tempfile.TemporaryDirectory() as d:
        runs = iter(range(100))

        def fresh():  # a new output folder each time: every chart is written, nothing is reused
            out = Path(d) / str(next(runs))
            _run([sys.executable, "-m", "tunebook", "report", "--record", str(record), "-o", str(out / "r.md")], d)

        t = median_time(fresh, repeats=5)
    line("cli_report_cold_s", t, "s", "<=", 1.0)


def compile_1000() -> None:
    from tunebook.compiler import compile_specs, load_specs, render_pipeline

    with tempfile.TemporaryDirectory() as d:
        specs = Path(d) / "specs"
        specs.mkdir()
        (specs / "_base.yaml").write_text((ROOT / "specs/quickstart.yaml").read_text().replace("name: quickstart\n", ""))
        for i in range(1000):
            (specs / f"v{i:04d}.yaml").write_text(f"extends: _base.yaml\nname: v{i:04d}\nmethod:\n  lr: {1e-4 * (1 + i % 50):.6g}\n  seed: {i}\n")
        paths = sorted(specs.glob("v*.yaml"))
        t0 = time.perf_counter()
        render_pipeline(compile_specs(load_specs(paths, Path(d))))
        t = time.perf_counter() - t0
    line("compile_1000_specs_s", t, "s", "<=", 5.0)


def review_1000() -> None:
    """`tunebook review` over 1,000 records (variants of the rich fixture record), in-process."""
    import json

    from tunebook.reports.review import write_review

    base = json.loads((ROOT / "tests/fixtures/records/quickstart_like.json").read_text())
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for i in range(1000):
            rec = dict(base, experiment=f"exp-{i:04d}")
            rec["planned"] = {**base.get("planned", {}), "method.lr": 1e-4 * (1 + i % 7)}
            p = Path(d) / f"exp-{i:04d}" / "record.json"
            p.parent.mkdir()
            p.write_text(json.dumps(rec))
            paths.append(p)
        t0 = time.perf_counter()
        write_review(paths, Path(d) / "review.md")
        t = time.perf_counter() - t0
    line("review_1000_records_s", t, "s", "<=", 3.0)


def repro() -> None:
    """Full `dvc repro` of the quickstart from a clean clone, then the no-op repro."""
    with tempfile.TemporaryDirectory() as d:
        clone = Path(d) / "tb"
        _run(["git", "clone", "-q", str(ROOT), str(clone)], d)
        t0 = time.perf_counter()
        res = _run(["dvc", "repro"], clone, check=False)
        full = time.perf_counter() - t0
        if res.returncode != 0:
            print(f"# dvc repro failed: {res.stderr[-500:]}")
            return
        line("quickstart_repro_s", full, "s", "<=", 300)
        noop = median_time(lambda: _run(["dvc", "repro"], clone), repeats=3)
        line("repro_noop_s", noop, "s", "<=", 2.0)


def main() -> None:
    compile_cold()
    report_cold()
    compile_1000()
    review_1000()
    repro()


if __name__ == "__main__":
    main()
