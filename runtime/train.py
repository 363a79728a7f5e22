"""The train stage: whatever the spec's `method.kind`, one run folder, resume, logging and summary.

    tunebook run train <exp>       # what the `train-<exp>` DVC stage runs

The method (SFT, GRPO, DPO, teacher-SFT: runtime/methods/, one module each) is looked up by kind in
the registry; it says where its rows come from and what shape they have, and builds the trl trainer
(LoRA through peft unless `lora: null`). Everything else is this stage's, the same for every method.

Writes `runs/<exp>/train/`: trainer checkpoints (`checkpoint-<step>/` with optimizer state, so a
killed run resumes without redoing finished steps), `final/` (the model the run delivers: the last
step, the best early-stopping checkpoint, or the last good one when the watchdog stopped the run),
`history.json` (every logged step, rewritten as the run goes), `summary.json` (planned vs actual
steps, dry run, why it stopped, watchdog findings, timings, and what really ran: the effective
training arguments, the loaded model's commit or weights digest, precision and threads), `dvclive/`
(for `dvc plots show`) and `fingerprint.json`.

The folder belongs to one set of params (model, method, training data, and what early stopping
measures). A run from other params is never resumed into and never deleted: it is moved to the shelf
`runs/<exp>/train.shelf/<fingerprint>/`, and comes back from there when its params come back. So a
short dry run (`max_steps`, seed 002) can never overwrite a full run. `max_steps` is a run length, as
in Hugging Face trainers; only when it ends training before the spec's `epochs` are done is the run
marked as shortened (`dry_run` in `summary.json` and the record), and the report says so once.

Imported by the train stage only: transformers and trl (through runtime/methods/) are imported at
module level (`compile`, `report` and `review` never import this module).
"""

from __future__ import annotations

import math
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from huggingface_hub import try_to_load_from_cache
from transformers import TrainerCallback, TrainerState

from tunebook.compiler.errors import SpecError, SpecIssue
from tunebook.runtime.progress import Progress
from tunebook.files import dict_sha256, file_sha256, read_json, read_jsonl, write_json_atomic
from tunebook.runtime import walltime
from tunebook.runtime import plugins
from tunebook.runtime.context import THREAD_VARS, StageContext
from tunebook.runtime.contracts import History, TrainSummary
from tunebook.runtime.durable import seal_callback, usable, weights_problem
from tunebook.runtime.methods import method_for
from tunebook.runtime.methods.lm_head import score_labelled_positions_only
from tunebook.runtime.models import device, is_adapter, load_model, load_tokenizer, model_fingerprint, model_path
from tunebook.runtime.trainer_args import actual_precision, portable_adapter_config, training_args
from tunebook.runtime.watchdog import WatchdogCallback, greedy_sampler


# ---------------------------------------------------------------------------------------------------
# which run this is


def fingerprint(ctx: StageContext) -> str:
    """What determines the training run: model, method, the exact training rows, and the suite that
    early stopping measures (it picks the delivered checkpoint) and the resources (they set the
    effective batch)."""
    s = ctx.spec
    ident = {"model": s.model.model_dump(mode="json"), "method": s.method.model_dump(mode="json"),
             "data": file_sha256(method_for(s.method.kind).rows_file(ctx))}
    if s.method.early_stopping and s.method.early_stopping.on == "general":
        ident["early_stopping_suite"] = s.eval.general.model_dump(mode="json") if s.eval.general else None
    if s.resources:
        ident["resources"] = s.resources.model_dump(mode="json")
    if is_adapter(model_path(ctx.root, s.model)[0]):  # another run's adapter: retrained, it is another start
        ident["model_weights"] = model_fingerprint(ctx.root, s.model)
    if s.method.grpo:  # an edited plugin reward is another objective: a new run, not the old one resumed
        ident.update(plugins.code(s.method.grpo.rewards, s.method.grpo.extract, s.method.grpo.answer_transform))
    return dict_sha256(ident)


def prepare_out_dir(out: Path, fp: str) -> str:
    """Make `out` the folder of the run with fingerprint `fp`, shelving whatever else is there.

    Returns what happened: "continued" (same params: resume), "restored" (brought back from the
    shelf) or "new".
    """
    shelf = out.with_name(f"{out.name}.shelf")
    current = (read_json(out / "fingerprint.json") or {}).get("fingerprint")
    if current == fp:
        return "continued"
    if out.exists() and any(out.iterdir()):
        name = (current or "unknown")[:16]
        dest = shelf / name
        if dest.exists():  # never overwrite a shelved run: keep both
            dest = shelf / f"{name}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
        shelf.mkdir(parents=True, exist_ok=True)
        out.rename(dest)
        print(f"[train] the run from other params was moved to {dest.relative_to(out.parents[2])}/ (kept, not resumed)", flush=True)
    elif out.exists():
        out.rmdir()
    stored = shelf / fp[:16]
    if stored.is_dir() and (read_json(stored / "fingerprint.json") or {}).get("fingerprint") == fp:
        stored.rename(out)
        print(f"[train] these params ran before: restored {out.name}/ from the shelf", flush=True)
        return "restored"
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "fingerprint.json", {"fingerprint": fp})
    return "new"


def shelved_runs(out: Path) -> list[dict]:
    """Runs from other params kept beside this one, for the summary (so a report can say so)."""
    found = []
    for d in sorted(out.with_name(f"{out.name}.shelf").glob("*/")):
        s = read_json(d / "summary.json") or {}
        found.append({"path": str(d.relative_to(out.parents[2])), "dry_run": s.get("dry_run"),
                      "actual_steps": s.get("actual_steps"), "complete": bool(s)})
    return found


def step_of(ckpt: Path) -> int:
    return int(ckpt.name.split("-")[1])


def checkpoints(out: Path) -> list[Path]:
    """Complete checkpoints, by step. The trainer writes trainer_state.json last, so a checkpoint
    whose state file is missing or unreadable was cut short by a kill and is ignored."""
    ok = [p for p in out.glob("checkpoint-*") if read_json(p / "trainer_state.json") is not None]
    return sorted(ok, key=step_of)


def last_checkpoint(out: Path, say=print) -> Path | None:
    """The checkpoint to resume from: the last one whose files are whole (runtime/durable.py); one with
    truncated or missing weights is skipped with a message, so the run falls back to the one before."""
    found = usable(checkpoints(out), say)
    return found[-1] if found else None


def finished_run(out: Path, resume: Path | None) -> dict | None:
    """The summary of the run in `out` when it already finished, else None.

    Finished: summary.json (written last) names a delivered final/, final/ is whole, and the last
    whole checkpoint is the last step it ran, or, for a run the watchdog stopped, the last good one it
    delivered (the later ones were set aside: resumed, the same seed would walk into the same failure).
    The train stage then has nothing to redo. It must not hand such a folder to the trainer:
    transformers 5 resumed at a `max_steps` already reached runs one more step each time (a dry run
    brought back from the shelf grew 3 -> 4 -> 5 steps)."""
    s = read_json(out / "summary.json")
    if not s or not s.get("final") or resume is None:
        return None
    ran_to_the_end = s.get("actual_steps") == step_of(resume)
    stopped_here = bool(s.get("watchdog")) and s["final"].get("step") == step_of(resume)
    if not (ran_to_the_end or stopped_here):
        return None
    return s if weights_problem(out / "final") is None else None


# ---------------------------------------------------------------------------------------------------
# what the run logs


def files_only_live(path: Path):
    """A dvclive logger that only writes its files (one .tsv per metric, metrics.json): no dvc.yaml
    rewrite, no auto-committed experiment, no html report (see FIELD-NOTES). Its repository hook is
    skipped too: it raises in a git repo with no commit yet (scmrepo's "Empty git repo"), runs
    `dvc init` in a git repo without DVC, and serves only the features switched off here; the plots
    are declared by the compiler in dvc.yaml."""
    from dvclive import Live

    class FilesOnlyLive(Live):
        def _init_dvc(self):
            self._dvc_file = "dvc.yaml"  # what dvclive sets when dvcyaml is None; never written

    return FilesOnlyLive(dir=str(path), resume=False, save_dvc_exp=False, dvcyaml=None, report=None)


class RunLog:
    """Every logged step, in memory, in `history.json` (rewritten at each log, so a killed run keeps
    what it logged) and in `dvclive/` (one .tsv per metric, for `dvc plots show`).

    On resume, steps after the resumed checkpoint are dropped (they are about to be redone) and
    dvclive is rebuilt from the history, so its x axis is always the optimizer step.
    """

    def __init__(self, out: Path, resume_step: int | None, writes: bool = True):
        self.path, self.writes = out / "history.json", writes
        before = read_json(self.path, []) if resume_step is not None else []
        self.history: list[dict] = [h for h in before if h["step"] <= resume_step] if resume_step is not None else []
        # trl counts num_tokens from zero again in a resumed run: continue from what the history had
        self.tokens_before = next((h["values"]["num_tokens"] for h in reversed(self.history) if "num_tokens" in h["values"]), 0.0)
        self.live = None
        if writes:
            self.live = files_only_live(out / "dvclive")
            for h in self.history:
                self._live(h["step"], h["values"])
            self._flush()

    def _live(self, step: int, values: dict) -> None:
        self.live.step = step
        for k, v in values.items():
            self.live.log_metric(k, v)

    def _flush(self) -> None:
        History.write(self.path, self.history)
        self.live.make_summary()

    def add(self, step: int, values: dict) -> None:
        values = {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                  and math.isfinite(v)}  # non-finite values are the watchdog's evidence, not plot points
        if not values:
            return
        if "num_tokens" in values:
            values["num_tokens"] += self.tokens_before
        if self.history and self.history[-1]["step"] == step:
            self.history[-1]["values"].update(values)
        else:
            self.history.append({"step": step, "values": values})
        if self.writes:
            self._live(step, values)
            self._flush()


class LogCallback(TrainerCallback):
    """Trainer logs -> RunLog, plus a progress line with time left."""

    def __init__(self, runlog: RunLog, label: str):
        self.runlog, self.label, self.progress = runlog, label, None

    def on_train_begin(self, args, state, control, **kw):
        self.progress = Progress(self.label, state.max_steps, "steps")

    def on_log(self, args, state, control, logs=None, **kw):
        if not state.is_world_process_zero or not logs:
            return
        self.runlog.add(state.global_step, logs)
        loss = logs.get("loss")
        if self.progress and isinstance(loss, (int, float)):
            self.progress.update(state.global_step, f"loss {loss:.4f}")


class Clock(TrainerCallback):
    """Seconds spent writing checkpoints (model I/O, reported apart from training). Goes last, so
    the save it times is the one every other callback agreed to."""

    def __init__(self):
        self.saving, self._t = 0.0, None

    def on_step_end(self, args, state, control, **kw):
        self._t = time.perf_counter() if control.should_save else None

    def on_save(self, args, state, control, **kw):
        if self._t is not None:
            self.saving += time.perf_counter() - self._t
            self._t = None


class Segments(TrainerCallback):
    """Training seconds across a killed-and-resumed run, kept in `segments.json`: each run segment
    notes, at every save, the step and its training seconds so far (checkpoint writing and early-
    stopping evaluation left out). A resume keeps, of each earlier segment, its last save at or before
    the checkpoint resumed from, so steps/s, duration and loss cover the steps the delivered model took,
    not just the last segment's."""

    def __init__(self, out: Path, resume_step: int | None, clock: Clock, early=None, writes: bool = True):
        self.path, self.clock, self.early, self.writes = out / "segments.json", clock, early, writes
        self.start_step, self._t0 = resume_step or 0, None
        before = read_json(self.path, []) if resume_step is not None else []
        self.before = []
        for seg in before:
            saves = [sv for sv in seg.get("saves", []) if sv[0] <= self.start_step]
            if saves and seg["from"] < self.start_step:
                self.before.append({"from": seg["from"], "to": saves[-1][0], "seconds": saves[-1][1], "saves": saves})
        self.current = {"from": self.start_step, "to": self.start_step, "seconds": 0.0, "saves": []}

    def on_train_begin(self, args, state, control, **kw):
        self._t0 = time.perf_counter()

    def seconds(self) -> float:
        """This segment's training seconds so far."""
        spent = self.clock.saving + (self.early.seconds if self.early else 0.0)
        return max(time.perf_counter() - self._t0 - spent, 0.0) if self._t0 is not None else 0.0

    def on_save(self, args, state, control, **kw):
        self.current["saves"].append([int(state.global_step), round(self.seconds(), 2)])
        if self.writes:
            write_json_atomic(self.path, [*self.before, self.current])

    def finish(self, step: int, training_s: float) -> list[dict]:
        self.current.update({"to": step, "seconds": round(training_s, 2)})
        ran = [self.current] if step > self.current["from"] else []  # a call that trained no step adds none
        return [{k: seg[k] for k in ("from", "to", "seconds")} for seg in (*self.before, *ran)]


def resumed_train_loss(history: list[dict], resume_step: int, segment_loss: float | None, step: int) -> float | None:
    """Mean loss over all `step` steps of a resumed run: the history's logged losses up to the resume
    (each weighted by the steps since the log before it) plus this segment's mean over its steps
    (transformers averages over the current segment only)."""
    if segment_loss is None or step <= 0:
        return segment_loss
    total, last = 0.0, 0
    for h in history:
        if h["step"] > resume_step:
            break
        if "loss" in h["values"]:
            total += h["values"]["loss"] * (h["step"] - last)
            last = h["step"]
    if last == 0:
        return segment_loss
    return (total + segment_loss * (step - resume_step)) / (last + step - resume_step)


# ---------------------------------------------------------------------------------------------------
# early stopping on a score measured during training


class EarlyStopping(TrainerCallback):
    """Every `every` steps: measure, save a checkpoint, remember the best; stop after `patience`
    measurements without improvement. The train stage then delivers the best checkpoint.

    `measure(model, tokenizer, step) -> float`. Measurements go into the history as
    `early_stopping/score`, which is also how a resumed run recovers its best and its patience.
    """

    def __init__(self, es, measure, higher_is_better: bool, runlog: RunLog, what: str):
        self.es, self.measure, self.higher, self.runlog, self.what = es, measure, higher_is_better, runlog, what
        self.best: float | None = None
        self.best_step: int | None = None
        self.bad = 0
        self.seconds = 0.0
        self.stopped: str | None = None

    def _update(self, step: int, score: float) -> None:
        better = self.best is None or (score > self.best + self.es.min_delta if self.higher else score < self.best - self.es.min_delta)
        if better:
            self.best, self.best_step, self.bad = score, step, 0
        else:
            self.bad += 1
        if self.bad >= self.es.patience:
            self.stopped = (f"early stopping: {self.what} did not improve for {self.bad} measurements "
                            f"(every {self.es.every} steps); best {self.best:.4g} at step {self.best_step}")

    def on_train_begin(self, args, state, control, **kw):
        for h in self.runlog.history:  # a resumed run: replay what was measured before the kill
            if "early_stopping/score" in h["values"]:
                self._update(h["step"], h["values"]["early_stopping/score"])
        if self.stopped:
            control.should_training_stop = True

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kw):
        step = state.global_step
        if step % self.es.every or self.stopped:
            return
        t0 = time.perf_counter()
        was_training = model.training
        model.eval()
        try:
            score = float(self.measure(model, processing_class, step))
        finally:
            model.train(was_training)
        self.seconds += time.perf_counter() - t0
        self._update(step, score)
        if state.is_world_process_zero:
            self.runlog.add(step, {"early_stopping/score": score, "early_stopping/best": self.best})
            print(f"[early stopping] step {step}: {self.what} {score:.4g} (best {self.best:.4g} at step {self.best_step}"
                  f"{f', {self.bad}/{self.es.patience} without improvement' if self.bad else ''})", flush=True)
        control.should_save = True  # the best checkpoint must exist to be delivered
        if self.stopped:
            control.should_training_stop = True


def early_stopping_measure(ctx: StageContext):
    """(measure, higher_is_better, description) for the spec's early_stopping, built from the eval
    stage's own functions so a score during training means what it means in the report."""
    from tunebook.runtime.suites.general import eval_general, task_manager  # only early stopping measures with the eval suites
    from tunebook.runtime.suites.heldout import eval_loss  # the same loss the eval stage records

    es, s = ctx.spec.method.early_stopping, ctx.spec
    if es.on == "loss":
        path = ctx.data_dir / "validation.jsonl"
        rows = read_jsonl(path) if path.exists() else []
        rows = [r for r in rows if "completion" in r or "messages" in r][: es.limit]
        if not rows:
            raise SpecError([SpecIssue("params.yaml", f"{ctx.name}.method.early_stopping.on",
                                       "early stopping on loss needs data.validation with prompt/completion or messages rows")])

        def loss(model, tok, step):
            return eval_loss(model, tok, rows, s.method.max_seq_length, f"checkpoint-{step}")["metrics"][0]["value"]

        return loss, False, f"held-out loss ({len(rows)} rows)"
    if s.eval.general is None:
        raise SpecError([SpecIssue("params.yaml", f"{ctx.name}.method.early_stopping.on",
                                   "early stopping on 'general' needs eval.general (the suite it measures a subset of)")])
    general = s.eval.general.model_copy(update={"limit": es.limit})
    tm = task_manager(ctx.root, general)  # fails on unknown tasks before training starts

    def general_score(model, tok, step):
        side = tok.padding_side
        try:
            res = eval_general(model, tok, general, tm, f"checkpoint-{step}")
        finally:
            tok.padding_side = side
        vals = [m["value"] for m in res["metrics"] if m["metric"] == es.metric]
        if not vals:
            have = sorted({m["metric"] for m in res["metrics"]})
            raise SpecError([SpecIssue("params.yaml", f"{ctx.name}.method.early_stopping.metric",
                                       f"no metric '{es.metric}' in eval.general results; available: {', '.join(have)}")])
        return sum(vals) / len(vals)

    return general_score, True, f"general {es.metric} ({', '.join(general.tasks)}, limit {es.limit})"


# ---------------------------------------------------------------------------------------------------
# trainers


def build_trainer(ctx: StageContext, out: Path, rows: list[dict], model, tok, callbacks: list, watchdog):
    """The spec's method builds its trl trainer (runtime/methods/); bench/bench_gpu.py wraps this."""
    score_labelled_positions_only()  # trl's fused LM head, CPU/MPS: only the positions that carry loss
    return method_for(ctx.spec.method.kind).build(ctx, out, rows, model, tok, callbacks, watchdog)


# ---------------------------------------------------------------------------------------------------
# the stage


def run(ctx: StageContext) -> None:
    import datasets
    from accelerate import PartialState
    from transformers.trainer_callback import PrinterCallback

    t0 = time.time()
    datasets.disable_progress_bars()  # trl's per-map bars; LogCallback prints progress
    m, out = ctx.spec.method, ctx.run_dir / "train"
    method = method_for(m.kind)
    method.preflight(ctx)
    rows_file = method.rows_file(ctx)
    if not rows_file.exists():
        raise FileNotFoundError(f"{rows_file} is missing: run `dvc repro {method.rows_stage}-{ctx.name}` first")
    # one process, or one of the launcher's: on CPU only `cpu=True` lets accelerate see the gloo ranks (without
    # it every rank took itself for the only one, and both shelved each other's run folder)
    dist = PartialState(cpu=device() == "cpu")
    main = dist.is_main_process
    with dist.main_process_first():
        how = prepare_out_dir(out, fingerprint(ctx)) if main else "continued"
    rows = read_jsonl(rows_file)
    method.check_rows(ctx, rows, rows_file)
    resume = last_checkpoint(out)
    if (done := finished_run(out, resume)) is not None:
        if main:  # how the folder came to be here, and what is shelved beside it, are this call's
            TrainSummary.write(out / "summary.json", {**done, "outputs": how, "resumed_from": resume.name, "shelf": shelved_runs(out)})
        why = f", stopped: {done['stopped_early']}" if done.get("stopped_early") else ""
        print(f"[train {ctx.name}] this run already finished: {done['actual_steps']} steps{why}, final/ is step "
              f"{done['final']['step']} (runs/{ctx.name}/train/summary.json); nothing to redo. Next: eval-{ctx.name}", flush=True)
        return
    if resume:
        print(f"[train {ctx.name}] resuming from {resume.name} (finished steps are not redone)", flush=True)

    runlog = RunLog(out, step_of(resume) if resume else None, writes=main)
    sampler = None
    if not method.samples_itself:  # GRPO hands the watchdog the completions it samples anyway
        sampler = greedy_sampler(rows[: m.watchdog.num_samples], m.watchdog.max_new_tokens)
    watchdog = WatchdogCallback(m.watchdog, m.kind, sampler)
    early = None
    if m.early_stopping:
        measure, higher, what = early_stopping_measure(ctx)
        early = EarlyStopping(m.early_stopping, measure, higher, runlog, what)
    clock = Clock()
    segments = Segments(out, step_of(resume) if resume else None, clock, early, writes=main)
    # each save fsynced and sealed (runtime/durable.py): a checkpoint is whole or not used
    callbacks = [LogCallback(runlog, f"train {ctx.name}")] + ([early] if early else []) + [watchdog, segments, seal_callback(), clock]
    if os.environ.get("TUNEBOOK_JOB") == "1":  # a SLURM job: checkpoint and exit at the walltime warning
        callbacks.insert(-1, walltime.callback())

    res = ctx.spec.resources  # one process too: the spec's autocast reaches the trainer as accelerate's would
    if res is not None and res.mixed_precision != "no":
        os.environ.setdefault("ACCELERATE_MIXED_PRECISION", res.mixed_precision)
    t_io = time.time()
    tok = load_tokenizer(ctx.root, ctx.spec.model)
    model = load_model(ctx.root, ctx.spec.model)
    loaded = model_provenance(ctx, model)  # recorded here, where the weights were loaded
    io_s = time.time() - t_io
    torch.manual_seed(m.seed)
    trainer = build_trainer(ctx, out, rows, model, tok, callbacks, watchdog)
    portable_adapter_config(trainer.model, ctx.spec.model)
    trainer.remove_callback(PrinterCallback)  # LogCallback prints shorter lines

    t_train = time.time()
    if resume is not None and m.max_steps is not None and step_of(resume) >= m.max_steps:
        # the steps are done (a final/ was lost): deliver the checkpoint; transformers would run one more step
        trainer.state = TrainerState.load_from_json(str(resume / "trainer_state.json"))
        trainer._load_from_checkpoint(str(resume))
        result = None
    else:
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    train_wall = time.time() - t_train
    step = int(trainer.state.global_step)

    # What the run delivers as final/.
    delivered, stopped, discarded = None, None, []
    if watchdog.fired:
        first = watchdog.events[0]
        stopped = f"watchdog: {first['rule']} at step {first['step']}"
        if main:
            discarded = _discard_after(out, watchdog.trusted_step)
        dist.wait_for_everyone()
        good = [c for c in checkpoints(out) if step_of(c) <= watchdog.trusted_step]
        delivered = good[-1] if good else None
        if delivered is None:
            summary = _summary(ctx, trainer, result, final=None, resume=resume, how=how, early=early, stopped=stopped,
                               watchdog=watchdog, discarded=discarded, timings={"training": round(train_wall, 2)}, loaded=loaded)
            if main:
                TrainSummary.write(out / "summary.json", summary)
            raise RuntimeError(f"{stopped}: {first['message']}. No checkpoint was saved before it, so there is no "
                               f"good model to keep; lower method.save_every (or fix the cause) and rerun. "
                               f"Diagnosis in runs/{ctx.name}/train/summary.json")
    elif early and early.best_step is not None:
        stopped = early.stopped
        delivered = out / f"checkpoint-{early.best_step}"
    t_io = time.time()
    if delivered is not None:
        trainer._load_from_checkpoint(str(delivered))  # the trainer's own loader: adapters or full weights
        print(f"[train {ctx.name}] final/ is {delivered.name} ({'last good' if watchdog.fired else 'best'} checkpoint)", flush=True)
    trainer.save_model(str(out / "final"))
    if main:
        tok.save_pretrained(str(out / "final"))
    io_s += time.time() - t_io + clock.saving
    eval_s = early.seconds if early else 0.0
    this_run = train_wall - eval_s - clock.saving
    segs = segments.finish(step, this_run)
    # training covers every kept segment of a resumed run (Segments); total is this process's wall time
    timings = {"training": round(sum(sg["seconds"] for sg in segs), 2), "evaluation": round(eval_s, 2),
               "model_io": round(io_s, 2), "total": round(time.time() - t0, 2)}
    final = {"name": "final", "step": step_of(delivered) if delivered is not None else step}
    summary = _summary(ctx, trainer, result, final=final, resume=resume, how=how, early=early, stopped=stopped,
                       watchdog=watchdog, discarded=discarded, timings=timings, loaded=loaded)
    summary["segments"] = segs
    if resume and (summary["train_loss"] is not None or result is None):
        summary["train_loss"] = resumed_train_loss(runlog.history, step_of(resume), summary["train_loss"] or 0.0, step)
    if main:
        TrainSummary.write(out / "summary.json", summary)
    dry = (f" max_steps={m.max_steps} ended training after {summary['epochs_run']:g} of {m.epochs:g} planned epoch(s) "
           f"({summary['epoch_steps']} steps); the record and the report say so." if summary["dry_run"] else "")
    why = f" Stopped: {stopped}." if stopped else ""
    loss = f", train loss {summary['train_loss']:.4f}" if summary["train_loss"] is not None else ""
    print(f"[train {ctx.name}] {step}/{summary['planned_steps']} steps in {train_wall:.1f}s{loss}.{why}{dry} "
          f"Next: eval-{ctx.name}", flush=True)


def _discard_after(out: Path, trusted_step: int) -> list[str]:
    """Checkpoints after the last step the watchdog vouched for are not trusted: move them out of the
    way (never delete), so neither the eval stage nor a resume picks them up."""
    moved = []
    for c in checkpoints(out):
        if step_of(c) > trusted_step:
            dest = out / "discarded" / c.name
            if dest.exists():  # discarded before, by an earlier attempt of the same run: keep both
                dest = dest.with_name(f"{c.name}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}")
            dest.parent.mkdir(exist_ok=True)
            c.rename(dest)
            moved.append(c.name)
    return moved


def epoch_steps(trainer, epochs: float) -> int | None:
    """Optimizer steps `epochs` epochs take, counted as the trainer counts them without max_steps
    (its own dataloader, so GRPO's generation batches and DPO's pairs count right)."""
    try:
        batches = len(trainer.get_train_dataloader())
    except TypeError:  # an iterable dataset has no length
        return None
    accum = trainer.args.gradient_accumulation_steps
    return math.ceil(epochs * max(batches // accum + int(batches % accum > 0), 1))


def loss_tokens(dataset) -> dict | None:
    """{trained, total}: the tokens that carry loss after trl's preparation (truncation included). On
    chat rows only the assistant's answers should (runtime/chat.py); the record shows the share."""
    try:
        labels = dataset["labels"]
    except (KeyError, TypeError, ValueError):
        return None  # GRPO/DPO build their own batches
    return {"trained": sum(sum(x != -100 for x in row) for row in labels), "total": sum(len(row) for row in labels)}


def model_provenance(ctx: StageContext, model) -> dict:
    """Which weights the run started from, as loaded: for a hub model the commit they came from (the
    loaded config's, else the cached snapshot's folder name); for a local or builtin folder the sha256
    of its weight files (runtime/models.py `model_fingerprint`, as eval cells key them; an adapter folder: it and its base)."""
    spec = ctx.spec.model
    path, revision = model_path(ctx.root, spec)
    local = Path(path).is_dir()
    return {"base": spec.base, "revision": spec.revision, "commit": None if local else loaded_commit(path, revision, model),
            "weights_sha256": model_fingerprint(ctx.root, spec) if local else None}  # an adapter folder: it and its base


def loaded_commit(repo: str, revision: str | None, model) -> str | None:
    commit = getattr(model.config, "_commit_hash", None)
    if commit:
        return commit
    found = try_to_load_from_cache(repo, "config.json", revision=revision)
    return Path(found).parent.name if isinstance(found, str) else None  # .../snapshots/<commit>/config.json


def threads() -> dict:
    """The CPU threads this run trained with (they change results: runtime/stages.py `_cpu_threads`)."""
    return {"torch": torch.get_num_threads(), "env": {k: os.environ.get(k) for k in THREAD_VARS}}


def _summary(ctx, trainer, result, *, final, resume, how, early, stopped, watchdog, discarded, timings, loaded) -> dict:
    """summary.json: what the eval stage and the record read (final, checkpoints, dry run, why it
    stopped), and what really ran: the effective training arguments, the loaded model, the threads."""
    m, out = ctx.spec.method, ctx.run_dir / "train"
    for_epochs = epoch_steps(trainer, m.epochs)
    summary = {
        "method": m.kind,
        "planned_steps": int(trainer.state.max_steps),
        "actual_steps": int(trainer.state.global_step),
        "max_steps": m.max_steps,
        "epoch_steps": for_epochs,  # what `epochs` alone would have run
        "epochs_run": round(float(trainer.state.epoch or 0.0), 4),
        # max_steps is a run length; the run is shortened only when it came before the epochs were done
        "dry_run": bool(m.max_steps is not None and for_epochs and m.max_steps < for_epochs),
        "resumed_from": resume.name if resume else None,
        "outputs": how,
        "checkpoints": [{"name": c.name, "step": step_of(c)} for c in checkpoints(out)],
        "final": final,
        "train_loss": float(result.training_loss) if result and result.training_loss is not None and math.isfinite(result.training_loss) else None,
        "stopped_early": stopped,
        "watchdog": watchdog.events,
        "discarded_checkpoints": discarded,
        "evaluated_during_training": early is not None,
        "timings": timings,
        "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        # the global batch: processes x per-process batch x accumulation (resources: sets the processes)
        "world_size": int(trainer.args.world_size),
        "effective_batch": int(trainer.args.world_size * m.batch_size * m.grad_accum),
        "precision": actual_precision(trainer),
        "training_args": training_args(trainer),
        "model": loaded,
        "threads": threads(),
        "loss_tokens": loss_tokens(trainer.train_dataset),
        "shelf": shelved_runs(out),
    }
    if early is not None:
        summary["best_checkpoint"] = ({"name": f"checkpoint-{early.best_step}", "step": early.best_step, "score": early.best,
                                       "measured": early.what} if early.best_step is not None else None)
    summary.update(method_for(m.kind).summary(ctx))
    return summary
