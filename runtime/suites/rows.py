"""What suites read: rows of a local file with their fields checked (target tasks), the prompts of a
reward or judge prompt set, and the greedy answers of a model to a prompt set, cached. Every reading
error is a SpecError naming the params.yaml key, raised by a suite's `check()` before any model loads.
"""

from __future__ import annotations

from pathlib import Path

from tunebook.compiler.errors import SpecError, SpecIssue, did_you_mean
from tunebook.compiler.schema import PromptSet
from tunebook.files import dict_sha256, write_json_atomic
from tunebook.runtime.cells import read_cell
from tunebook.runtime.generation import generate
from tunebook.runtime.sources import read_local


def read_rows(root: Path, source: str, key: str) -> list[dict]:
    path = root / source
    if not path.is_file():
        raise SpecError([SpecIssue("params.yaml", key, f"'{source}' does not exist")])
    try:
        return read_local(path)
    except ValueError as e:
        raise SpecError([SpecIssue("params.yaml", key, str(e))]) from None


def check_field(rows: list[dict], field: str, source: str, key: str) -> None:
    if not rows:
        raise SpecError([SpecIssue("params.yaml", key, f"'{source}' has no rows")])
    if field not in rows[0]:
        raise SpecError([SpecIssue("params.yaml", key, f"no field '{field}' in {source}",
                                   hint=did_you_mean(field, rows[0].keys()) or f"fields: {', '.join(rows[0])}")])


def load_prompts(root: Path, ps: PromptSet, key: str) -> list[str]:
    """The prompts of a reward/judge prompt set; an empty file or a blank prompt is a spec error."""
    rows = read_rows(root, ps.prompts, f"{key}.prompts")
    check_field(rows, ps.prompt_field, ps.prompts, f"{key}.prompt_field")
    prompts = [str(r.get(ps.prompt_field) or "") for r in rows][: ps.limit or None]
    blank = [i + 1 for i, p in enumerate(prompts) if not p.strip()]
    if blank:
        raise SpecError([SpecIssue("params.yaml", f"{key}.prompts", f"{ps.prompts}: empty prompt in row(s) {blank[:10]}")])
    return prompts


def answers(out: Path, model, tok, weights_fp: str, ps: PromptSet, prompts: list[str]) -> list[str]:
    """A prompt set's greedy answers, cached below `<out>/_cache/generations/` by (weights, generation
    settings, prompts): the reward and judge cells share them, and a resumed judge cell sees exactly
    the answers it judged."""
    # chat as asked (an unset one, outside a compiled spec, is raw); the system prompt only when given, so
    # the answers cached before it existed keep their key
    gen = {"chat": bool(ps.chat), "max_new_tokens": ps.max_new_tokens, **({"system": ps.system} if ps.system is not None else {})}
    path = out / "_cache" / "generations" / f"{dict_sha256([weights_fp, gen, prompts])[:32]}.json"
    cached = read_cell(path, "answers")
    if cached:
        return cached["answers"]
    found = [a[0] for a in generate(model, tok, prompts, ps.max_new_tokens, ps.batch_size, chat=bool(ps.chat),
                                    system=ps.system)]
    write_json_atomic(path, {"fingerprint": "answers", "answers": found})
    return found
