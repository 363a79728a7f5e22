"""Shaping the checked rows into training and validation sets, and comparing them with evaluation sets.

- `allocate`, `take`: seeded selection by KEY, stratified by groups that share a quota by their sizes;
  the data stage uses `take` to hold out validation rows and to sample and cap the training rows;
- `mix`: each source's part of the mixture, by weight;
- contamination: `prompts_of` (what each row asks), `Contamination` (training prompts indexed once and
  compared with an evaluation set, exactly and normalized), `eval_prompts` (the prompts an eval.target
  task will be asked) and `same_source`.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from tunebook.compiler.errors import did_you_mean
from tunebook.compiler.schema import Source
from tunebook.runtime.checks import KEY, STRATUM
from tunebook.runtime.sources import ROW, Where, load_source


# ---------------------------------------------------------------------------------------------------
# mixing, hold-out, sampling, capping


def allocate(sizes: list[int], n: int) -> list[int]:
    """Split n across groups in proportion to their sizes (largest remainder, ties to the earlier
    group), never more than a group has."""
    total = sum(sizes)
    n = min(max(n, 0), total)
    if not n:
        return [0] * len(sizes)
    exact = [n * s / total for s in sizes]
    out = [int(e) for e in exact]
    by_remainder = sorted(range(len(sizes)), key=lambda i: (out[i] - exact[i], i))
    for i in by_remainder[: n - sum(out)]:
        out[i] += 1
    return out


def take(rows: pl.DataFrame, n: int, by: list[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(n rows, the rest): the lowest-KEY rows of each group `by`, groups sharing n by their sizes."""
    if not by:
        rows = rows.with_columns(_g=pl.lit(0))
        by = ["_g"]
    groups = rows.group_by(by).len().sort(by)
    groups = groups.with_columns(_quota=pl.Series(allocate(groups["len"].to_list(), n), dtype=pl.Int64))
    ranked = rows.join(groups.select(*by, "_quota"), on=by, how="left", maintain_order="left").with_columns(
        _rank=pl.col(KEY).rank("ordinal").over(by))
    chosen = pl.col("_rank") <= pl.col("_quota")
    extra = ["_rank", "_quota"] + (["_g"] if by == ["_g"] else [])
    return ranked.filter(chosen).drop(extra), ranked.filter(~chosen).drop(extra)


def mix(skeletons: list[pl.DataFrame], weights: list[float], stratify: bool) -> list[pl.DataFrame]:
    """Each source's part of the mixture: the largest mixture the weights allow without repeating a row
    (the source with the fewest rows for its weight sets the size), sampled within each source."""
    total = min(s.height / w for s, w in zip(skeletons, weights))
    return [take(s, min(s.height, int(total * w + 0.5)), [STRATUM] if stratify else [])[0] for s, w in zip(skeletons, weights)]


# ---------------------------------------------------------------------------------------------------
# contamination: training prompts that also appear in an evaluation set


def _normalized(text: pl.Expr) -> pl.Expr:
    """Case, punctuation and spacing ignored ('What is 2+2?' ~ 'what is 2 + 2'); words and numbers kept
    apart ('27-1=' and '2-71=' stay different)."""
    return text.str.to_lowercase().str.replace_all(r"[^\w]+", " ").str.strip_chars()


def prompts_of(rows: pl.DataFrame, fmt: str) -> pl.Series:
    """What the model is asked in each row: the prompt, or the user turns of a conversation."""
    if fmt == "messages":
        user = pl.element().filter(pl.element().struct.field("role") == "user").struct.field("content")
        return rows.select(pl.col("messages").list.eval(user).list.join("\n")).to_series()
    return rows["prompt"]


class Contamination:
    """Training prompts, indexed once (as 64-bit hashes: small and fast), compared with evaluation sets."""

    def __init__(self, train_prompts: pl.Series):
        p = train_prompts.to_frame("p")
        self.exact = p.select(pl.col("p").hash()).to_series().unique()
        self.normal = p.select(_normalized(pl.col("p"))).filter(pl.col("p") != "").select(pl.col("p").hash()).to_series().unique()

    def check(self, prompts: pl.Series, source: str) -> dict:
        ev = prompts.cast(pl.String).to_frame("p").with_columns(n=_normalized(pl.col("p")))
        found = ev.select(exact=pl.col("p").hash().is_in(self.exact.implode()),
                          normal=pl.col("n").hash().is_in(self.normal.implode()) & (pl.col("n") != ""))
        examples = ev.filter(found["normal"])["p"].head(3).to_list()
        return {"source": source, "n": ev.height, "exact": int(found["exact"].sum()), "normalized": int(found["normal"].sum()),
                "examples": [e if len(e) <= 200 else e[:200] + "..." for e in examples]}


def same_source(root: Path, src: Source, task) -> bool:
    """Does an eval.target task read the very data `src` names (the same file, or hub split)?"""
    if src.source.startswith("hf:") or task.source.startswith("hf:"):
        return src.source == task.source and src.split == task.split
    return (root / src.source).resolve() == (root / task.source).resolve()


def eval_prompts(root: Path, where: Where, task) -> pl.Series:
    """The prompts an eval.target task will be asked (its first `limit` rows)."""
    loaded = load_source(root, Source(source=task.source, split=task.split), where, where.key)
    columns = [c for c in loaded.frame.columns if c != ROW]
    if task.prompt_field not in columns:
        raise where.error("prompt_field", f"no column '{task.prompt_field}' in {task.source}",
                          hint=did_you_mean(task.prompt_field, columns) or f"columns: {', '.join(columns)}")
    s = loaded.frame[task.prompt_field].head(task.limit) if task.limit else loaded.frame[task.prompt_field]
    return s if s.dtype == pl.String or s.dtype.is_numeric() else pl.Series([str(v) for v in s.to_list()])
