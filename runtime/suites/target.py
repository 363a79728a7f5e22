"""Target tasks, one cell per task named after it: generate an answer to each row's prompt (greedy, or
sampled with a seed), extract the answer (runtime/extract.py), score it against the row's answer.

    eval:
      target:
        - {name: subtraction, source: data/tiny/subtraction_test.jsonl, max_new_tokens: 4}

With sampling, an item scores its share of right answers. An extraction that finds nothing is counted
as a failure beside the accuracy (seed 003's "X" predictions). Rows come from a local file, a local
dataset folder or the hub (`hf:`), read and checked in `check()`.
"""

from __future__ import annotations

from typing import ClassVar

from tunebook.compiler.schema import Source, TargetTask
from tunebook.files import dict_sha256
from tunebook.runtime import plugins
from tunebook.runtime.extract import EXTRACTORS, prepare, score
from tunebook.runtime.generation import generate
from tunebook.runtime.sources import read_source
from tunebook.runtime.suites.base import Reference, Setup, stderr
from tunebook.runtime.suites.rows import check_field, read_rows


def load_rows(root, task: TargetTask) -> list[dict]:
    key = f"eval.target.{task.name}.source"
    if task.source.startswith("hf:") or (root / task.source).is_dir():
        rows, _ = read_source(root, Source(source=task.source, split=task.split), key)
    else:
        rows = read_rows(root, task.source, key)
    for f in (task.prompt_field, task.answer_field):
        check_field(rows, f, task.source, f"eval.target.{task.name}")
    return rows[: task.limit] if task.limit else rows


def eval_target(model, tok, task: TargetTask, rows: list[dict], checkpoint: str, keep: int) -> dict:
    extract, prepare_answer = EXTRACTORS[task.extract], prepare(task.answer_transform)
    prompts = [str(r[task.prompt_field]) for r in rows]
    answers = generate(model, tok, prompts, task.max_new_tokens, task.batch_size, temperature=task.temperature,
                       top_p=task.top_p, num_samples=task.num_samples, seed=task.seed, chat=bool(task.chat), system=task.system)
    scores, samples, failures = [], [], 0
    for r, prompt, outs in zip(rows, prompts, answers):
        target = prepare_answer(str(r[task.answer_field]))
        got = [extract(o) for o in outs]
        failures += sum(g is None for g in got)
        ok = [score(g, target) for g in got]
        scores.append(sum(ok) / len(ok))  # with sampling, an item scores its share of right answers
        samples.append({"task": task.name, "checkpoint": checkpoint, "prompt": prompt, "output": outs[0],
                        "target": target, "extracted": got[0], "correct": ok[0]})
    n = len(scores)
    acc = sum(scores) / n
    right = [s for s in samples if s["correct"]][: (keep + 1) // 2]
    wrong = [s for s in samples if not s["correct"]][: keep // 2]
    decoding = ({"mode": "sample", "temperature": task.temperature, "top_p": task.top_p,
                 "num_samples": task.num_samples, "seed": task.seed} if task.temperature > 0 else {"mode": "greedy"})
    metric = {"suite": "target", "task": task.name, "metric": "accuracy", "checkpoint": checkpoint,
              "value": acc, "stderr": stderr(scores), "n": n,
              "higher_is_better": True, "samples": scores,
              "extra": {"extraction_failures": failures, "extraction_failure_rate": failures / (n * task.num_samples),
                        "extract": task.extract, "decoding": decoding, "max_new_tokens": task.max_new_tokens,
                        "chat": bool(task.chat), "system": task.system}}
    return {"metrics": [metric], "samples": right + wrong}


class TargetSuite:
    """The spec's target tasks, one cell each."""

    name: ClassVar[str] = "target"
    on_base: ClassVar[bool] = True
    per_experiment: ClassVar[bool] = False
    against_base: ClassVar[bool] = False

    def __init__(self, setup: Setup):
        self.setup = setup
        self.tasks = {t.name: t for t in setup.ev.target}
        self.rows: dict[str, list[dict]] = {}

    def cells(self) -> list[str]:
        return list(self.tasks)

    def check(self) -> None:
        self.rows = {name: load_rows(self.setup.root, t) for name, t in self.tasks.items()}

    def inputs(self, cell: str) -> dict:
        t = self.tasks[cell]  # a plugin's extractor or transform: its file's sha256 too (runtime/plugins.py)
        return {"settings": t.model_dump(mode="json"), "rows": dict_sha256(self.rows[cell]),
                **plugins.code(extract=t.extract, answer_transform=t.answer_transform)}

    def run(self, cell: str, model, tok, checkpoint: str, weights_fp: str, reference: Reference) -> dict:
        return eval_target(model, tok, self.tasks[cell], self.rows[cell], checkpoint, self.setup.keep)
