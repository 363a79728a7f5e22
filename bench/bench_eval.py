"""Batched evaluation: lm-eval loglikelihood requests per second on the tiny model, the general suite's
default batch size against batch size 1 (what seed 001's sweeps ran at: 1.5 h per checkpoint).

    python -m bench eval

Both sides score the same multiple-choice requests (the tiny facts tasks: context + each choice) with
the same model object, alternately, several repeats, medians.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench import alternate, line

ROOT = Path(__file__).resolve().parent.parent


def requests(limit: int = 480) -> list:
    from lm_eval.api.instance import Instance

    reqs = []
    for f in sorted((ROOT / "data" / "tiny" / "tasks").glob("*.jsonl")):
        for doc in map(json.loads, f.read_text().splitlines()):
            for choice in doc["choices"]:
                reqs.append(Instance(request_type="loglikelihood", doc=doc, arguments=(doc["query"], " " + choice), idx=len(reqs)))
    return reqs[:limit]


def main() -> None:
    import logging

    import torch
    from lm_eval.models.huggingface import HFLM

    from tunebook.compiler.schema import GeneralEval, ModelSpec
    from tunebook.runtime.models import load_model, load_tokenizer

    if not (ROOT / "models" / "tiny" / "config.json").exists():
        print("# bench_eval: models/tiny is missing (tunebook run pretrain tiny); skipped", flush=True)
        return
    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # "passed an already-initialized model", twice per side
    spec = ModelSpec(base="builtin:tiny")
    model, tok = load_model(ROOT, spec).eval(), load_tokenizer(ROOT, spec)
    default_bs = GeneralEval.model_fields["batch_size"].default

    def lm(bs: int):  # as runtime.general.eval_general builds it
        return HFLM(pretrained=model, tokenizer=tok, batch_size=bs, max_length=model.config.max_position_embeddings,
                    add_bos_token=bool(getattr(tok, "add_bos_token", False)))

    reqs = requests()
    batched, single = lm(default_bs), lm(1)
    # One thread, as in bench_sweep: two threads on the shared 2-core machine oversubscribe, and the
    # batched side (the one with work to split) then lost 3x of its speed to other engineers' jobs.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = single.loglikelihood(reqs, disable_tqdm=True)  # warm-up, and a check that batching changes no score
        got = batched.loglikelihood(reqs, disable_tqdm=True)
        worst = max(abs(a[0] - b[0]) for a, b in zip(ref, got))
        t_b, t_1 = alternate(lambda: batched.loglikelihood(reqs, disable_tqdm=True),
                             lambda: single.loglikelihood(reqs, disable_tqdm=True), repeats=5)
    finally:
        torch.set_num_threads(threads)
    print(f"# {len(reqs)} loglikelihood requests, 1 thread: batch {default_bs} {len(reqs) / t_b:.0f} req/s, "
          f"batch 1 {len(reqs) / t_1:.0f} req/s; max |delta logprob| {worst:.2e}", flush=True)
    line("eval_batched_speedup", t_1 / t_b, "x", ">=", 3)


if __name__ == "__main__":
    main()
