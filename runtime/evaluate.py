"""The eval and baseline stages: the sweep over (checkpoint, cell) of the suites in runtime/suites/
(target tasks, the general suite through lm-eval, held-out loss or preference or reward, a reward model,
pairwise judges). This module knows no suite by name: each is a `Suite` in the registry.

    tunebook run baseline <key>    # the base model, once per (model, suite), shared by experiments
    tunebook run eval <exp>        # every selected checkpoint of <exp>

One result file per (checkpoint, suite cell) — a *cell*, `<out>/<checkpoint>/<cell>.json` — written
atomically and keyed by a fingerprint of the checkpoint's weights, the suite's settings and its inputs
(data, lm-eval version), so an interrupted sweep resumes where it stopped and never recomputes a
finished cell, while a changed setting never reuses a stale one. A checkpoint whose cells are all
finished is not even loaded. LoRA checkpoints share one loaded base model: adapters are swapped, not
reloaded. Suites cache what is costly below `<out>/_cache/` (reward scores, judge verdicts, generated
answers) so a cell interrupted halfway resumes too. A cell file about to be replaced by another result
(a 5-step dry run after the real run), or left from a checkpoint the current run does not have, is
moved to `<out>/_cache/cells/<fingerprint>.json` rather than lost, and comes back when its weights and
settings do: `<out>/<checkpoint>/` always holds exactly the current run's cells.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

from tunebook.compiler.errors import SpecError, SpecIssue
from tunebook.compiler.schema import EvalSpec, MethodSpec, ModelSpec, Spec
from tunebook.files import dict_sha256, read_jsonl
from tunebook.runtime import plugins
from tunebook.runtime.cells import EvalCellError, read_cell
from tunebook.runtime.context import StageContext, check_paths
from tunebook.runtime.contracts import BaselineSummary, EvalCell, EvalSummary, EvalTimings, baseline_timings
from tunebook.runtime.models import device, dir_digest, load_model, load_tokenizer, model_fingerprint
from tunebook.runtime.progress import Progress
from tunebook.runtime.suites import SUITES
from tunebook.runtime.suites.base import Setup


# ---------------------------------------------------------------------------------------------------
# models: the base, and each checkpoint in turn


class Models:
    """The model under evaluation. LoRA checkpoints are adapters on one loaded base model: when the
    next adapter has the same shape (config) as the loaded one, its weights are copied into the loaded
    adapter's tensors (milliseconds); otherwise it is injected anew and the old one deleted. Either
    way the base is never reloaded (bench/bench_sweep.py measures what that saves). Full checkpoints
    are loaded from disk."""

    def __init__(self, root: Path, spec: ModelSpec, lora: bool):
        t0 = time.time()
        self.root, self.spec, self.lora = root, spec, lora
        self.base = load_model(root, spec).to(device()).eval()
        self.tok = load_tokenizer(root, spec)
        self.model = self.base
        self.name = "base"
        self._layout = None  # (adapter name, {tensor: shape}) of the loaded LoRA adapter
        self.base_fp = model_fingerprint(root, spec)
        # what every prompt is asked through: a cell keyed by the weights alone would survive an edit of the
        # folder's chat template, and the report would show answers to prompts no longer asked
        template = getattr(self.tok, "chat_template", None)
        self.template_fp = dict_sha256({"chat_template": template}) if template else None
        self.io_s = time.time() - t0

    def load(self, path: Path, name: str) -> None:
        t0 = time.time()
        if not self.lora:
            self.model = load_model(self.root, self.spec.model_copy(update={"base": str(path)})).to(device())
        elif self.model is self.base:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.base, str(path), adapter_name=name)
        elif not self._copy_adapter(path):
            old = self.model.active_adapter
            self.model.load_adapter(str(path), adapter_name=name)
            self.model.set_adapter(name)
            self.model.delete_adapter(old)
        self.model.eval()
        self.name = name
        self.io_s += time.time() - t0

    def _copy_adapter(self, path: Path) -> bool:
        """Overwrite the loaded adapter's tensors with the checkpoint's, if it has the same config and
        exactly the same tensors (a partial copy would silently mix two checkpoints)."""
        from peft import PeftConfig
        from peft.utils import get_peft_model_state_dict, load_peft_weights, set_peft_model_state_dict

        def shape(cfg) -> dict:
            return {k: v for k, v in cfg.to_dict().items() if k not in ("base_model_name_or_path", "revision", "inference_mode")}

        active = self.model.active_adapter
        if shape(PeftConfig.from_pretrained(str(path))) != shape(self.model.peft_config[active]):
            return False
        weights = load_peft_weights(str(path), device=str(self.base.device))
        if self._layout is None or self._layout[0] != active:  # the loaded adapter's tensors, once per adapter
            self._layout = (active, {k: v.shape for k, v in get_peft_model_state_dict(self.model, adapter_name=active).items()})
        if {k: v.shape for k, v in weights.items()} != self._layout[1]:
            return False
        set_peft_model_state_dict(self.model, weights, adapter_name=active)
        return True

    @contextlib.contextmanager
    def base_view(self):
        """The base model, e.g. for the judges' reference answers. Adapters were injected into the
        base modules in place, so with LoRA the base is the adapter disabled, not `self.base`."""
        if self.model is not self.base and self.lora:
            with self.model.disable_adapter():
                yield self.model
        else:
            yield self.base


def check_checkpoint(path: Path, lora: bool, exp: str) -> None:
    """Fail before any compute, with the fix, when a checkpoint or its adapter is missing."""
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint {path} is missing: rerun `dvc repro train-{exp}`")
    config, weights = ("adapter_config.json", "adapter_model") if lora else ("config.json", "model")
    has_weights = any(path.glob(f"{weights}*.safetensors")) or any(path.glob(f"{weights}*.bin"))
    if not (path / config).exists() or not has_weights:
        what = "LoRA adapter (adapter_config.json + adapter_model.safetensors)" if lora else "model (config.json + weights)"
        raise FileNotFoundError(f"{path} has no {what}: incomplete checkpoint; delete it and rerun `dvc repro train-{exp}`")


# ---------------------------------------------------------------------------------------------------
# the evaluator: which cells, their fingerprints, computing one


class Evaluator:
    """Runs the suites of one EvalSpec (runtime/suites/), caching each (checkpoint, cell) on disk under `out`."""

    def __init__(self, root: Path, ev: EvalSpec, out: Path, label: str, validation: list[dict] | None = None,
                 max_len: int = 512, method: MethodSpec | None = None):
        self.root, self.ev, self.out, self.label = root, ev, out, label
        setup = Setup(root, ev, label, out, validation or [], max_len, method)
        self.suites = [s for s in (cls(setup) for cls in SUITES.values()) if s.cells()]
        self._suite = {cell: s for s in self.suites for cell in s.cells()}  # cell -> the suite computing it
        self._idents: dict[str, str] = {}  # cell -> digest of its inputs (see fingerprint)
        self.cell_seconds: dict[str, float] = {}  # "checkpoint/cell" -> seconds, for cells computed now
        for s in self.suites:  # everything a cell reads is loaded and checked now: bad input fails before any compute
            s.check()

    def cells(self, checkpoint: str, per_experiment: bool = False) -> list[str]:
        """The cells of a checkpoint, in the registry's order; with `per_experiment`, only those of
        suites whose base cell depends on the experiment (the rest of the base is the baseline's)."""
        return [c for s in self.suites if (checkpoint != "base" or s.on_base) and (s.per_experiment or not per_experiment)
                for c in s.cells()]

    def fingerprint(self, cell: str, weights_fp: str, base_fp: str | None = None, template_fp: str | None = None) -> str:
        """What a cell's result depends on: the weights, plus the reference model's when the suite
        compares against it (judge), plus everything the suite's `inputs` lists, plus the tokenizer's
        chat template when it has one (`Models.template_fp`)."""
        suite = self._suite[cell]
        if cell not in self._idents:  # once per stage: hashing a reward model's weights is not free
            self._idents[cell] = dict_sha256(suite.inputs(cell))
        return dict_sha256({"weights": weights_fp, "reference": base_fp if suite.against_base else None,
                            "keep": self.ev.samples_per_task, "inputs": self._idents[cell],
                            **({"chat_template": template_fp} if template_fp else {})})

    def path(self, checkpoint: str, cell: str) -> Path:
        return self.out / checkpoint / f"{cell}.json"

    def shelf(self, fp: str) -> Path:
        return self.out / "_cache" / "cells" / f"{fp[:32]}.json"

    def _shelve(self, path: Path) -> None:
        """Move a cell file aside, under its own fingerprint, before another result takes its place."""
        old = read_cell(path, None)
        if old and old.get("fingerprint"):
            dest = self.shelf(old["fingerprint"])
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, dest)

    def lookup(self, checkpoint: str, cell: str, fp: str) -> dict | None:
        """The finished cell with fingerprint `fp`: in place, or brought back from the shelf."""
        path = self.path(checkpoint, cell)
        found = read_cell(path, fp)
        if found is None and (found := read_cell(self.shelf(fp), fp)) is not None:
            self._shelve(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.shelf(fp), path)
        return found

    def retire(self, keep: set[tuple[str, str]]) -> list[str]:
        """Shelve every cell file that is not a (checkpoint, cell) of the current plan: checkpoints
        of an earlier run with other params, cells of suites removed from the spec. Returns them."""
        moved = []
        for path in sorted(self.out.glob("*/*.json")) if self.out.exists() else []:
            checkpoint = path.parent.name
            if checkpoint.startswith("_") or (checkpoint, path.stem) in keep:
                continue
            self._shelve(path)
            moved.append(f"{checkpoint}/{path.stem}")
            with contextlib.suppress(OSError):
                path.parent.rmdir()  # once empty
        return moved

    def is_done(self, checkpoint: str, cell: str, weights_fp: str, models: Models) -> bool:
        return self.lookup(checkpoint, cell, self.fingerprint(cell, weights_fp, models.base_fp, models.template_fp)) is not None

    def run_cell(self, models: Models, checkpoint: str, weights_fp: str, cell: str) -> tuple[dict, bool]:
        """(result, cached?) for one cell of the model `models` holds now."""
        fp = self.fingerprint(cell, weights_fp, models.base_fp, models.template_fp)
        path = self.path(checkpoint, cell)
        cached = self.lookup(checkpoint, cell, fp)
        if cached:
            return cached, True
        t0 = time.time()
        result = self._suite[cell].run(cell, models.model, models.tok, checkpoint, weights_fp, models)
        # No duration inside the cell: DVC hashes this folder, and a timing would make every identical
        # rerun a new output. Durations go to a timings file beside it (write_timings).
        result.update(fingerprint=fp, checkpoint=checkpoint, cell=cell)
        self._shelve(path)  # another run's result for this name is kept, not overwritten
        EvalCell.write(path, result)
        self.cell_seconds[f"{checkpoint}/{cell}"] = round(time.time() - t0, 3)
        return result, False

    def sweep(self, models: Models, plan: list[tuple[str, Path | None, str, list[str]]], retire: bool = True) -> list[str]:
        """Evaluate `plan` = [(checkpoint, folder to load or None for the loaded model, weights fp,
        cells)], skipping finished cells and loading a checkpoint only when one of its cells is not
        finished. A cell that fails with EvalCellError is reported and the sweep goes on; returns
        those messages. `retire=False`: a shard of a job array, which must not shelve the others' cells."""
        retired = self.retire({(checkpoint, c) for checkpoint, _, _, cells in plan for c in cells}) if retire else []
        if retired:
            print(f"[{self.label}] {len(retired)} cell(s) of checkpoints or suites this run does not have moved to "
                  f"{self.out.name}/_cache/cells/ (kept; they come back if their weights and settings do)", flush=True)
        prog = Progress(self.label, sum(len(c) for *_, c in plan), "cells")
        done, failed = 0, []
        for checkpoint, folder, wfp, cells in plan:
            todo = [c for c in cells if not self.is_done(checkpoint, c, wfp, models)]
            if todo and folder is not None:
                models.load(folder, checkpoint)
            for cell in cells:
                note = "cached"
                if cell in todo:
                    try:
                        self.run_cell(models, checkpoint, wfp, cell)
                        note = ""
                    except EvalCellError as e:
                        failed.append(f"{checkpoint}/{cell}: {e}")
                        note = "FAILED"
                        print(f"[{self.label}] {checkpoint}/{cell} failed: {e}", flush=True)
                done += 1
                prog.update(done, f"{checkpoint}/{cell}" + (f" ({note})" if note else ""))
        return failed


# ---------------------------------------------------------------------------------------------------
# stages


def write_timings(path: Path, models: Models, evaluator: Evaluator, t0: float) -> None:
    """Durations of an evaluation stage, outside its DVC output (runs/<exp>/timings/eval.json, or
    runs/_baselines/<key>.timings.json): measured seconds differ on every run, results must not."""
    EvalTimings.write(path, {"model_io": round(models.io_s, 2), "evaluation": round(time.time() - t0 - models.io_s, 2),
                             "cells": evaluator.cell_seconds})


def _fail_if(failed: list[str], rerun: str) -> None:
    if failed:
        raise EvalCellError(f"{len(failed)} cell(s) failed; every finished cell is kept and `{rerun}` resumes:\n  "
                            + "\n  ".join(failed))


def _baseline_specs(root: Path, key: str, b: dict, params: dict) -> tuple[ModelSpec, EvalSpec]:
    """The baseline's model and suite, validated, with its paths checked like an experiment's: a hand
    edit or `dvc exp run -S baselines...` bypasses the compiler. Paths outside the project are allowed
    only if an experiment sharing this baseline opts in (`allow_external_inputs: true`)."""
    allow = any(isinstance(v, dict) and v.get("baseline") == key and v.get("allow_external_inputs") for v in params.values())
    try:
        probe = Spec.model_validate({"name": "x", "model": b["model"], "data": {"train": [{"source": "x"}]},
                                     "eval": {**b["eval"], "loss": False}, "allow_external_inputs": allow,
                                     "plugins": b.get("plugins") or []})
    except Exception as e:
        raise SpecError([SpecIssue("params.yaml", f"baselines.{key}", f"invalid parameters: {e}")]) from None
    check_paths(probe, root, ("baselines", key), skip=("data",))
    return probe.model, probe.eval


def run_baseline(root: Path, key: str, params: dict) -> None:
    b = (params.get("baselines") or {}).get(key)
    if b is None:
        raise SpecError([SpecIssue("params.yaml", f"baselines.{key}", "no such baseline; run `tunebook compile`")])
    mspec, ev = _baseline_specs(root, key, b, params)
    plugins.load(root, b.get("plugins") or [])  # a target task may score with a plugin's extractor
    out = root / "runs" / "_baselines" / key
    evaluator = Evaluator(root, ev, out, f"baseline {key}")
    t0 = time.time()
    models = Models(root, mspec, lora=False)
    failed = evaluator.sweep(models, [("base", None, models.base_fp, evaluator.cells("base"))])
    BaselineSummary.write(out / "summary.json", {"model": b["model"], "weights": models.base_fp})
    write_timings(baseline_timings(root, key), models, evaluator, t0)
    _fail_if(failed, f"tunebook run baseline {key}")
    print(f"[baseline {key}] done in {time.time() - t0:.1f}s -> runs/_baselines/{key}/", flush=True)


def select_checkpoints(summary: dict, mode) -> list[dict]:
    """The checkpoints to evaluate: all, final only, or every k steps — the final one always."""
    final = summary["final"]
    ckpts = [c for c in summary["checkpoints"] if c["step"] != final["step"]]
    if mode == "final":
        ckpts = []
    elif not isinstance(mode, str):  # {"every": k}
        ckpts = [c for c in ckpts if c["step"] % mode.every == 0]
    return ckpts + [dict(final, is_final=True)]


def run(ctx: StageContext) -> None:
    import torch

    train_dir = ctx.run_dir / "train"
    summary_path = train_dir / "summary.json"
    if not summary_path.exists():
        raise FileNotFoundError(f"{summary_path} is missing: run `dvc repro train-{ctx.name}` first")
    chosen = select_checkpoints(json.loads(summary_path.read_text()), ctx.spec.eval.checkpoints)
    lora = ctx.spec.method.lora is not None
    for c in chosen:
        check_checkpoint(train_dir / c["name"], lora, ctx.name)
    out = ctx.run_dir / "eval"
    ev = ctx.spec.eval
    plugins.load(ctx.root, ctx.spec.plugins)  # the project's names (docs/plugins.md), before any is looked up
    validation = read_jsonl(ctx.data_dir / "validation.jsonl") if ev.loss and (ctx.data_dir / "validation.jsonl").exists() else []
    evaluator = Evaluator(ctx.root, ev, out, f"eval {ctx.name}", validation, ctx.spec.method.max_seq_length,
                          ctx.spec.method)
    t0 = time.time()
    models = Models(ctx.root, ctx.spec.model, lora)
    # The base model's target and general cells are the shared baseline stage's; its held-out cell and
    # reward depend on this experiment's inputs, so they are computed here, first, before any adapter.
    plan = [("base", None, models.base_fp, evaluator.cells("base", per_experiment=True))]
    weights = {c["name"]: dir_digest(train_dir / c["name"]) for c in chosen}
    plan += [(c["name"], train_dir / c["name"], weights[c["name"]], evaluator.cells(c["name"])) for c in chosen]
    shard = os.environ.get("TUNEBOOK_EVAL_SHARD")  # "i/n": task i of a SLURM job array (runtime/slurm.py)
    if shard:
        i, n = map(int, shard.split("/"))
        failed = evaluator.sweep(models, plan[i::n], retire=False)
        _fail_if(failed, f"tunebook run eval {ctx.name}")
        print(f"[eval {ctx.name}] shard {i} of {n}: {len(plan[i::n])} checkpoint(s) in {time.time() - t0:.1f}s; "
              f"the stage's last job gathers the cells", flush=True)
        return
    failed = evaluator.sweep(models, plan)
    EvalSummary.write(out / "summary.json", {
        "checkpoints": [{**c, "weights_sha256": weights[c["name"]]} for c in chosen],
        "torch_threads": torch.get_num_threads(), "device": device(),
    })
    write_timings(ctx.run_dir / "timings" / "eval.json", models, evaluator, t0)
    _fail_if(failed, f"tunebook run eval {ctx.name}")
    print(f"[eval {ctx.name}] {len(chosen)} checkpoint(s) in {time.time() - t0:.1f}s -> runs/{ctx.name}/eval/. Next: report-{ctx.name}", flush=True)
