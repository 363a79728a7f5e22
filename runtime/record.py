"""The report stage: gather what the other stages wrote into `runs/<exp>/record.json`, then render
`logs/<exp>.md` with the `reports` package.

    tunebook run report <exp>      # what the `report-<exp>` DVC stage runs

Every file another stage wrote is read through its contract (runtime/contracts.py): a file that does not
hold what its stage writes stops the report with the file and the field named. Facts are taken from the
stage where they happened (the trainer's effective arguments, device, threads and loaded commit from
train/summary.json), never re-derived here: this stage calls no hub and guesses nothing from the machine
that renders the report. No torch here. Also writes `runs/<exp>/metrics.json` (flat final metrics, for `dvc exp show` and
`tunebook review`); the per-checkpoint CSVs `dvc plots` reads are written with the log, in
`logs/plots/<exp>/` (reports/plots.py).
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from tunebook.compiler.compile import model_dir
from tunebook.compiler.schema import MethodSpec
from tunebook.files import read_json, write_atomic
from tunebook.reports.record import Record, dump_record
from tunebook.reports.render import write_report
from tunebook.reports.variants import remember_run
from tunebook.runtime.context import THREAD_VARS, StageContext
from tunebook.runtime.contracts import (BaselineSummary, DataManifest, DataTimings, EvalCell, EvalSummary, EvalTimings,
                                        History, TrainingArgs, TrainSummary, baseline_timings)
from tunebook.runtime.slurm import read_attempts

PACKAGES = ["tunebook", "torch", "transformers", "peft", "trl", "lm_eval", "datasets", "accelerate", "tokenizers",
            "safetensors", "numpy", "dvc", "dvclive"]
# Settings that change numbers between machines: the thread counts (runtime/context.py), and cuBLAS's
# workspace, which decides whether GPU matmuls are deterministic.
NUMERIC_VARS = (*THREAD_VARS, "CUBLAS_WORKSPACE_CONFIG")


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


def actual_params(ctx: StageContext, manifest: DataManifest | dict | None, summary: TrainSummary | dict | None) -> dict:
    """What really ran, read back from the artifacts rather than from the spec. `manifest` and `summary`
    are the data and train stages' files (as their contracts, or as the dicts they hold; empty: none)."""
    if isinstance(manifest, dict):
        manifest = DataManifest.validated(manifest, ctx.data_dir / "manifest.json") if manifest else None
    if isinstance(summary, dict):
        summary = TrainSummary.validated(summary, ctx.run_dir / "train" / "summary.json") if summary else None
    train = ctx.run_dir / "train"
    actual: dict = {}
    if manifest:
        actual["data.sample_ratio"] = manifest.actual_sample_ratio
        if manifest.limited:
            # data.limit set the size: the plan was limit rows; sample_ratio was the ceiling, not the plan
            plan_followed = manifest.train_rows == manifest.planned_train_rows
            actual["data.sample_ratio"] = ctx.spec.data.sample_ratio if plan_followed else manifest.actual_sample_ratio
            actual["data.limit"] = manifest.train_rows
        actual["data.sources"] = len(manifest.sources)
    adapter = read_json(train / "final" / "adapter_config.json")  # peft's file, not a tunebook contract
    if adapter:
        actual["method.lora.r"] = adapter.get("r")
        actual["method.lora.alpha"] = adapter.get("lora_alpha")
        actual["method.lora.dropout"] = adapter.get("lora_dropout")
    state = _latest_trainer_state(train)  # transformers' file
    if state:
        actual["method.batch_size"] = state.get("train_batch_size")
        actual["method.save_every"] = state.get("save_steps")
        actual["method.log_every"] = state.get("logging_steps")
    if summary:
        actual["method.max_steps"] = summary.max_steps
        actual["steps"] = summary.actual_steps
        actual["epochs_run"] = summary.epochs_run  # beside the planned method.epochs (max_steps may cut it)
        prec = summary.precision  # as trained (runtime/trainer_args.actual_precision), not as asked
        actual["precision.device"] = prec.device
        actual["precision.weights_dtype"] = prec.weights_dtype
        actual["precision.autocast"] = prec.autocast
        actual["method.gradient_checkpointing"] = prec.gradient_checkpointing
        if summary.loss_tokens:
            actual["loss_tokens"] = summary.loss_tokens.model_dump()
        if summary.world_size:  # the global batch: processes x batch_size x grad_accum (resources:)
            actual["processes"] = summary.world_size
            actual["effective_batch"] = summary.effective_batch
        if summary.training_args:
            actual.update(trainer_params(summary.training_args, ctx.spec.method, summary.planned_steps))
    return actual


def trainer_params(args: TrainingArgs, planned: MethodSpec, total_steps: int) -> dict:
    """The trainer's effective arguments under the spec's names (`method.lr`, ...), so the planned-vs-
    actual table and the config-drift rule see an overridden value (seed 000: a setting silently ignored)."""
    return {
        "method.lr": args.learning_rate,
        "method.batch_size": args.per_device_train_batch_size,
        "method.grad_accum": args.gradient_accumulation_steps,
        "method.epochs": args.num_train_epochs,
        # -1 is the trainer's "no cap", which is what a spec without max_steps plans
        "method.max_steps": None if args.max_steps == -1 and planned.max_steps is None else args.max_steps,
        "method.scheduler": args.lr_scheduler_type,
        "method.warmup_ratio": _warmup_ratio(args.warmup_steps, planned.warmup_ratio, total_steps),
        "method.weight_decay": args.weight_decay,
        "method.max_grad_norm": args.max_grad_norm,
        "method.seed": args.seed,
    }


def _warmup_ratio(steps: float, planned: float, total: int) -> float:
    """transformers 5 reads warmup_steps below 1 as a ratio of the total steps, else as a step count;
    a count equal to the planned ratio's (rounded up, as transformers does) followed the plan."""
    if steps < 1 or not total:
        return steps
    return planned if math.ceil(planned * total) == steps else steps / total


def _latest_trainer_state(train: Path) -> dict | None:
    ckpts = sorted(train.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    return read_json(ckpts[-1]) if ckpts else None


def _cells(folder: Path) -> list[EvalCell]:
    """The cells of `folder`, `<checkpoint>/<cell>.json`; `_cache/` holds the suites' caches and shelved cells."""
    paths = sorted(p for p in folder.glob("*/*.json") if not p.parent.name.startswith("_")) if folder.exists() else []
    return [c for p in paths if (c := EvalCell.read(p))]


def environment(ctx: StageContext, summary: TrainSummary | None, eval_summary: EvalSummary | None) -> dict:
    """What could explain a different number elsewhere: versions, threads, device, the project commit and
    which tracked files differed from it (the spec's own hash is the record's spec_sha256). The device
    and the threads are the train stage's (else the eval stage's), never the rendering machine's."""
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg.replace("_", "-") if pkg == "lm_eval" else pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    commit, dirty, changed = _git_state(ctx.root)
    threads = summary.threads if summary else None
    # a summary from before the train stage recorded its threads: the settings here, as records always had
    settings = ({k: v for k, v in threads.env.items() if v is not None} if threads else
                {k: os.environ[k] for k in NUMERIC_VARS if k in os.environ})
    return {"python": platform.python_version(), "platform": platform.platform(terse=True), "packages": versions,
            "torch_threads": threads.torch if threads else eval_summary.torch_threads if eval_summary else None,
            "thread_settings": settings, "cpu_count": os.cpu_count(),
            "device": summary.precision.device if summary else eval_summary.device if eval_summary else None,
            "git_commit": commit, "specs_dirty": dirty, "uncommitted": changed, **_builtin_build(ctx), **_slurm_jobs(ctx)}


def _slurm_jobs(ctx: StageContext) -> dict:
    """The SLURM attempts of this experiment's stages and its baseline (runtime/slurm.py), if any ran."""
    names = [f"{k}-{ctx.name}" for k in ("data", "teacher", "train", "eval")] + [f"baseline-{ctx.params.get('baseline')}"]
    jobs = {n: a for n in names if (a := read_attempts(ctx.root, n))}
    return {"slurm_jobs": jobs} if jobs else {}


def _builtin_build(ctx: StageContext) -> dict:
    """For a model the project builds (a builtin, or a local GGUF file converted), how it was built
    (threads, torch, weights hash, match with the reference build; the GGUF's sha256 and architecture):
    the facts that decide whether this run's figures can match another's."""
    folder = model_dir(ctx.spec.model.base)
    if folder is None:
        return {}
    return {"builtin_build": read_json(ctx.root / folder / "pretrain_summary.json", None)}


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


def build_record(ctx: StageContext) -> Record:
    """The record of `ctx`'s experiment, from the files the other stages wrote, each read through its
    contract (runtime/contracts.py): a file that does not hold what its stage writes is a ContractError
    naming the file and the field."""
    run, key = ctx.run_dir, str(ctx.params.get("baseline"))
    baseline = ctx.root / "runs" / "_baselines" / key
    manifest = DataManifest.read(ctx.data_dir / "manifest.json")
    summary = TrainSummary.read(run / "train" / "summary.json")
    history = History.read(run / "train" / "history.json")
    eval_summary = EvalSummary.read(run / "eval" / "summary.json")
    base_summary = BaselineSummary.read(baseline / "summary.json")

    steps = {c.name: c.step for c in eval_summary.checkpoints} if eval_summary else {}
    metrics, samples = [], []
    for cell in _cells(baseline) + _cells(run / "eval"):
        for m in cell.metrics:
            metrics.append(m.model_copy(update={"step": 0 if m.checkpoint == "base" else steps.get(m.checkpoint)}))
        samples += cell.samples

    # Durations live beside the DVC outputs, not in them (see runtime/evaluate.write_timings, runtime/contracts.py); older
    # runs kept them inside the summaries, still read as a fallback.
    data_t = DataTimings.read(run / "timings" / "data.json")
    ev_t = EvalTimings.read(run / "timings" / "eval.json") or (eval_summary.timings if eval_summary else None)
    base_t = EvalTimings.read(baseline_timings(ctx.root, key)) or (base_summary.timings if base_summary else None)
    timings = {
        "data": data_t.data if data_t else (manifest.seconds if manifest and manifest.seconds is not None else 0.0),
        "training": summary.timings.training if summary else 0.0,
        "evaluation": sum(t.evaluation for t in (ev_t, base_t) if t),
        "model_io": sum(t.model_io or 0.0 for t in (summary.timings if summary else None, ev_t, base_t) if t),
    }
    data = {"sources": [s.model_dump(include=RECORD_SOURCE_FIELDS, exclude_none=True) for s in manifest.sources],
            "planned_sample_ratio": manifest.planned_sample_ratio, "actual_sample_ratio": manifest.actual_sample_ratio,
            "train_rows": manifest.train_rows, "validation_rows": manifest.validation_rows,
            "rejected_rows": manifest.rejected_rows, "converted_rows": manifest.converted_rows,
            "quarantine": f"data/{ctx.name}/quarantine.jsonl" if manifest.rejected_rows else None,
            "type_census": manifest.type_census,
            "contamination": {k: c.model_dump(exclude_none=True) for k, c in manifest.contamination.items()},
            "sha256": manifest.sha256} if manifest else None
    training = {"method": summary.method, "planned_steps": summary.planned_steps, "actual_steps": summary.actual_steps,
                "max_steps": summary.max_steps, "dry_run": summary.dry_run, "stopped_early": summary.stopped_early,
                "history": history.root if history else [], "watchdog": summary.watchdog,
                "evaluated_during_training": summary.evaluated_during_training} if summary else None
    checkpoints = [{"name": c.name, "step": c.step, "is_final": c.is_final, "path": f"runs/{ctx.name}/train/{c.name}",
                    "sha256": c.weights_sha256} for c in (eval_summary.checkpoints if eval_summary else [])]

    spec = ctx.spec
    loaded = summary.model if summary else None  # the model as the train stage loaded it
    weights = loaded.weights_sha256 if loaded and loaded.weights_sha256 else None
    if weights is None and _local_model(ctx) and base_summary:
        weights = base_summary.weights  # a builtin model or a local folder is pinned by its weights hash
    status = "dry_run" if training and training["dry_run"] else "completed"
    rec = Record(
        experiment=ctx.name, title=spec.description or None, status=status,
        started=_mtime_iso(ctx.data_dir / "manifest.json"), finished=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        spec_file=ctx.params.get("spec"), spec_sha256=ctx.params.get("spec_sha256"),
        model={"base": spec.model.base, "revision": spec.model.revision,
               # the commit the train stage loaded; never resolved here (the report stage does not call the hub)
               "resolved_revision": loaded.commit if loaded else None, "sha256": weights,
               "trust_remote_code": spec.model.trust_remote_code,
               "trainable_params": summary.trainable_params if summary else None},
        planned=planned_params(ctx), actual=actual_params(ctx, manifest, summary),
        expect=spec.expect.model_dump(mode="json"), data=data, training=training, checkpoints=checkpoints,
        metrics=metrics, samples=samples, timings={k: round(v, 2) for k, v in timings.items()},
        environment=environment(ctx, summary, eval_summary),
    )
    return rec


# the manifest's source fields a record keeps (reports/record.SourceManifest)
RECORD_SOURCE_FIELDS = {"source", "revision", "resolved_revision", "sha256", "split", "rows_read", "rows_used",
                        "planned_weight", "actual_weight", "rejected", "pin", "dvc"}


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


def run(ctx: StageContext) -> None:
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
