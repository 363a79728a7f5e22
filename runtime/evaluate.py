"""The eval and baseline stages: score checkpoints on the target tasks, the general (forgetting) suite
through lm-eval, held-out loss (or, by the validation rows, DPO preference accuracy or GRPO reward: see
runtime/heldout.py), a reward model and pairwise judges.

    tunebook run baseline <key>    # the base model, once per (model, suite), shared by experiments
    tunebook run eval <exp>        # every selected checkpoint of <exp>

One result file per (checkpoint, suite) — a *cell*, `<out>/<checkpoint>/<cell>.json` — written
atomically and keyed by a fingerprint of the checkpoint's weights, the suite's settings and its inputs
(data, lm-eval version), so an interrupted sweep resumes where it stopped and never recomputes a
finished cell, while a changed setting never reuses a stale one. A checkpoint whose cells are all
finished is not even loaded. LoRA checkpoints share one loaded base model: adapters are swapped, not
reloaded. Reward scores, judge verdicts and generated answers are cached below `<out>/_cache/` so a
cell interrupted halfway resumes too. A cell file about to be replaced by another result (a 5-step
dry run after the real run), or left from a checkpoint the current run does not have, is moved to
`<out>/_cache/cells/<fingerprint>.json` rather than lost, and comes back when its weights and
settings do: `<out>/<checkpoint>/` always holds exactly the current run's cells. The general suite
(lm-eval) lives in runtime/general.py, the reward model and the judges in runtime/reward.py and
runtime/judge.py.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path

from tunebook.compiler.errors import SpecError, SpecIssue, did_you_mean
from tunebook.compiler.schema import EvalSpec, ModelSpec, PromptSet, TargetTask
from tunebook.files import dict_sha256, read_jsonl, write_json_atomic
from tunebook.runtime.cells import EvalCellError, read_cell
from tunebook.runtime.context import StageContext, check_paths
from tunebook.runtime.generation import generate
from tunebook.runtime.models import device, dir_digest, model_fingerprint
from tunebook.runtime.progress import Progress


# ---------------------------------------------------------------------------------------------------
# inputs


def _read_rows(root: Path, source: str, key: str) -> list[dict]:
    from tunebook.runtime.sources import read_local

    path = root / source
    if not path.is_file():
        raise SpecError([SpecIssue("params.yaml", key, f"'{source}' does not exist")])
    try:
        return read_local(path)
    except ValueError as e:
        raise SpecError([SpecIssue("params.yaml", key, str(e))]) from None


def _check_field(rows: list[dict], field: str, source: str, key: str) -> None:
    if not rows:
        raise SpecError([SpecIssue("params.yaml", key, f"'{source}' has no rows")])
    if field not in rows[0]:
        raise SpecError([SpecIssue("params.yaml", key, f"no field '{field}' in {source}",
                                   hint=did_you_mean(field, rows[0].keys()) or f"fields: {', '.join(rows[0])}")])


def _load_rows(root: Path, task: TargetTask) -> list[dict]:
    from tunebook.compiler.schema import Source
    from tunebook.runtime.sources import read_source

    key = f"eval.target.{task.name}.source"
    if task.source.startswith("hf:") or (root / task.source).is_dir():
        rows, _ = read_source(root, Source(source=task.source, split=task.split), key)
    else:
        rows = _read_rows(root, task.source, key)
    for f in (task.prompt_field, task.answer_field):
        _check_field(rows, f, task.source, f"eval.target.{task.name}")
    return rows[: task.limit] if task.limit else rows


def load_prompts(root: Path, ps: PromptSet, key: str) -> list[str]:
    """The prompts of a reward/judge prompt set; an empty file or a blank prompt is a spec error."""
    rows = _read_rows(root, ps.prompts, f"{key}.prompts")
    _check_field(rows, ps.prompt_field, ps.prompts, f"{key}.prompt_field")
    prompts = [str(r.get(ps.prompt_field) or "") for r in rows][: ps.limit or None]
    blank = [i + 1 for i, p in enumerate(prompts) if not p.strip()]
    if blank:
        raise SpecError([SpecIssue("params.yaml", f"{key}.prompts", f"{ps.prompts}: empty prompt in row(s) {blank[:10]}")])
    return prompts


# ---------------------------------------------------------------------------------------------------
# target tasks: generate, extract, score


def eval_target(model, tok, task: TargetTask, rows: list[dict], checkpoint: str, keep: int) -> dict:
    from tunebook.runtime.extract import EXTRACTORS, score

    extract = EXTRACTORS[task.extract]
    prompts = [str(r[task.prompt_field]) for r in rows]
    answers = generate(model, tok, prompts, task.max_new_tokens, task.batch_size, temperature=task.temperature,
                       top_p=task.top_p, num_samples=task.num_samples, seed=task.seed, chat=bool(task.chat), system=task.system)
    scores, samples, failures = [], [], 0
    for r, prompt, outs in zip(rows, prompts, answers):
        target = str(r[task.answer_field])
        got = [extract(o) for o in outs]
        failures += sum(g is None for g in got)
        ok = [score(g, target) for g in got]
        scores.append(sum(ok) / len(ok))  # with sampling, an item scores its share of right answers
        samples.append({"task": task.name, "checkpoint": checkpoint, "prompt": prompt, "output": outs[0],
                        "target": target, "extracted": got[0], "correct": ok[0]})
    n = len(scores)
    acc = sum(scores) / n
    sd = math.sqrt(sum((s - acc) ** 2 for s in scores) / (n - 1)) if n > 1 else None
    right = [s for s in samples if s["correct"]][: (keep + 1) // 2]
    wrong = [s for s in samples if not s["correct"]][: keep // 2]
    decoding = ({"mode": "sample", "temperature": task.temperature, "top_p": task.top_p,
                 "num_samples": task.num_samples, "seed": task.seed} if task.temperature > 0 else {"mode": "greedy"})
    metric = {"suite": "target", "task": task.name, "metric": "accuracy", "checkpoint": checkpoint,
              "value": acc, "stderr": sd / math.sqrt(n) if sd is not None else None, "n": n,
              "higher_is_better": True, "samples": scores,
              "extra": {"extraction_failures": failures, "extraction_failure_rate": failures / (n * task.num_samples),
                        "extract": task.extract, "decoding": decoding, "max_new_tokens": task.max_new_tokens,
                        "chat": bool(task.chat), "system": task.system}}
    return {"metrics": [metric], "samples": right + wrong}


# ---------------------------------------------------------------------------------------------------
# held-out loss


def eval_loss(model, tok, rows: list[dict], max_len: int, checkpoint: str, batch_size: int = 32) -> dict:
    """Mean completion-token loss per row (prompt tokens masked) and perplexity."""
    import torch

    tok.padding_side = "right"
    per_row = []
    for i in range(0, len(rows), batch_size):
        batch = rows[i : i + batch_size]
        ids, labels = [], []
        for r in batch:
            if "messages" in r:  # the tokens training puts loss on: the assistant's turns (runtime/chat.py)
                from tunebook.runtime.chat import assistant_tokens

                enc = assistant_tokens(tok, r["messages"])
                full = enc["input_ids"][:max_len]
                ids.append(full)
                labels.append([t if m else -100 for t, m in zip(full, enc["assistant_masks"])])
                continue
            p_ids = tok(r["prompt"])["input_ids"]
            full = tok(r["prompt"] + r["completion"])["input_ids"] + [tok.eos_token_id]
            full = full[:max_len]
            lab = [-100] * min(len(p_ids), len(full)) + full[len(p_ids):]
            ids.append(full)
            labels.append(lab)
        width = max(len(x) for x in ids)
        inp = torch.tensor([x + [tok.pad_token_id] * (width - len(x)) for x in ids], device=model.device)
        lab = torch.tensor([x + [-100] * (width - len(x)) for x in labels], device=model.device)
        att = (torch.arange(width)[None, :] < torch.tensor([len(x) for x in ids])[:, None]).long().to(model.device)
        with torch.no_grad():
            logits = model(input_ids=inp, attention_mask=att).logits[:, :-1].float()
        tgt = lab[:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tgt, ignore_index=-100, reduction="none")
        mask = (tgt != -100).float()
        per_row += ((nll * mask).sum(1) / mask.sum(1).clamp(min=1)).tolist()
    n = len(per_row)
    mean = sum(per_row) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in per_row) / (n - 1)) if n > 1 else 0.0
    se = sd / math.sqrt(n) if n > 1 else None
    return {"metrics": [
        {"suite": "loss", "task": "validation", "metric": "loss", "checkpoint": checkpoint, "value": mean,
         "stderr": se, "n": n, "higher_is_better": False, "samples": per_row},
        {"suite": "loss", "task": "validation", "metric": "perplexity", "checkpoint": checkpoint,
         "value": math.exp(mean), "stderr": math.exp(mean) * se if se is not None else None, "n": n,
         "higher_is_better": False},
    ]}


# ---------------------------------------------------------------------------------------------------
# models: the base, and each checkpoint in turn


class Models:
    """The model under evaluation. LoRA checkpoints are adapters on one loaded base model: when the
    next adapter has the same shape (config) as the loaded one, its weights are copied into the loaded
    adapter's tensors (milliseconds); otherwise it is injected anew and the old one deleted. Either
    way the base is never reloaded (bench/bench_sweep.py measures what that saves). Full checkpoints
    are loaded from disk."""

    def __init__(self, root: Path, spec: ModelSpec, lora: bool):
        from tunebook.runtime.models import load_model, load_tokenizer

        t0 = time.time()
        self.root, self.spec, self.lora = root, spec, lora
        self.base = load_model(root, spec).to(device()).eval()
        self.tok = load_tokenizer(root, spec)
        self.model = self.base
        self.name = "base"
        self._layout = None  # (adapter name, {tensor: shape}) of the loaded LoRA adapter
        self.base_fp = model_fingerprint(root, spec)
        self.io_s = time.time() - t0

    def load(self, path: Path, name: str) -> None:
        from tunebook.runtime.models import load_model

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
    """Runs the suites of one EvalSpec, caching each (checkpoint, cell) on disk under `out`."""

    def __init__(self, root: Path, ev: EvalSpec, out: Path, label: str, validation: list[dict] | None = None,
                 max_len: int = 512, method=None):
        from tunebook.runtime.heldout import cell_for

        self.root, self.ev, self.out, self.label = root, ev, out, label
        self.validation, self.max_len, self.method = validation or [], max_len, method
        # the held-out cell follows the rows: loss (SFT), preference (DPO) or verifiable (GRPO, teacher-SFT)
        self.heldout = cell_for(self.validation)
        self._tm = self._scorer = self._judges = None
        self._idents: dict[str, str] = {}  # cell -> digest of its inputs (see fingerprint)
        self.cell_seconds: dict[str, float] = {}  # "checkpoint/cell" -> seconds, for cells computed now
        # Everything a cell reads is loaded (and checked) now, so bad input fails before any compute.
        self._rows = {t.name: _load_rows(root, t) for t in ev.target}
        self._prompts = {k: load_prompts(root, ps, f"eval.{k}") for k, ps in (("reward", ev.reward), ("judge", ev.judge)) if ps}
        self._template = None
        if ev.reward:
            from tunebook.runtime.reward import check_reward_model

            check_reward_model(root, ev.reward)
        if ev.judge:
            from tunebook.runtime.judge import load_template

            self._template = load_template(root, ev.judge.template)
        if ev.general:
            from tunebook.runtime.general import task_manager

            self._tm = task_manager(root, ev.general)  # fails fast on unknown tasks

    def cells(self, checkpoint: str) -> list[str]:
        cells = [t.name for t in self.ev.target] + ["general"] * bool(self.ev.general)
        cells += [self.heldout] * bool(self.heldout) + ["reward"] * bool(self.ev.reward)
        return cells + ["judge"] * bool(self.ev.judge and checkpoint != "base")  # base vs itself says nothing

    def fingerprint(self, cell: str, weights_fp: str, base_fp: str | None = None) -> str:
        """What a cell's result depends on: the weights, plus (judge) the reference model's, plus
        everything `_inputs` lists."""
        if cell not in self._idents:  # once per stage: hashing a reward model's weights is not free
            self._idents[cell] = dict_sha256(self._inputs(cell))
        return dict_sha256({"weights": weights_fp, "reference": base_fp if cell == "judge" else None,
                        "keep": self.ev.samples_per_task, "inputs": self._idents[cell]})

    def _inputs(self, cell: str) -> dict:
        ev = self.ev
        if cell == "general":
            from tunebook.runtime.general import general_inputs

            return {"settings": ev.general.model_dump(mode="json"), **general_inputs(self.root, ev.general)}
        if cell == "loss":
            return {"loss": True, "max_len": self.max_len, "rows": dict_sha256(self.validation)}
        if cell == "preference":
            return {"preference": self._beta(), "max_len": self.max_len, "rows": dict_sha256(self.validation)}
        if cell == "verifiable":
            from tunebook.runtime.heldout import reward_settings

            return {"verifiable": reward_settings(self.method), "rows": dict_sha256(self.validation)}
        if cell == "reward":
            from tunebook.runtime.reward import reward_model_fingerprint

            return {"settings": ev.reward.model_dump(mode="json"), "prompts": dict_sha256(self._prompts[cell]),
                    "reward_model": reward_model_fingerprint(self.root, ev.reward)}
        if cell == "judge":
            return {"settings": ev.judge.model_dump(mode="json"), "prompts": dict_sha256(self._prompts[cell]),
                    "template": self._template}
        task = next(t for t in ev.target if t.name == cell)
        return {"settings": task.model_dump(mode="json"), "rows": dict_sha256(self._rows[cell])}

    def _beta(self) -> float:
        return self.method.dpo.beta if self.method is not None and self.method.dpo is not None else 0.1

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

    def is_done(self, checkpoint: str, cell: str, weights_fp: str, base_fp: str | None = None) -> bool:
        return self.lookup(checkpoint, cell, self.fingerprint(cell, weights_fp, base_fp)) is not None

    def answers(self, model, tok, weights_fp: str, cell: str) -> list[str]:
        """A prompt set's greedy answers, cached by (weights, generation settings, prompts): the reward
        and judge cells share them, and a resumed judge cell sees exactly the answers it judged."""
        ps = self.ev.reward if cell == "reward" else self.ev.judge
        gen = ps.model_dump(mode="json", include={"chat", "max_new_tokens"})
        path = self.out / "_cache" / "generations" / f"{dict_sha256([weights_fp, gen, self._prompts[cell]])[:32]}.json"
        cached = read_cell(path, "answers")
        if cached:
            return cached["answers"]
        answers = [a[0] for a in generate(model, tok, self._prompts[cell], ps.max_new_tokens, ps.batch_size, chat=ps.chat)]
        write_json_atomic(path, {"fingerprint": "answers", "answers": answers})
        return answers

    def run_cell(self, models: Models, checkpoint: str, weights_fp: str, cell: str) -> tuple[dict, bool]:
        """(result, cached?) for one cell of the model `models` holds now."""
        fp = self.fingerprint(cell, weights_fp, models.base_fp)
        path = self.path(checkpoint, cell)
        cached = self.lookup(checkpoint, cell, fp)
        if cached:
            return cached, True
        model, tok, keep = models.model, models.tok, self.ev.samples_per_task
        t0 = time.time()
        if cell == "general":
            from tunebook.runtime.general import eval_general

            result = eval_general(model, tok, self.ev.general, self._tm, checkpoint)
        elif cell == "loss":
            result = eval_loss(model, tok, self.validation, self.max_len, checkpoint)
        elif cell == "preference":
            from tunebook.runtime.heldout import eval_preference

            result = eval_preference(model, models.base_view, tok, self.validation, self._beta(), self.max_len, checkpoint)
        elif cell == "verifiable":
            from tunebook.runtime.heldout import eval_verifiable, reward_settings

            result = eval_verifiable(model, tok, self.validation, reward_settings(self.method), checkpoint, keep)
        elif cell == "reward":
            from tunebook.runtime.reward import RewardScorer, eval_reward

            self._scorer = self._scorer or RewardScorer(self.root, self.ev.reward, self.out / "_cache" / "reward")
            answers = self.answers(model, tok, weights_fp, "reward")
            result = eval_reward(self._scorer, self.ev.reward, self._prompts["reward"], answers, checkpoint, keep)
        elif cell == "judge":
            from tunebook.runtime.judge import eval_judge, make_judges

            self._judges = self._judges or make_judges(self.root, self.ev.judge)
            candidate = self.answers(model, tok, weights_fp, "judge")
            with models.base_view() as base:
                reference = self.answers(base, tok, models.base_fp, "judge")
            result = eval_judge(self._judges, self.ev.judge, self._template, self._prompts["judge"], candidate,
                                reference, checkpoint, self.out / "_cache" / "judge", keep)
        else:
            task = next(t for t in self.ev.target if t.name == cell)
            result = eval_target(model, tok, task, self._rows[cell], checkpoint, keep)
        # No duration inside the cell: DVC hashes this folder, and a timing would make every identical
        # rerun a new output. Durations go to a timings file beside it (write_timings).
        result.update(fingerprint=fp, checkpoint=checkpoint, cell=cell)
        self._shelve(path)  # another run's result for this name is kept, not overwritten
        write_json_atomic(path, result)
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
            todo = [c for c in cells if not self.is_done(checkpoint, c, wfp, models.base_fp)]
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
    write_json_atomic(path, {"model_io": round(models.io_s, 2), "evaluation": round(time.time() - t0 - models.io_s, 2),
                             "cells": evaluator.cell_seconds})


def _fail_if(failed: list[str], rerun: str) -> None:
    if failed:
        raise EvalCellError(f"{len(failed)} cell(s) failed; every finished cell is kept and `{rerun}` resumes:\n  "
                            + "\n  ".join(failed))


def _baseline_specs(root: Path, key: str, b: dict, params: dict) -> tuple[ModelSpec, EvalSpec]:
    """The baseline's model and suite, validated, with its paths checked like an experiment's: a hand
    edit or `dvc exp run -S baselines...` bypasses the compiler. Paths outside the project are allowed
    only if an experiment sharing this baseline opts in (`allow_external_inputs: true`)."""
    from tunebook.compiler.schema import Spec

    allow = any(isinstance(v, dict) and v.get("baseline") == key and v.get("allow_external_inputs") for v in params.values())
    try:
        probe = Spec.model_validate({"name": "x", "model": b["model"], "data": {"train": [{"source": "x"}]},
                                     "eval": {**b["eval"], "loss": False}, "allow_external_inputs": allow})
    except Exception as e:
        raise SpecError([SpecIssue("params.yaml", f"baselines.{key}", f"invalid parameters: {e}")]) from None
    check_paths(probe, root, ("baselines", key), skip=("data",))
    return probe.model, probe.eval


def baseline_timings(root: Path, key: str) -> Path:
    return root / "runs" / "_baselines" / f"{key}.timings.json"


def run_baseline(root: Path, key: str, params: dict) -> None:
    b = (params.get("baselines") or {}).get(key)
    if b is None:
        raise SpecError([SpecIssue("params.yaml", f"baselines.{key}", "no such baseline; run `tunebook compile`")])
    mspec, ev = _baseline_specs(root, key, b, params)
    out = root / "runs" / "_baselines" / key
    evaluator = Evaluator(root, ev, out, f"baseline {key}")
    t0 = time.time()
    models = Models(root, mspec, lora=False)
    failed = evaluator.sweep(models, [("base", None, models.base_fp, evaluator.cells("base"))])
    write_json_atomic(out / "summary.json", {"model": b["model"], "weights": models.base_fp})
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
    validation = read_jsonl(ctx.data_dir / "validation.jsonl") if ev.loss and (ctx.data_dir / "validation.jsonl").exists() else []
    evaluator = Evaluator(ctx.root, ev, out, f"eval {ctx.name}", validation, ctx.spec.method.max_seq_length,
                          ctx.spec.method)
    t0 = time.time()
    models = Models(ctx.root, ctx.spec.model, lora)
    # The base model's target and general cells are the shared baseline stage's; its held-out cell and
    # reward depend on this experiment's inputs, so they are computed here, first, before any adapter.
    mine = ("loss", "preference", "verifiable", "reward")
    plan = [("base", None, models.base_fp, [c for c in evaluator.cells("base") if c in mine])]
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
    write_json_atomic(out / "summary.json", {
        "checkpoints": [{**c, "weights_sha256": weights[c["name"]]} for c in chosen],
        "torch_threads": torch.get_num_threads(),
    })
    write_timings(ctx.run_dir / "timings" / "eval.json", models, evaluator, t0)
    _fail_if(failed, f"tunebook run eval {ctx.name}")
    print(f"[eval {ctx.name}] {len(chosen)} checkpoint(s) in {time.time() - t0:.1f}s -> runs/{ctx.name}/eval/. Next: report-{ctx.name}", flush=True)
