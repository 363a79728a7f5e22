"""The teacher stage of teacher-SFT (seed 001's SF-SFT): sample solutions, keep the verified ones.

    tunebook run teacher <exp>     # what the `teacher-<exp>` DVC stage runs (before train-<exp>)

    method:
      kind: teacher-sft
      teacher: {base: builtin:tiny, num_samples: 4, temperature: 0.7, max_new_tokens: 64,
                reward: numeric_match, extract: first_number, keep_per_prompt: 1}

For every training row {prompt, answer} the teacher samples `num_samples` completions; a completion
passes when the named reward (runtime/rewards.py) gives it 1 — rejection sampling. The distinct
passing completions (up to `keep_per_prompt` per prompt) become the SFT rows.

How the teacher is asked: `teacher.chat` (and `teacher.system`), unset resolved at compile time like the
target tasks' from the training format (chat when a train source has `format: messages`; teacher-SFT's
verifiable rows make it raw unless set). Either way a kept row is the training row's own prompt and the
teacher's completion, never the rendered template: the train stage reads {prompt, completion}.

Writes `runs/<exp>/teacher/` (atomically, a temporary folder renamed into place): `train.jsonl`
({prompt, completion}: what train-<exp> fine-tunes on), `samples.jsonl` (every sample with its
reward, for inspection) and `manifest.json` (counts and the pass rate: seed 001's "3,151 samples,
43% pass rate" is exactly what this records). Its own DVC stage, so the generation is cached: changing
an SFT setting retrains without sampling again.
"""

from __future__ import annotations

import json
import time

from tunebook.compiler.errors import SpecError, SpecIssue
from tunebook.compiler.schema import ModelSpec
from tunebook.runtime.folders import replacing
from tunebook.runtime.progress import Progress
from tunebook.files import read_jsonl
from tunebook.runtime import generation, plugins
from tunebook.runtime.context import StageContext
from tunebook.runtime.models import device, load_model, load_tokenizer
from tunebook.runtime.rewards import bind, check_names, normalize_completion


def generate(model, tok, prompts: list[str], t, seed: int) -> list[list[str]]:
    """`t.num_samples` completions per prompt (sampled, or greedy at temperature 0), all in one batch,
    with no top-p/top-k cut: rejection sampling wants the model's own distribution. With `t.chat` each
    prompt is one user turn (after `t.system`) through the teacher's chat template; else the raw prompt."""
    return generation.generate(model, tok, prompts, t.max_new_tokens, batch_size=len(prompts), temperature=t.temperature,
                               num_samples=t.num_samples, seed=seed, top_p=None, top_k=None,
                               chat=bool(t.chat), system=t.system)


def select(rows: list[dict], samples: list[list[str]], t) -> tuple[list[dict], list[dict]]:
    """(SFT rows, every sample with its verdict). Pure: rejection sampling by the named reward."""
    fn = bind(t.reward, t.extract, t.answer_transform)
    kept, log = [], []
    for row, outs in zip(rows, samples):
        seen: set[str] = set()
        for text in outs:
            r = fn(text, row["answer"], prompt=row["prompt"])
            key = normalize_completion(text)
            keep = r >= 1.0 and key not in seen and (t.keep_per_prompt is None or len(seen) < t.keep_per_prompt)
            if keep:
                seen.add(key)
                kept.append({"prompt": row["prompt"], "completion": text})
            log.append({"prompt": row["prompt"], "answer": str(row["answer"]), "completion": text, "reward": r, "kept": keep})
    return kept, log


def run(ctx: StageContext) -> None:
    t = ctx.spec.method.teacher
    plugins.load(ctx.root, ctx.spec.plugins)  # the project's rewards and extractors, before names are looked up
    check_names([t.reward], f"{ctx.name}.method.teacher.reward")
    rows = read_jsonl(ctx.data_dir / "train.jsonl")
    if rows and not all(k in rows[0] for k in ("prompt", "answer")):
        raise SpecError([SpecIssue("params.yaml", f"{ctx.name}.data.train", "teacher-sft needs verifiable rows {prompt, answer}",
                                   hint="set `format: verifiable` (and `fields: {answer: <column>}`) on the data source")])
    t0 = time.time()
    spec = ModelSpec(base=t.base, revision=t.revision, trust_remote_code=t.trust_remote_code)
    model, tok = load_model(ctx.root, spec).to(device()).eval(), load_tokenizer(ctx.root, spec)
    if t.chat and not getattr(tok, "chat_template", None):
        raise SpecError([SpecIssue("params.yaml", f"{ctx.name}.method.teacher.chat",
                                   f"the teacher {t.base} has no chat template to ask through",
                                   hint="set `chat: false` (and no `system`), or use an instruct teacher")])
    io_s = time.time() - t0

    prog = Progress(f"teacher {ctx.name}", len(rows), "prompts")
    samples: list[list[str]] = []
    for i in range(0, len(rows), t.batch_size):
        batch = rows[i : i + t.batch_size]
        samples += generate(model, tok, [r["prompt"] for r in batch], t, t.seed + i)
        prog.update(len(samples))
    kept, log = select(rows, samples, t)

    n_samples, passed = len(log), sum(1 for s in log if s["reward"] >= 1.0)
    prompts_passed = len({s["prompt"] for s in log if s["reward"] >= 1.0})
    manifest = {"teacher": t.model_dump(mode="json"), "format": "chat" if t.chat else "raw",
                "prompts": len(rows), "samples": n_samples, "passed": passed,
                "pass_rate": round(passed / n_samples, 6) if n_samples else None,
                "prompts_with_a_pass": prompts_passed, "kept_rows": len(kept),
                "seconds": {"generation": round(time.time() - t0 - io_s, 2), "model_io": round(io_s, 2)}}
    with replacing(ctx.run_dir / "teacher") as tmp:
        for name, items in (("train", kept), ("samples", log)):
            with (tmp / f"{name}.jsonl").open("w") as f:
                for r in items:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"[teacher {ctx.name}] {passed}/{n_samples} samples passed '{t.reward}' (pass rate {manifest['pass_rate']}), "
          f"{prompts_passed}/{len(rows)} prompts solved, {len(kept)} rows kept -> runs/{ctx.name}/teacher/. "
          f"Next: train-{ctx.name}", flush=True)
