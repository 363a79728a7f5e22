"""The eval and baseline stages: score checkpoints on the target tasks, the general (forgetting) suite
through lm-eval, and held-out loss.

    tunebook run baseline <key>    # the base model, once per (model, suite), shared by experiments
    tunebook run eval <exp>        # every selected checkpoint of <exp>

One result file per (checkpoint, suite) — a *cell* — written atomically and keyed by a fingerprint of
the checkpoint's weights and the suite's settings, so an interrupted sweep resumes where it stopped
and never recomputes a finished cell, while a changed setting never reuses a stale one. LoRA
checkpoints share one loaded base model: adapters are swapped, not reloaded.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from pathlib import Path

from compiler.errors import SpecError, SpecIssue, did_you_mean
from compiler.schema import EvalSpec, GeneralEval, ModelSpec, TargetTask
from runtime.progress import Progress
from runtime.stages import StageContext

# ---------------------------------------------------------------------------------------------------
# cells


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def dir_digest(path: Path) -> str:
    """Hash of a checkpoint's weight files (adapter or full), to key its cells."""
    h = hashlib.sha256()
    for f in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        h.update(f.name.encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def write_json_atomic(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_cell(path: Path, fp: str) -> dict | None:
    try:
        cell = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return cell if cell.get("fingerprint") == fp else None


# ---------------------------------------------------------------------------------------------------
# target tasks: generate, extract, score


def _load_rows(root: Path, task: TargetTask) -> list[dict]:
    from runtime.data import read_local, read_source
    from compiler.schema import Source

    if task.source.startswith("hf:") or (root / task.source).is_dir():
        rows, _ = read_source(root, Source(source=task.source, split=task.split), f"eval.target.{task.name}")
    else:
        path = root / task.source
        if not path.exists():
            raise SpecError([SpecIssue("params.yaml", f"eval.target.{task.name}.source", f"'{task.source}' does not exist")])
        rows = read_local(path)
    if not rows:
        raise SpecError([SpecIssue("params.yaml", f"eval.target.{task.name}.source", f"'{task.source}' has no rows")])
    for f in (task.prompt_field, task.answer_field):
        if f not in rows[0]:
            raise SpecError([SpecIssue("params.yaml", f"eval.target.{task.name}", f"no field '{f}' in {task.source}",
                                       hint=did_you_mean(f, rows[0].keys()) or f"fields: {', '.join(rows[0])}")])
    return rows[: task.limit] if task.limit else rows


def eval_target(model, tok, task: TargetTask, rows: list[dict], checkpoint: str, keep: int) -> dict:
    import torch

    from runtime.extract import EXTRACTORS, score

    extract = EXTRACTORS[task.extract]
    tok.padding_side = "left"
    scores, samples, failures = [], [], 0
    for i in range(0, len(rows), task.batch_size):
        batch = rows[i : i + task.batch_size]
        enc = tok([str(r[task.prompt_field]) for r in batch], return_tensors="pt", padding=True).to(model.device)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=task.max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        for r, o in zip(batch, out):
            text = tok.decode(o[enc["input_ids"].shape[1]:], skip_special_tokens=True)
            got = extract(text)
            failures += got is None
            ok = score(got, str(r[task.answer_field]))
            scores.append(1.0 if ok else 0.0)
            samples.append({"task": task.name, "checkpoint": checkpoint, "prompt": str(r[task.prompt_field]),
                            "output": text, "target": str(r[task.answer_field]), "extracted": got, "correct": ok})
    n = len(scores)
    acc = sum(scores) / n
    right = [s for s in samples if s["correct"]][: (keep + 1) // 2]
    wrong = [s for s in samples if not s["correct"]][: keep // 2]
    metric = {"suite": "target", "task": task.name, "metric": "accuracy", "checkpoint": checkpoint,
              "value": acc, "stderr": math.sqrt(acc * (1 - acc) / n) if n > 1 else None, "n": n,
              "higher_is_better": True, "samples": scores,
              "extra": {"extraction_failures": failures, "extraction_failure_rate": failures / n,
                        "extract": task.extract, "decoding": "greedy", "max_new_tokens": task.max_new_tokens}}
    return {"metrics": [metric], "samples": right + wrong}


# ---------------------------------------------------------------------------------------------------
# general suite through lm-eval


def _local_task_dir(root: Path, include_path: str) -> Path:
    """Copy local task YAMLs to a temp folder with data_files made absolute (lm-eval needs that)."""
    import yaml

    src = (root / include_path).resolve()
    if not src.is_dir():
        raise SpecError([SpecIssue("params.yaml", "eval.general.include_path", f"'{include_path}' is not a folder")])
    dst = Path(tempfile.mkdtemp(prefix="tunebook-tasks-"))
    for f in sorted(src.glob("*.yaml")):
        cfg = yaml.safe_load(f.read_text())
        files = (cfg.get("dataset_kwargs") or {}).get("data_files")
        if isinstance(files, dict):
            cfg["dataset_kwargs"]["data_files"] = {k: str((src / v).resolve()) for k, v in files.items()}
        (dst / f.name).write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dst


def task_manager(root: Path, general: GeneralEval):
    from lm_eval.tasks import TaskManager

    include = str(_local_task_dir(root, general.include_path)) if general.include_path else None
    tm = TaskManager(include_path=include)
    unknown = [t for t in general.tasks if t not in tm.all_tasks]
    if unknown:
        issues = [SpecIssue("params.yaml", "eval.general.tasks", f"unknown lm-eval task '{t}'",
                            hint=did_you_mean(t, tm.all_tasks)) for t in unknown]
        raise SpecError(issues)
    return tm


def eval_general(model, tok, general: GeneralEval, tm, checkpoint: str) -> dict:
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    # Follow the tokenizer on BOS: a model trained with <s> at the start of every text scores
    # nonsense without it (lm-eval encodes contexts without special tokens by default).
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=general.batch_size,
              max_length=model.config.max_position_embeddings, add_bos_token=bool(getattr(tok, "add_bos_token", False)))
    res = lm_eval.simple_evaluate(model=lm, tasks=list(general.tasks), task_manager=tm, limit=general.limit,
                                  num_fewshot=general.num_fewshot, log_samples=True, verbosity="ERROR",
                                  bootstrap_iters=0, random_seed=0, numpy_random_seed=0, torch_random_seed=0)
    metrics = []
    for task in general.tasks:
        r = res["results"][task]
        samples = sorted(res["samples"][task], key=lambda s: s["doc_id"])
        higher = res.get("higher_is_better", {}).get(task, {})
        for key, val in sorted(r.items()):
            if not key.endswith(",none") or "_stderr" in key or not isinstance(val, (int, float)):
                continue
            name = key.split(",")[0]
            se = r.get(f"{name}_stderr,none")
            per = [float(s[name]) for s in samples if name in s]
            n = res.get("n-samples", {}).get(task, {}).get("effective", len(per))
            if se in (None, "N/A") and per:
                p = sum(per) / len(per)
                se = math.sqrt(p * (1 - p) / len(per)) if len(per) > 1 else None
            metrics.append({"suite": "general", "task": task, "metric": name, "checkpoint": checkpoint,
                            "value": float(val), "stderr": float(se) if isinstance(se, (int, float)) else None,
                            "n": int(n), "higher_is_better": bool(higher.get(name, True)), "samples": per or None})
    versions = {t: res.get("versions", {}).get(t) for t in general.tasks}
    hashes = {t: res.get("task_hashes", {}).get(t) for t in general.tasks}
    return {"metrics": metrics, "lm_eval": {"version": lm_eval.__version__ if hasattr(lm_eval, "__version__") else None,
                                             "task_versions": versions, "task_hashes": hashes}}


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
            if "messages" in r:
                p_ids = tok.apply_chat_template(r["messages"][:-1], tokenize=True)
                full = tok.apply_chat_template(r["messages"], tokenize=True)
            else:
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
# sweeps


class Evaluator:
    """Runs the suites of one EvalSpec on a model, caching each (checkpoint, suite) cell on disk."""

    def __init__(self, root: Path, ev: EvalSpec, out: Path, label: str):
        self.root, self.ev, self.out, self.label = root, ev, out, label
        self._tm = None
        self._rows = {t.name: _load_rows(root, t) for t in ev.target}
        if ev.general:
            self._tm = task_manager(root, ev.general)  # fails fast on unknown tasks, before any compute

    def cells(self) -> list[str]:
        return [t.name for t in self.ev.target] + (["general"] if self.ev.general else [])

    def run_cell(self, model, tok, checkpoint: str, weights_fp: str, cell: str) -> tuple[dict, bool]:
        """(result, cached?)"""
        if cell == "general":
            settings = self.ev.general.model_dump(mode="json")
        else:
            settings = next(t for t in self.ev.target if t.name == cell).model_dump(mode="json")
        fp = _digest({"weights": weights_fp, "settings": settings, "keep": self.ev.samples_per_task})
        path = self.out / checkpoint / f"{cell}.json"
        cached = read_cell(path, fp)
        if cached:
            return cached, True
        t0 = time.time()
        if cell == "general":
            result = eval_general(model, tok, self.ev.general, self._tm, checkpoint)
        else:
            task = next(t for t in self.ev.target if t.name == cell)
            result = eval_target(model, tok, task, self._rows[cell], checkpoint, self.ev.samples_per_task)
        result.update(fingerprint=fp, checkpoint=checkpoint, cell=cell, seconds=round(time.time() - t0, 3))
        write_json_atomic(path, result)
        return result, False


def run_baseline(root: Path, key: str, params: dict) -> None:
    from runtime.models import load_model, load_tokenizer

    b = (params.get("baselines") or {}).get(key)
    if b is None:
        raise SpecError([SpecIssue("params.yaml", f"baselines.{key}", "no such baseline; run `tunebook compile`")])
    mspec = ModelSpec.model_validate(b["model"])
    ev = EvalSpec.model_validate({**b["eval"], "loss": False})
    out = root / "runs" / "_baselines" / key
    evaluator = Evaluator(root, ev, out, f"baseline {key}")
    t0 = time.time()
    model, tok = load_model(root, mspec).eval(), load_tokenizer(root, mspec)
    io_s = time.time() - t0
    fp = _digest({"model": b["model"]}) if not mspec.base.startswith("builtin:") else dir_digest(root / "models" / mspec.base[8:])
    prog = Progress(f"baseline {key}", len(evaluator.cells()), "cells")
    for i, cell in enumerate(evaluator.cells()):
        _, cached = evaluator.run_cell(model, tok, "base", fp, cell)
        prog.update(i + 1, f"{cell}{' (cached)' if cached else ''}")
    write_json_atomic(out / "summary.json", {"model": b["model"], "weights": fp, "timings": {"model_io": round(io_s, 2),
                                                                                              "evaluation": round(time.time() - t0 - io_s, 2)}})
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

    from runtime.models import load_model, load_tokenizer
    from runtime.train import read_jsonl

    train_dir = ctx.run_dir / "train"
    summary = json.loads((train_dir / "summary.json").read_text())
    out = ctx.run_dir / "eval"
    ev = ctx.spec.eval
    evaluator = Evaluator(ctx.root, ev, out, f"eval {ctx.name}")
    validation = read_jsonl(ctx.data_dir / "validation.jsonl") if ev.loss else []
    chosen = select_checkpoints(summary, ev.checkpoints)
    t0 = time.time()
    base = load_model(ctx.root, ctx.spec.model).eval()
    tok = load_tokenizer(ctx.root, ctx.spec.model)
    io_s = time.time() - t0
    max_len = ctx.spec.method.max_seq_length
    lora = ctx.spec.method.lora is not None
    n_cells = len(chosen) * len(evaluator.cells()) + (len(chosen) + 1) * bool(validation)
    prog = Progress(f"eval {ctx.name}", n_cells, "cells")
    done = 0

    def loss_cell(model, name: str, fp: str) -> None:
        nonlocal done
        cfp = _digest({"weights": fp, "loss": True, "max_len": max_len, "n": len(validation)})
        path = out / name / "loss.json"
        if read_cell(path, cfp) is None:
            res = eval_loss(model, tok, validation, max_len, name)
            res.update(fingerprint=cfp, checkpoint=name, cell="loss")
            write_json_atomic(path, res)
        done += 1
        prog.update(done, f"{name}/loss")

    if validation:  # the base model's held-out loss depends on this experiment's data: not shared
        loss_cell(base, "base", dir_digest(Path(base.name_or_path)) if Path(base.name_or_path).is_dir() else base.name_or_path)

    model = base
    for c in chosen:
        path = train_dir / c["name"]
        if not path.exists():
            raise FileNotFoundError(f"checkpoint {path} is missing: rerun `dvc repro train-{ctx.name}`")
        wfp = dir_digest(path)
        t_io = time.time()
        if lora:
            from peft import PeftModel

            if model is base:
                model = PeftModel.from_pretrained(base, str(path), adapter_name=c["name"])
            else:
                old = model.active_adapter
                model.load_adapter(str(path), adapter_name=c["name"])
                model.set_adapter(c["name"])
                model.delete_adapter(old)
        else:
            model = load_model(ctx.root, ctx.spec.model.model_copy(update={"base": str(path)}))
        model.eval()
        io_s += time.time() - t_io
        for cell in evaluator.cells():
            _, cached = evaluator.run_cell(model, tok, c["name"], wfp, cell)
            done += 1
            prog.update(done, f"{c['name']}/{cell}{' (cached)' if cached else ''}")
        if validation:
            loss_cell(model, c["name"], wfp)
    write_json_atomic(out / "summary.json", {
        "checkpoints": [{**c, "weights_sha256": dir_digest(train_dir / c["name"])} for c in chosen],
        "timings": {"model_io": round(io_s, 2), "evaluation": round(time.time() - t0 - io_s, 2)},
        "torch_threads": torch.get_num_threads(),
    })
    print(f"[eval {ctx.name}] {len(chosen)} checkpoint(s) in {time.time() - t0:.1f}s -> runs/{ctx.name}/eval/. Next: report-{ctx.name}", flush=True)
