"""Before a GRPO run: would its groups carry any signal? Samples the base model the way GRPO does in
specs/arith-grpo.yaml (each training problem as one chat turn, `--generations` completions of 8 new
tokens at `--temperature`) and scores them with the run's own reward (`numeric_match` on the first
number, runtime/rewards.py). A group whose completions all score alike gives GRPO zero advantage.

    cd examples/smollm2 && python grpo_probe.py --generations 16 --temperature 1.5 --prompts 12

Needs models/smollm2-135m-instruct (`dvc repro pretrain-smollm2-135m-instruct`). One torch thread, seed 0.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunebook.runtime.chat import chat_prompt
    from tunebook.runtime.extract import EXTRACTORS
    from tunebook.runtime.rewards import numeric_match

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generations", type=int, default=4)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--prompts", type=int, default=12, help="the first N training problems")
    ap.add_argument("--max-new-tokens", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    path = HERE / "models" / "smollm2-135m-instruct"
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    rows = [json.loads(line) for line in (HERE / "data" / "arith_train_verifiable.jsonl").open()][: args.prompts]
    extract, g = EXTRACTORS["first_number"], args.generations
    start, hits, lead = time.time(), [], []
    for i in range(0, len(rows), 4):
        batch = rows[i:i + 4]
        enc = tok([chat_prompt(tok, r["prompt"]) for r in batch], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, do_sample=True, temperature=args.temperature, top_p=1.0, max_new_tokens=args.max_new_tokens,
                                 num_return_sequences=g, pad_token_id=tok.pad_token_id)
        texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        for j, r in enumerate(batch):
            group = texts[j * g:(j + 1) * g]
            hits.append(int(sum(numeric_match(t, r["answer"], extract) for t in group)))
            lead += [t for t in group if t.lstrip()[:1].isdigit()]
    n = g * len(rows)
    print(json.dumps({"generations": g, "temperature": args.temperature, "prompts": len(rows), "seconds": round(time.time() - start),
                      "right": f"{sum(hits)}/{n}", "right_per_group": hits,
                      "groups_with_signal": f"{sum(0 < h < g for h in hits)}/{len(rows)}",
                      "start_with_a_digit": f"{len(lead)}/{n}", "examples": lead[:4]}))


if __name__ == "__main__":
    main()
