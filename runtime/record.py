"""The report stage: gather what the other stages wrote into `runs/<exp>/record.json`, then render
`logs/<exp>.md` with the `reports` package.

    tunebook run report <exp>      # what the `report-<exp>` DVC stage runs

No torch here. Also writes `runs/<exp>/metrics.json` (flat final metrics, for `dvc exp show` and
`tunebook review`); the per-checkpoint CSVs `dvc plots` reads are written with the log, in
`logs/plots/<exp>/` (reports/plots.py).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from tunebook.reports.record import Record, dump_record
from tunebook.runtime.evaluate import baseline_timings
from tunebook.runtime.context import StageContext

PACKAGES = ["tunebook", "torch", "transformers", "peft", "trl", "lm_eval", "datasets", "accelerate", "tokenizers",
            "safetensors", "numpy", "dvc", "dvclive"]
# Settings that change numbers between machines: thread counts change the order of CPU reductions.
# Only these names are recorded; the environment is never copied wholesale (it holds tokens).
THREAD_VARS = ["TUNEBOOK_CPU_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUBLAS_WORKSPACE_CONFIG"]


def _json(path: Path, default=None):
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return default


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        elif not isinstance(v, (list, dict)):
            out[key] = v
    return out


def planned_params(ctx: StageContext) -> dict:
    """The spec as it was asked to run (params.yaml, so `dvc exp run -S` values count as planned)."""
    s = ctx.spec
    flat = flatten({"model": s.model.model_dump(mode="json"), "method": s.method.model_dump(mode="json"),
                    "data": s.data.model_dump(mode="json", exclude={"train", "validation"})})
    flat["data.sources"] = len(s.data.train)
    return flat


def actual_params(ctx: StageContext, manifest: dict, summary: dict) -> dict:
    """What really ran, read back from the artifacts rather than from the spec."""
    train = ctx.run_dir / "train"
    actual: dict = {}
    if manifest:
        actual["data.sample_ratio"] = manifest.get("actual_sample_ratio")
        if manifest.get("limited"):
            # data.limit set the size: the plan was limit rows; sample_ratio was the ceiling, not the plan
            plan_followed = manifest.get("train_rows") == manifest.get("planned_train_rows")
            actual["data.sample_ratio"] = ctx.spec.data.sample_ratio if plan_followed else manifest.get("actual_sample_ratio")
            actual["data.limit"] = manifest.get("train_rows")
        actual["data.sources"] = len(manifest.get("sources", []))
    adapter = _json(train / "final" / "adapter_config.json")
    if adapter:
        actual["method.lora.r"] = adapter.get("r")
        actual["method.lora.alpha"] = adapter.get("lora_alpha")
        actual["method.lora.dropout"] = adapter.get("lora_dropout")
    state = _latest_trainer_state(train)
    if state:
        actual["method.batch_size"] = state.get("train_batch_size")
        actual["method.save_every"] = state.get("save_steps")
        actual["method.log_every"] = state.get("logging_steps")
    if summary:
        actual["method.max_steps"] = summary.get("max_steps")
        actual["steps"] = summary.get("actual_steps")
        actual["epochs_run"] = summary.get("epochs_run")  # beside the planned method.epochs (max_steps may cut it)
        prec = summary.get("precision") or {}  # as trained (runtime/trainer_args.actual_precision), not as asked
        for k in ("device", "weights_dtype", "autocast"):
            if k in prec:
                actual[f"precision.{k}"] = prec[k]
        if "gradient_checkpointing" in prec:
            actual["method.gradient_checkpointing"] = prec["gradient_checkpointing"]
        if summary.get("loss_tokens"):
            actual["loss_tokens"] = summary["loss_tokens"]
        if summary.get("world_size"):  # the global batch: processes x batch_size x grad_accum (resources:)
            actual["processes"] = summary["world_size"]
            actual["effective_batch"] = summary.get("effective_batch")
    return actual


def _latest_trainer_state(train: Path) -> dict | None:
    ckpts = sorted(train.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    return _json(ckpts[-1]) if ckpts else None


def _cells(folder: Path) -> list[dict]:
    return [c for p in sorted(folder.glob("*/*.json")) if (c := _json(p))] if folder.exists() else []


def environment(ctx: StageContext) -> dict:
    """What could explain a different number elsewhere: versions, threads, device, the project commit and
    which tracked files differed from it (the spec's own hash is the record's spec_sha256)."""
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg.replace("_", "-") if pkg == "lm_eval" else pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    commit, dirty, changed = _git_state(ctx.root)
    eval_summary = _json(ctx.run_dir / "eval" / "summary.json", {})
    train_summary = _json(ctx.run_dir / "train" / "summary.json", {})
    return {"python": platform.python_version(), "platform": platform.platform(terse=True), "packages": versions,
            "torch_threads": eval_summary.get("torch_threads") or train_summary.get("torch_threads"),
            "thread_settings": {k: os.environ[k] for k in THREAD_VARS if k in os.environ}, "cpu_count": os.cpu_count(),
            "device": eval_summary.get("device") or ("cuda" if _cuda() else "cpu"),
            "git_commit": commit, "specs_dirty": dirty, "uncommitted": changed, **_builtin_build(ctx), **_slurm_jobs(ctx)}


def _slurm_jobs(ctx: StageContext) -> dict:
    """The SLURM attempts of this experiment's stages and its baseline (runtime/slurm.py), if any ran."""
    from tunebook.runtime.slurm import read_attempts

    names = [f"{k}-{ctx.name}" for k in ("data", "teacher", "train", "eval")] + [f"baseline-{ctx.params.get('baseline')}"]
    jobs = {n: a for n in names if (a := read_attempts(ctx.root, n))}
    return {"slurm_jobs": jobs} if jobs else {}


def _builtin_build(ctx: StageContext) -> dict:
    """For a builtin model, how it was pre-trained (threads, torch, weights hash, match with the
    reference build): the facts that decide whether this run's figures can match the README's."""
    base = ctx.spec.model.base
    if not base.startswith("builtin:"):
        return {}
    return {"builtin_build": _json(ctx.root / "models" / base[len("builtin:"):] / "pretrain_summary.json", None)}


def _git_state(root: Path) -> tuple[str | None, bool | None, list[str] | None]:
    """(HEAD, specs/ differs from it (new spec files included), tracked files that differ from it: at
    most 20, dvc.lock left out since DVC rewrites it during every run)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout

    try:
        commit = git("rev-parse", "HEAD").strip() or None
        if commit is None:
            return None, None, None
        changed = [ln[3:] for ln in git("status", "--porcelain", "--untracked-files=no").splitlines() if ln[3:] != "dvc.lock"]
        return commit, bool(git("status", "--porcelain", "--", "specs").strip()), changed[:20]
    except (OSError, subprocess.SubprocessError):
        return None, None, None


def _cuda() -> bool:
    return bool(os.environ.get("CUDA_VISIBLE_DEVICES")) and Path("/dev/nvidia0").exists()


def build_record(ctx: StageContext) -> Record:
    run, key = ctx.run_dir, ctx.params.get("baseline")
    manifest = _json(ctx.data_dir / "manifest.json", {})
    summary = _json(run / "train" / "summary.json", {})
    history = _json(run / "train" / "history.json", [])
    eval_summary = _json(run / "eval" / "summary.json", {})
    base_summary = _json(ctx.root / "runs" / "_baselines" / str(key) / "summary.json", {})

    cells = _cells(ctx.root / "runs" / "_baselines" / str(key)) + _cells(run / "eval")
    steps = {c["name"]: c["step"] for c in eval_summary.get("checkpoints", [])}
    metrics, samples = [], []
    for cell in cells:
        for m in cell.get("metrics", []):
            metrics.append({**m, "step": 0 if m["checkpoint"] == "base" else steps.get(m["checkpoint"])})
        samples += cell.get("samples", [])

    # Durations live beside the DVC outputs, not in them (see runtime/evaluate.write_timings); older
    # runs kept them inside the summaries, still read as a fallback.
    t = summary.get("timings", {})
    ev_t = _json(run / "timings" / "eval.json", None) or eval_summary.get("timings", {})
    base_t = _json(baseline_timings(ctx.root, str(key)), None) or base_summary.get("timings", {})
    timings = {
        "data": (_json(run / "timings" / "data.json", {}) or {}).get("data", manifest.get("seconds", 0.0)),
        "training": t.get("training", 0.0),
        "evaluation": ev_t.get("evaluation", 0.0) + base_t.get("evaluation", 0.0),
        "model_io": t.get("model_io", 0.0) + ev_t.get("model_io", 0.0) + base_t.get("model_io", 0.0),
    }
    sources = [{k: s.get(k) for k in ("source", "revision", "resolved_revision", "sha256", "split", "rows_read",
                                      "rows_used", "planned_weight", "actual_weight", "rejected", "pin", "dvc")
                if s.get(k) is not None} for s in manifest.get("sources", [])]
    data = {"sources": sources, "planned_sample_ratio": manifest.get("planned_sample_ratio"),
            "actual_sample_ratio": manifest.get("actual_sample_ratio"), "train_rows": manifest.get("train_rows"),
            "validation_rows": manifest.get("validation_rows"), "rejected_rows": manifest.get("rejected_rows", 0),
            "converted_rows": manifest.get("converted_rows", 0),
            "quarantine": f"data/{ctx.name}/quarantine.jsonl" if manifest.get("rejected_rows") else None,
            "type_census": manifest.get("type_census", {}), "contamination": manifest.get("contamination", {}),
            "sha256": manifest.get("sha256")} if manifest else None
    training = {"method": summary.get("method"), "planned_steps": summary.get("planned_steps"),
                "actual_steps": summary.get("actual_steps"), "max_steps": summary.get("max_steps"),
                "dry_run": bool(summary.get("dry_run")), "stopped_early": summary.get("stopped_early"),
                "history": history, "watchdog": summary.get("watchdog", []),
                "evaluated_during_training": bool(summary.get("evaluated_during_training"))} if summary else None
    checkpoints = [{"name": c["name"], "step": c["step"], "is_final": bool(c.get("is_final")),
                    "path": f"runs/{ctx.name}/train/{c['name']}", "sha256": c.get("weights_sha256")}
                   for c in eval_summary.get("checkpoints", [])]
    from tunebook.runtime.models import resolved_revision  # no torch: only hub metadata

    spec = ctx.spec
    status = "dry_run" if training and training["dry_run"] else "completed"
    rec = Record(
        experiment=ctx.name, title=spec.description or None, status=status,
        started=_mtime_iso(ctx.data_dir / "manifest.json"), finished=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        spec_file=ctx.params.get("spec"), spec_sha256=ctx.params.get("spec_sha256"),
        model={"base": spec.model.base, "revision": spec.model.revision, "resolved_revision": resolved_revision(spec.model),
               # a builtin model or a local folder is pinned by its weights hash; a hub id by its revision
               "sha256": base_summary.get("weights") if _local_model(ctx) else None,
               "trust_remote_code": spec.model.trust_remote_code, "trainable_params": summary.get("trainable_params")},
        planned=planned_params(ctx), actual=actual_params(ctx, manifest, summary),
        expect=spec.expect.model_dump(mode="json"), data=data, training=training, checkpoints=checkpoints,
        metrics=metrics, samples=samples, timings={k: round(v, 2) for k, v in timings.items()},
        environment=environment(ctx),
    )
    return rec


def _local_model(ctx: StageContext) -> bool:
    base = ctx.spec.model.base
    return base.startswith("builtin:") or (ctx.root / base).is_dir()


def _mtime_iso(path: Path) -> str | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except FileNotFoundError:
        return None


def final_metrics(rec: Record) -> dict:
    """{suite: {task.metric: value}} of the final checkpoint and the baseline, for dvc exp show."""
    final = next((c.name for c in rec.checkpoints if c.is_final), None)
    out: dict = {}
    for m in rec.metrics:
        if m.checkpoint in ("base", final):
            side = "final" if m.checkpoint == final else "base"
            out.setdefault(side, {}).setdefault(m.suite, {})[f"{m.task}.{m.metric}"] = round(m.value, 6)
    return out


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def run(ctx: StageContext) -> None:
    from tunebook.reports.render import write_report
    from tunebook.reports.variants import remember_run

    rec = build_record(ctx)
    record_path = ctx.run_dir / "record.json"
    text = dump_record(rec)
    write_atomic(record_path, text)
    # a git-ignored copy by params: `dvc exp run` replaces this record in the workspace, and when it was
    # never committed, the review still finds the variants' parent here (reports/variants.py)
    remember_run(ctx.root, ctx.name, ctx.params, text)
    write_atomic(ctx.run_dir / "metrics.json", json.dumps(final_metrics(rec), indent=1, sort_keys=True) + "\n")
    out = ctx.root / "logs" / f"{ctx.name}.md"
    write_report(record_path, out)
    print(f"[report {ctx.name}] wrote runs/{ctx.name}/record.json and logs/{ctx.name}.md", flush=True)
