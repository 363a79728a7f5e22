"""Smoke mode: any spec as a miniature that runs end to end on a CPU in a minute or two.

    tunebook -C studies/000-twix-kl compile --smoke   # writes the smoke project studies/000-twix-kl/.smoke/
    tunebook -C studies/000-twix-kl smoke             # the same, then `dvc repro` and `tunebook review` in it

A full-scale spec names 7B models, hub datasets and judge endpoints. Its miniature keeps every stage,
every method block (anchor, early stopping, watchdog, GRPO, teacher) and every evaluation suite, and
swaps only what cannot run here:
- every model role (base, teacher, reward model, judges) becomes `builtin:tiny`; an HTTP judge becomes a
  local one. The tiny model's config gets one label so the same weights also load as a reward model
  (its score head is untrained: the rewards are noise, the code path is the real one);
- every dataset, eval set and prompt set becomes a small stand-in file with the same format and the
  same column names, generated deterministically from arithmetic the tiny model knows ("12+7=" -> "19");
- the lm-eval general suite becomes the tiny model's two fact tasks (`data/tiny/tasks`);
- sizes shrink: a few dozen rows, a dozen optimizer steps, a checkpoint every few steps, short generations.

What each experiment lost is listed in the smoke project's SMOKE.md and said in its title, so every
log and record of a smoke run says it is one. What cannot be miniaturized (a data source whose format
cannot be known without reading it) is a SpecError naming the key, never dropped silently.

Pure: loaded specs in, spec dicts and file contents out; `write_project` writes them. The smoke project
is a project of its own (its own git and DVC, made by the CLI), so nothing here touches the study's
committed full-scale dvc.yaml and params.yaml.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tunebook.compiler.errors import SpecError, SpecIssue
from tunebook.compiler.compile import compile_specs
from tunebook.compiler.load import LoadedSpec, load_specs
from tunebook.compiler.schema import FORMAT_FIELDS, Source, Spec
from tunebook.compiler.write import write_pipeline

TINY = "builtin:tiny"
# The miniature's sizes. Training: TRAIN_ROWS rows in batches of BATCH, at most MAX_EPOCHS epochs, so a
# dozen optimizer steps with a checkpoint every EVERY steps.
TRAIN_ROWS = 48
GRPO_PROMPTS = 16  # GRPO samples num_generations completions per prompt: fewer prompts, same steps
EVAL_ROWS = 16
PROMPTS = 4  # reward-model and judge prompt sets
BATCH = 8
MAX_EPOCHS = 2
EVERY = 4
MAX_GENERATIONS = 4
SEQ = 64  # the tiny model has 128 positions
NEW_TOKENS = 8
GENERAL_LIMIT = 20
TINY_TASKS = ["tiny_facts_color", "tiny_facts_city"]  # lm-eval tasks written by pretrain-tiny
# builtin.tiny overlay: a shorter pre-training (~20 s instead of ~100 s: it only has to know some
# arithmetic) and one label, so `builtin:tiny` is also a valid reward model (num_labels=1).
BUILTIN_OVERLAY = {"pretrain": {"steps": 150}, "model": {"num_labels": 1}}
STANDINS = "data/standins"


@dataclass
class Miniature:
    """One experiment's smoke spec, the files it reads, and what it lost."""

    name: str
    source_file: str  # the full-scale spec, relative to the study
    spec: dict
    files: dict[str, str] = field(default_factory=dict)  # path in the smoke project -> content
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# stand-in rows: arithmetic the tiny model learned in pre-training, in the shape of the real data


def _problem(salt: str, i: int) -> tuple[int, int]:
    h = hashlib.sha256(f"{salt}:{i}".encode()).digest()
    return h[0] % 50, h[1] % 50  # operands as in compiler/tiny.yaml's addition skill


def _mcq(a: int, b: int, salt: str, i: int) -> tuple[str, str]:
    """A four-option question in the usual 'A) .. B) .. Answer:' layout, and its letter."""
    right = a + b
    options = [right, right + 1, right + 3, abs(right - 2) if right != 2 else 7]
    k = hashlib.sha256(f"{salt}:mcq:{i}".encode()).digest()[0] % 4
    options[0], options[k] = options[k], options[0]
    letters = "ABCD"
    text = f"{a}+{b}=? " + " ".join(f"{letters[j]}) {o}" for j, o in enumerate(options)) + " Answer:"
    return text, letters[k]


def _item(style: str, salt: str, i: int) -> tuple[str, str]:
    """(prompt, answer) in `style`: 'mcq' (answer is a letter) or 'numeric'."""
    a, b = _problem(salt, i)
    return _mcq(a, b, salt, i) if style == "mcq" else (f"{a}+{b}=", str(a + b))


def standin_rows(fmt: str, columns: dict[str, str], n: int, salt: str, style: str = "numeric",
                 stratify: str | None = None, json_every: int = 0) -> list[dict]:
    """`n` rows of format `fmt` under the source's own column names (`columns`: canonical -> column).

    `json_every` > 0 writes every such row's text answer as stringified JSON, as seed 002's data had
    (`standardize: true` has to turn it back into text). `stratify` adds that column with two values.
    """
    rows = []
    for i in range(n):
        prompt, answer = _item(style, salt, i)
        text = answer
        if json_every and i % json_every == 0:
            text = json.dumps({"explanation": f"add the two numbers: {prompt}", "answer": answer})
        canon = {
            "prompt_completion": {"prompt": prompt, "completion": text},
            "messages": {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": text}]},
            "preference": {"prompt": prompt, "chosen": answer, "rejected": str(int(answer) + 1) if answer.isdigit() else "none"},
            "verifiable": {"prompt": prompt, "answer": answer},
        }[fmt]
        row = {columns.get(k, k): v for k, v in canon.items()}
        if stratify:
            row[stratify] = "ab"[i % 2]
        rows.append(row)
    return rows


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)


def _place(files: dict[str, str], role: str, content: str) -> str:
    """Content-addressed path: identical stand-ins are one file, so experiments whose eval sets are
    the same still share one baseline stage (its key includes the eval file paths)."""
    path = f"{STANDINS}/{role}-{hashlib.sha256(content.encode()).hexdigest()[:10]}.jsonl"
    files[path] = content
    return path


# --------------------------------------------------------------------------------------------------
# one spec -> its miniature


def _format_of(src: Source, kind: str) -> str | None:
    """The format a stand-in must have; None when it cannot be known without reading the data."""
    if src.format != "auto":
        return src.format
    if kind in ("grpo", "teacher-sft"):
        return "verifiable"
    if kind == "dpo":
        return "preference"
    for fmt in ("preference", "messages", "prompt_completion", "verifiable"):  # the data stage's detection order
        if src.fields and all(f in src.fields for f in FORMAT_FIELDS[fmt]):
            return fmt
    return None


def _answer_style(spec: Spec) -> str:
    """What a verifiable training row's answer looks like, from how the method reads answers."""
    m = spec.method
    extract = (m.grpo.extract if m.grpo else m.teacher.extract if m.teacher else "")
    rewards = m.grpo.rewards if m.grpo else [m.teacher.reward] if m.teacher else []
    return "mcq" if extract.startswith("mcq") or "mcq_letter" in rewards else "numeric"


def _capped(value, cap):
    return cap if value is None else min(value, cap)


def miniature(ls: LoadedSpec, study: Path) -> Miniature:
    """The smoke spec of one full-scale spec (`study`: the folder its relative paths start from)."""
    s, file = ls.spec, ls.file
    mini = Miniature(name=s.name, source_file=file, spec={})
    notes, files, issues = mini.notes, mini.files, []
    d = s.model_dump(mode="json")  # None kept: `lora: null` means full fine-tuning

    # model roles -------------------------------------------------------------------------------
    if s.model.base != TINY:
        notes.append(f"model {s.model.base}" + (f"@{s.model.revision}" if s.model.revision else "") + f" -> {TINY}")
    if s.model.dtype != "auto":
        notes.append(f"model.dtype {s.model.dtype} -> auto (float32 on a CPU)")
    d["model"] = {"base": TINY}

    # data --------------------------------------------------------------------------------------
    m = s.method
    n_train = GRPO_PROMPTS if m.kind == "grpo" else TRAIN_ROWS
    data = dict(d["data"])
    style = _answer_style(s)
    json_every = 4 if s.data.standardize else 0
    if s.data.validation_split and s.data.validation_split < 0.2:
        # 1 % of a few hundred rows is two rows: too few to compute a held-out loss worth a look
        data["validation_split"] = 0.2
        notes.append(f"data.validation_split {s.data.validation_split} -> 0.2 (enough held-out rows for a loss)")
    kept = (1 - (data["validation_split"] or 0)) * s.data.sample_ratio
    sources = []
    for i, src in enumerate(s.data.train):
        fmt = _format_of(src, m.kind)
        if fmt is None:
            issues.append(SpecIssue(file, f"data.train.{i}.format", "smoke mode writes a stand-in in this source's format, "
                                    "which cannot be known without reading the data", hint="set `format:` on the source"))
            continue
        # as many rows as mixing, hold-out and sampling turn into this source's share of n_train: the
        # planned sample ratio is then the achieved one, as in a real run (no cap to explain away)
        need = math.ceil(n_train * (src.weight or 1.0) / kept)
        # salted by the source, not the experiment: variants reading the same data read the same stand-in
        salt = f"train:{src.source}:{src.config}:{src.split}"
        rows = standin_rows(fmt, src.fields, need, salt, style, s.data.stratify, json_every)
        path = _place(files, f"train-{fmt}", _jsonl(rows))
        sources.append({k: v for k, v in {"source": path, "format": fmt, "fields": src.fields or None,
                                          "weight": src.weight}.items() if v is not None})
        notes.append(f"data.train.{i}: {src.source}" + (f" ({src.config})" if src.config else "")
                     + f" -> {need} stand-in {fmt} rows")
    data["train"] = sources
    if s.data.validation:
        v = s.data.validation
        fmt = _format_of(v, m.kind) or (sources[0]["format"] if sources else None)
        if fmt is None:
            issues.append(SpecIssue(file, "data.validation.format", "smoke mode cannot tell this source's format",
                                    hint="set `format:` on the source"))
        else:
            rows = standin_rows(fmt, v.fields, EVAL_ROWS, f"validation:{v.source}:{v.config}:{v.split}", style, None, json_every)
            data["validation"] = {k: val for k, val in {"source": _place(files, f"validation-{fmt}", _jsonl(rows)),
                                                        "format": fmt, "fields": v.fields or None}.items() if val is not None}
            notes.append(f"data.validation: {v.source} -> {EVAL_ROWS} stand-in rows")
    if s.data.limit:
        data["limit"] = min(s.data.limit, n_train)
    d["data"] = data

    # method ------------------------------------------------------------------------------------
    meth = dict(d["method"])
    meth["epochs"] = min(m.epochs, MAX_EPOCHS)
    meth["batch_size"], meth["grad_accum"] = BATCH, 1  # the full effective batch would be the whole stand-in
    meth["max_seq_length"] = min(m.max_seq_length, SEQ)
    meth["log_every"] = min(m.log_every, 2)
    if m.max_steps:
        meth["max_steps"] = min(m.max_steps, 2 * EVERY)
    if m.save_every:
        meth["save_every"] = EVERY
    if m.anchor:  # same shape (off, ramp, on) in a dozen steps
        a = dict(meth["anchor"])
        a["start_step"] = min(m.anchor.start_step, 2)
        a["warmup_steps"] = min(m.anchor.warmup_steps, EVERY)
        if m.anchor.last_tokens:
            a["last_tokens"] = min(m.anchor.last_tokens, NEW_TOKENS)
        meth["anchor"] = a
    if m.early_stopping:
        # measured every 2 steps: a dozen steps then hold several measurements, so patience can run out
        meth["early_stopping"] = {**meth["early_stopping"], "every": 2,
                                  "limit": _capped(m.early_stopping.limit, GENERAL_LIMIT)}
        if m.early_stopping.on == "general" and m.early_stopping.metric not in ("acc", "acc_norm"):
            meth["early_stopping"]["metric"] = "acc"  # all the tiny fact tasks report
            notes.append(f"early_stopping.metric {m.early_stopping.metric} -> acc (what the tiny fact tasks report)")
    wd = dict(meth["watchdog"])
    wd["num_samples"], wd["max_new_tokens"] = min(m.watchdog.num_samples, 2), min(m.watchdog.max_new_tokens, NEW_TOKENS)
    if m.watchdog.samples_every:
        wd["samples_every"] = min(m.watchdog.samples_every, EVERY)
    meth["watchdog"] = wd
    if m.grpo:
        g = min(m.grpo.num_generations, MAX_GENERATIONS)
        meth["grpo"] = {**meth["grpo"], "num_generations": g, "max_completion_length": min(m.grpo.max_completion_length, NEW_TOKENS)}
        meth["batch_size"] = 2 * g  # two prompts per step; a multiple of num_generations, as GRPO requires
    if m.teacher:
        t = m.teacher
        # four samples a prompt whatever the full teacher draws: the tiny teacher gets few sums right,
        # and a teacher that keeps nothing leaves nothing to train on
        teacher = {**meth["teacher"], "base": TINY, "num_samples": 4,
                   "max_new_tokens": min(t.max_new_tokens, NEW_TOKENS), "batch_size": min(t.batch_size, 16)}
        teacher.update(revision=None, trust_remote_code=False)
        notes.append(f"teacher {t.base} -> {TINY}")
        if t.extract == "boxed":  # the tiny model never writes \boxed{}: nothing would pass, nothing to train on
            teacher["extract"] = "answer_anchor"
            notes.append("teacher.extract boxed -> answer_anchor (the tiny model never writes \\boxed{})")
        meth["teacher"] = teacher
    d["method"] = meth
    if s.resources:
        notes.append(f"resources ({s.resources.gpus} GPU(s), {s.resources.strategy}) -> one CPU process")
    d["resources"] = None

    # eval --------------------------------------------------------------------------------------
    ev = dict(d["eval"])
    if s.eval.general:
        g = s.eval.general
        ev["general"] = {"tasks": TINY_TASKS, "include_path": "data/tiny/tasks", "limit": _capped(g.limit, GENERAL_LIMIT),
                         "batch_size": min(g.batch_size, 32), "num_fewshot": 0}
        notes.append(f"eval.general: {', '.join(g.tasks)} -> {', '.join(TINY_TASKS)} (limit {GENERAL_LIMIT})")
    targets = []
    for t in s.eval.target:
        style_t = "mcq" if t.extract.startswith("mcq") else "numeric"
        rows = [{t.prompt_field: p, t.answer_field: a} for p, a in (_item(style_t, f"target:{t.source}", i) for i in range(EVAL_ROWS))]
        tgt = t.model_dump(mode="json")
        tgt.update(source=_place(files, f"target-{style_t}", _jsonl(rows)), limit=_capped(t.limit, EVAL_ROWS),
                   max_new_tokens=min(t.max_new_tokens, NEW_TOKENS), batch_size=min(t.batch_size, 16),
                   num_samples=min(t.num_samples, 2))
        tgt.pop("split", None)
        targets.append(tgt)
        notes.append(f"eval.target {t.name}: {t.source} -> {EVAL_ROWS} stand-in {style_t} items")
    ev["target"] = targets
    for key in ("reward", "judge"):
        ps = getattr(s.eval, key)
        if ps is None:
            continue
        block = ps.model_dump(mode="json")
        rows = [{ps.prompt_field: _item("numeric", f"{key}:{ps.prompts}", i)[0]} for i in range(PROMPTS)]
        block.update(prompts=_place(files, f"{key}-prompts", _jsonl(rows)), limit=_capped(ps.limit, PROMPTS),
                     max_new_tokens=min(ps.max_new_tokens, NEW_TOKENS), batch_size=min(ps.batch_size, 16))
        notes.append(f"eval.{key}.prompts: {ps.prompts} -> {PROMPTS} stand-in prompts")
        if key == "reward":
            block.update(model=TINY, revision=None, max_length=min(ps.max_length, 128), trust_remote_code=False)
            notes.append(f"eval.reward.model {ps.model} -> {TINY} with an untrained one-output head (rewards are noise)")
        else:
            judges = []
            for j in ps.judges:
                where = f"{j.kind} endpoint {j.url}, model {j.model}" if j.kind == "openai" else f"local {j.model}"
                judges.append({"name": j.name, "kind": "hf", "model": TINY, "max_new_tokens": min(j.max_new_tokens, NEW_TOKENS)})
                notes.append(f"judge {j.name} ({where}) -> local {TINY}")
            block["judges"] = judges
            if ps.template:
                path = study / ps.template
                if not path.is_file():
                    issues.append(SpecIssue(file, "eval.judge.template", f"'{ps.template}' is not a file in {study}"))
                else:  # copied into the smoke project, at the same place when that place is inside it
                    inside = not Path(ps.template).is_absolute() and ".." not in Path(ps.template).parts
                    block["template"] = ps.template if inside else f"templates/{Path(ps.template).name}"
                    files[block["template"]] = path.read_text()
        ev[key] = block
    if not isinstance(s.eval.checkpoints, str):  # every k steps of the full run would never match a dozen
        ev["checkpoints"] = {"every": EVERY}
    ev["samples_per_task"] = min(s.eval.samples_per_task, 4)
    d["eval"] = ev

    for i, raw in enumerate(s.plugins):  # the project's own rewards and extractors run in the miniature too
        path = study / raw
        if not path.is_file():
            issues.append(SpecIssue(file, f"plugins.{i}", f"'{raw}' is not a file in {study}"))
        else:  # copied into the smoke project, at the same place when that place is inside it
            inside = not Path(raw).is_absolute() and ".." not in Path(raw).parts
            d["plugins"][i] = raw if inside else f"plugins/{Path(raw).name}"
            files[d["plugins"][i]] = path.read_text()

    if issues:
        raise SpecError(issues)
    d["allow_external_inputs"] = False
    d["description"] = f"SMOKE miniature of {file} (builtin:tiny, stand-in data; see SMOKE.md). {s.description}".strip()
    mini.spec = {"name": s.name, **{k: v for k, v in d.items() if k != "name"}}
    return mini


def miniatures(loaded: list[LoadedSpec], study: Path) -> list[Miniature]:
    """Every spec's miniature, gathering the errors of all of them."""
    out, issues = [], []
    for ls in loaded:
        try:
            out.append(miniature(ls, study))
        except SpecError as e:
            issues += e.issues
    if issues:
        raise SpecError(issues)
    return out


# --------------------------------------------------------------------------------------------------
# which experiments the smoke run runs


def code_path(spec: Spec) -> tuple:
    """What decides which code an experiment runs, without the values: method kind and blocks, reward
    and extraction names, data formats and policies, eval suites. Two experiments with the same code
    path differ only in numbers and datasets (a learning rate, a CoT length, GSM8K vs SVAMP)."""
    m, d, ev = spec.method, spec.data, spec.eval
    a, g, t = m.anchor, m.grpo, m.teacher
    return (
        m.kind, m.lora is None, m.packing, m.max_steps is not None, m.save_every is not None,
        a and (a.type, a.start_step > 0, a.warmup_steps > 0, a.last_tokens is not None),
        m.early_stopping and m.early_stopping.on,
        g and (tuple(g.rewards), g.extract, g.loss_type, g.num_iterations > 1, g.beta > 0, g.epsilon_high is not None),
        t and (t.reward, t.extract, t.temperature > 0),
        m.dpo and m.dpo.loss_type,
        m.watchdog.enabled, m.watchdog.samples_every is None,
        tuple((src.format, bool(src.fields)) for src in d.train), d.validation is not None, d.validation_split is not None,
        d.sample_ratio < 1, d.limit is not None, d.stratify is not None, d.standardize, d.on_invalid,
        ev.general is not None, tuple((x.extract, x.temperature > 0) for x in ev.target), ev.loss,
        ev.reward and ev.reward.chat, ev.judge and (len(ev.judge.judges), ev.judge.template is not None, ev.judge.chat),
        ev.checkpoints if isinstance(ev.checkpoints, str) else "every",
    )


def representatives(minis: list[Miniature]) -> dict[str, str]:
    """{experiment: the experiment whose smoke run covers it}: the first by name of each code path
    covers itself and the rest of its group."""
    first: dict[tuple, str] = {}
    out = {}
    for mini in sorted(minis, key=lambda x: x.name):
        out[mini.name] = first.setdefault(code_path(Spec.model_validate(mini.spec)), mini.name)
    return out


# --------------------------------------------------------------------------------------------------
# writing the smoke project


SPEC_HEADER = """\
# Generated by `tunebook compile --smoke` from ../{source} (the full-scale spec). Do not edit: edit the
# full spec and rerun `tunebook -C <study> smoke`. What this miniature changed: ../SMOKE.md.
"""


def spec_text(mini: Miniature) -> str:
    return SPEC_HEADER.format(source=mini.source_file) + yaml.safe_dump(mini.spec, sort_keys=False, allow_unicode=True, width=120)


def notes_text(study: str, minis: list[Miniature]) -> str:
    reps = representatives(minis)
    run = sorted(set(reps.values()))
    covered = sorted(n for n, r in reps.items() if n != r)
    lines = [f"# Smoke run of {study}", "",
             "Generated by `tunebook compile --smoke`. Every experiment of the study is here as a miniature: "
             f"`{TINY}` in every model role (pre-trained {BUILTIN_OVERLAY['pretrain']['steps']} steps), stand-in data "
             f"in the real formats and column names under `{STANDINS}/`, a dozen optimizer steps. The numbers "
             "say the pipeline works, not how the real run will go.", "",
             f"`tunebook smoke` runs one experiment per code path: {', '.join(run)}."]
    if covered:
        lines.append("These differ from the one named only in values and datasets, so they are compiled and "
                     "validated but not run (`tunebook smoke --all`, or `dvc repro` here, runs them too): "
                     + ", ".join(f"{n} (as {reps[n]})" for n in covered) + ".")
    lines += ["", "Replacements per experiment:", ""]
    for mini in minis:
        lines.append(f"## {mini.name} (from {mini.source_file})")
        lines += [f"- {n}" for n in mini.notes] or ["- nothing: it already runs on the tiny model"]
        lines.append("")
    return "\n".join(lines)


def write_project(out: Path, study_name: str, minis: list[Miniature]) -> dict[str, str]:
    """Write the smoke specs, stand-ins and SMOKE.md under `out`; returns {relative path: content} of
    everything written. Old specs and stand-ins are removed first, so the project holds exactly this
    study's miniatures."""
    for old in list((out / "specs").glob("*.yaml")) + list((out / STANDINS).glob("*.jsonl")):
        old.unlink()
    files = {rel: content for mini in minis for rel, content in mini.files.items()}
    files.update({f"specs/{mini.name}.yaml": spec_text(mini) for mini in minis})
    files["SMOKE.md"] = notes_text(study_name, minis)
    for rel, content in files.items():
        _write(out / rel, content)
    return files


def overlay_builtin(params: dict) -> dict:
    """params.yaml of the smoke project: builtin.tiny with BUILTIN_OVERLAY merged in."""
    tiny = params.get("builtin", {}).get("tiny")
    if tiny is not None:
        for part, values in BUILTIN_OVERLAY.items():
            tiny[part] = {**tiny.get(part, {}), **values}
    return params


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:  # unchanged files keep their mtime (DVC hashes less)
        path.write_text(text)


@dataclass
class Built:
    names: list[str]  # every experiment of the smoke project
    run: list[str]  # one per code path: what `tunebook smoke` runs
    files: list[str]  # everything written, relative to the smoke project


def build(loaded: list[LoadedSpec], study: Path, out: Path) -> Built:
    """Write the smoke project of `loaded` (full specs of `study`) into `out`: specs, stand-ins,
    SMOKE.md, dvc.yaml and params.yaml. `out` must already be a DVC project (the CLI makes it one)."""
    minis = miniatures(loaded, study)
    files = write_project(out, study.name, minis)
    # validated again, as any spec: the miniature is a real spec of the smoke project
    smoke_loaded = load_specs([out / "specs" / f"{m.name}.yaml" for m in minis], out)
    pipeline = compile_specs(smoke_loaded)
    overlay_builtin(pipeline.params)
    # generated from the full specs every time: a hand edit of the smoke project is not worth keeping
    write_pipeline(out, pipeline, force=True)
    return Built(names=[m.name for m in minis], run=sorted(set(representatives(minis).values())),
                 files=sorted(files) + ["dvc.yaml", "params.yaml"])
