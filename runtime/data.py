"""The data stage: read pinned sources, check every row, mix, hold out, sample, write.

    tunebook run data <exp>        # what the `data-<exp>` DVC stage runs

1. Read each source (local .jsonl/.json/.csv/.parquet files, DVC-tracked or not; local dataset folders;
   `hf:` datasets through runtime/hub.py) and record where it came from: sha256, the DVC md5 when DVC
   tracks it, the commit a hub revision resolved to.
2. Check every row against its format (prompt_completion, messages, preference, verifiable), count the
   JSON kinds of each field (the type census), convert or reject by policy. A rejected row goes to
   `quarantine.jsonl` with its reason; nothing is dropped silently.
3. Mix the sources by weight, hold out validation rows if asked, sample and cap: seeded, and stratified
   by source (and by `stratify:`) so the mixture and the strata survive every step.
4. Compare the training prompts with every evaluation set (validation and eval.target tasks).
5. Write `data/<exp>/` atomically, with `manifest.json`: planned vs actual counts, ratios and weights.
   Seed 000's bug (sample_ratio 0.25 that silently ran on 100 %) shows up there as planned != actual.

The heavy path is columnar: pyarrow parses, polars checks. Python touches only the rows that need it:
stringified-JSON candidates, values to convert, and files whose columns mix JSON kinds. pyarrow refuses
such a file instead of coercing it (polars' own reader would turn an object into its JSON text, which
looks exactly like seed 002's stringified JSON), and those files are then read row by row.
docs/data.md describes the spec keys, the policies and every manifest field.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from tunebook.compiler.errors import SpecError, SpecIssue, did_you_mean
from tunebook.compiler.schema import FORMAT_FIELDS, DataSpec, Source
from tunebook.compiler.inputs import DETECT_ORDER, format_problem
from tunebook.runtime.folders import replacing
from tunebook.runtime.context import StageContext
from tunebook.runtime.kinds import kind_of, render_text, rejection
from tunebook.runtime.sources import ROW, Loaded, Where, load_source
from tunebook.files import file_sha256

ROLES = ("system", "user", "assistant", "tool")
MESSAGES = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))
# internal columns, never written: a row's sort key, stratum, source, and position among all checked
# rows (what the final gather uses)
KEY, STRATUM, SOURCE, POS = "__key", "__stratum", "__source", "__pos"
MISSING = "(missing)"  # the stratum of rows without a value in the stratify column

# what can be wrong inside a conversation, in the order it is reported when several things are
TURN_PROBLEMS = {
    "shape": "has a turn that is not a {role, content} object",
    "role": f"has a role outside {'/'.join(ROLES)}",
    "content": "has a turn whose content is empty or not text",
    "json": "has a turn whose content is stringified JSON (standardize: true renders it)",
    "last": "does not end with an assistant turn",
}


@dataclass
class Checked:
    """One source after the row checks: its rows in canonical columns (plus ROW, KEY, STRATUM) and
    `_valid`; the invalid ones are in `quarantine` with their reasons."""

    rows: pl.DataFrame
    quarantine: list[dict]
    census: dict[str, dict[str, int]]  # source column -> JSON kind -> rows
    converted: int  # kept rows with a value converted to text


@dataclass
class Prepared:
    train: pl.DataFrame  # canonical columns only, in their final order
    validation: pl.DataFrame
    quarantine: list[dict]
    manifest: dict


# ---------------------------------------------------------------------------------------------------
# checking rows. A field's verdict per row is (kind, value, reason, converted): reason None means the
# value is kept. Columnar checks decide almost every row; the few they cannot decide (stringified-JSON
# candidates, values to convert, mixed-kind columns) are decided in Python by the reference functions.


@dataclass
class Verdicts:
    """One field's verdicts: `table` for every row from the columnar checks, and `redo`, the rows
    decided in Python instead (`_i`, their position; same columns), which replace theirs in `table`."""

    table: pl.DataFrame
    redo: pl.DataFrame


def _in_python(s: pl.Series, idx: pl.Series, check, dtype) -> pl.DataFrame:
    """`check(value) -> (kind, value, reason, converted)` for the rows at positions `idx`."""
    verdicts = [check(v) for v in s.gather(idx).to_list()]
    kinds, values, reasons, converted = zip(*verdicts) if verdicts else ((), (), (), ())
    return pl.DataFrame([pl.Series("_i", idx, dtype=pl.Int64), pl.Series("kind", kinds, dtype=pl.String),
                         pl.Series("value", values, dtype=dtype), pl.Series("reason", reasons, dtype=pl.String),
                         pl.Series("converted", converted, dtype=pl.Boolean)])


def _all_in_python(s: pl.Series, check, dtype) -> Verdicts:
    """Objects, lists, booleans and mixed-kind columns: every row in Python."""
    n = len(s)
    nothing = pl.DataFrame([pl.repeat(None, n, dtype=pl.String, eager=True).alias("kind"), pl.repeat(None, n, dtype=dtype, eager=True).alias("value"),
                            pl.repeat(None, n, dtype=pl.String, eager=True).alias("reason"), pl.repeat(False, n, eager=True).alias("converted")])
    return Verdicts(nothing, _in_python(s, pl.int_range(n, dtype=pl.Int64, eager=True), check, dtype))


def _blank(text: pl.Expr) -> pl.Expr:
    return ~text.str.contains(r"\S")


def _looks_like_json(text: pl.Expr) -> pl.Expr:
    """Columnar pre-filter for stringified JSON (starts with {, [ or a quote and ends with its match, give
    or take spaces); `_parses_as_json` confirms each hit."""
    return text.str.contains(r'^\s*[\[{"]') & text.str.contains(r'[\]}"]\s*$')


def check_text(s: pl.Series, column: str, standardize: bool, numbers_ok: bool = False) -> Verdicts:
    """A text field. Plain strings pass; null and empty never do; stringified JSON, objects, lists and
    numbers pass converted when `standardize` (numbers also when `numbers_ok`: a reference answer)."""

    def check(v):
        kind = kind_of(v)
        if kind == "string":
            return kind, v, None, False
        if (kind == "number" and (standardize or numbers_ok)) or (standardize and kind in ("json_string", "dict", "list")):
            text = render_text(json.loads(v) if kind == "json_string" else v)
            if text.strip():
                return kind, text, None, True
            return kind, None, f"'{column}' is empty once standardized", False
        return kind, None, rejection(kind, column), False

    t = pl.col("s")
    if s.dtype == pl.String:
        table = s.to_frame("s").select(
            kind=pl.when(t.is_null()).then(pl.lit("null")).when(_blank(t)).then(pl.lit("empty")).otherwise(pl.lit("string")),
            value=t, converted=pl.lit(False))
        table = table.with_columns(reason=pl.when(pl.col("kind") == "null").then(pl.lit(rejection("null", column)))
                                             .when(pl.col("kind") == "empty").then(pl.lit(rejection("empty", column))))
        candidates = s.to_frame("s").select(_looks_like_json(t).fill_null(False)).to_series().arg_true()
        return Verdicts(table.select("kind", "value", "reason", "converted"), _in_python(s, candidates, check, pl.String))
    if s.dtype.is_numeric():
        convert = standardize or numbers_ok
        table = s.to_frame("s").select(
            kind=pl.when(t.is_null()).then(pl.lit("null")).otherwise(pl.lit("number")),
            value=t.cast(pl.String) if convert else pl.lit(None, dtype=pl.String),
            reason=pl.when(t.is_null()).then(pl.lit(rejection("null", column))).when(not convert).then(pl.lit(rejection("number", column))),
            converted=t.is_not_null() & convert)
        return Verdicts(table, _in_python(s, pl.Series([], dtype=pl.Int64), check, pl.String))
    return _all_in_python(s, check, pl.String)


def check_messages(s: pl.Series, column: str, standardize: bool) -> Verdicts:
    """A conversation: a non-empty list of {role, content} turns with known roles and text content, ending
    with the assistant's turn. Extra keys in a turn are dropped; stringified JSON is parsed (the whole
    list) or rendered (a turn's content) when `standardize`."""

    def check(v):
        kind = kind_of(v)
        turns = v
        if kind == "json_string" and standardize:
            turns = json.loads(v)
            if not isinstance(turns, list) or not turns:
                return kind, None, rejection(kind_of(turns), column, messages=True), False
        elif kind != "list":
            return kind, None, rejection(kind, column, messages=True), False
        problems, clean, converted = set(), [], kind == "json_string"
        for turn in turns:
            if not isinstance(turn, dict):
                problems.add("shape")
                continue
            role, content = turn.get("role"), turn.get("content")
            if role not in ROLES:
                problems.add("role")
            if not isinstance(content, str) or not content.strip():
                problems.add("content")
            elif kind_of(content) == "json_string":
                if standardize:
                    content, converted = render_text(json.loads(content)), True
                else:
                    problems.add("json")
            clean.append({"role": role if isinstance(role, str) else None, "content": content if isinstance(content, str) else None})
        if not clean or clean[-1]["role"] != "assistant":
            problems.add("last")
        for p in TURN_PROBLEMS:  # the first problem in the order they are listed
            if p in problems:
                return kind, None, f"'{column}' {TURN_PROBLEMS[p]}", False
        return kind, clean, None, converted

    inner = s.dtype.inner if isinstance(s.dtype, pl.List) else None
    fields = {f.name: f.dtype for f in inner.fields} if isinstance(inner, pl.Struct) else {}
    if fields.get("role") != pl.String or fields.get("content") != pl.String:
        return _all_in_python(s, check, MESSAGES)
    m, role, content = pl.col("m"), pl.element().struct.field("role"), pl.element().struct.field("content")
    # a turn with extra keys is rebuilt as {role, content}; the usual exact shape is kept as it is (no copy)
    value = m if s.dtype == MESSAGES else m.list.eval(pl.struct(role, content))
    problem = {
        "role": m.list.eval(role.is_null() | ~role.is_in(ROLES)).list.any(),
        "content": m.list.eval(content.is_null() | _blank(content)).list.any(),
        "last": m.list.last().struct.field("role").ne_missing("assistant"),
    }
    reason = pl.when(m.is_null()).then(pl.lit(rejection("null", column))).when(m.list.len() == 0).then(pl.lit(rejection("empty", column)))
    for p, expr in problem.items():
        reason = reason.when(expr).then(pl.lit(f"'{column}' {TURN_PROBLEMS[p]}"))
    frame = s.to_frame("m")
    table = frame.select(
        kind=pl.when(m.is_null()).then(pl.lit("null")).when(m.list.len() == 0).then(pl.lit("empty")).otherwise(pl.lit("list")),
        value=value, reason=reason, converted=pl.lit(False))
    candidates = frame.select(m.list.eval(_looks_like_json(content).fill_null(False)).list.any().fill_null(False)).to_series().arg_true()
    return Verdicts(table, _in_python(s, candidates, check, MESSAGES))


def check_rows(loaded: Loaded, fmt: str, src: Source, standardize: bool, seed: tuple[int, int], role: str,
               stratify: str | None) -> Checked:
    """Check every row of a source. The rows come back as one frame (ROW, KEY, canonical columns,
    STRATUM, `_valid`) that shares memory with what was read: nothing is copied until the final rows
    are gathered, which is what keeps a million chat rows within the memory budget."""
    import numpy as np

    frame, n = loaded.frame, loaded.frame.height
    columns = {canon: src.fields.get(canon, canon) for canon in FORMAT_FIELDS[fmt]}
    verdicts = {canon: check_messages(frame[col], col, standardize) if canon == "messages"
                else check_text(frame[col], col, standardize, numbers_ok=canon == "answer")
                for canon, col in columns.items()}
    census = {}
    for canon, v in verdicts.items():
        columnar = v.table["kind"].filter(~pl.int_range(n, dtype=pl.Int64, eager=True).is_in(v.redo["_i"].implode()))
        counts = pl.concat([columnar, v.redo["kind"]]).value_counts(sort=True, name="n")
        census[columns[canon]] = dict(zip(counts["kind"].to_list(), counts["n"].to_list()))

    # One random number per row read, fixed by (seed, source): every later step takes rows in this order,
    # so samples are nested (a larger sample_ratio keeps the smaller sample's rows) and a policy change
    # that rescues some rows does not reshuffle the others.
    key = pl.Series(KEY, np.random.default_rng(seed).permutation(n) / max(n, 1))
    stratum = [frame[stratify].cast(pl.String).fill_null(MISSING).alias(STRATUM)] if stratify else []
    redo = pl.concat([v.redo["_i"] for v in verdicts.values()]).unique().sort()

    def table(rows: pl.DataFrame, parts: dict[str, pl.DataFrame]) -> pl.DataFrame:
        out = rows.with_columns(*(p["value"].alias(c) for c, p in parts.items()), *(p["reason"].alias(f"_r_{c}") for c, p in parts.items()),
                                _converted=pl.any_horizontal([p["converted"] for p in parts.values()]))
        reasons = [f"_r_{c}" for c in parts]
        if fmt == "preference":  # a pair that prefers an answer over itself teaches nothing
            out = out.with_columns(_r_same=pl.when(pl.col("chosen") == pl.col("rejected")).then(pl.lit("'chosen' and 'rejected' are identical")))
            reasons.append("_r_same")
        return out.with_columns(_reason=pl.coalesce(reasons)).drop(reasons)

    columnar = table(pl.DataFrame([frame[ROW], key, *stratum]).with_columns(_redo=pl.int_range(n).is_in(redo.implode())),
                     {c: v.table for c, v in verdicts.items()})
    # rows decided in Python: their own verdicts where they have one, the columnar verdicts elsewhere
    at = pl.DataFrame([frame[ROW].gather(redo), key.gather(redo), *(s.gather(redo) for s in stratum)]).with_columns(_redo=pl.lit(False))
    python = table(at, {c: v.table.gather(redo).with_columns(_i=redo).update(v.redo, on="_i", include_nulls=True)
                        for c, v in verdicts.items()})
    rows = pl.concat([columnar, python], how="vertical").with_columns(_valid=~pl.col("_redo") & pl.col("_reason").is_null())
    rejected = rows.filter(~pl.col("_redo") & pl.col("_reason").is_not_null()).select(ROW, "_reason").sort(ROW)
    originals = frame.filter(pl.col(ROW).is_in(rejected[ROW].implode())).drop(ROW).to_dicts() if rejected.height else []
    quarantine = [{"set": role, "source": src.source, "row": r, "reason": why, "data": data}
                  for (r, why), data in zip(rejected.iter_rows(), originals)]
    quarantine += [{"set": role, "source": src.source, **u} for u in loaded.unreadable]
    quarantine.sort(key=lambda q: q["row"])
    converted = int((rows["_valid"] & rows["_converted"]).sum())
    return Checked(rows=rows.select(ROW, KEY, *columns, *([STRATUM] if stratify else []), "_valid"),
                   quarantine=quarantine, census=census, converted=converted)


def detect_format(src: Source, columns: list[str], where: Where) -> str:
    """The source's format: as given, or the first whose (mapped) columns are all present. The rule is
    the compiler's (compiler/inputs.py), which checks the first rows of local files at compile time."""
    if not columns:
        raise where.error("source", f"'{src.source}' has no rows")
    problem = format_problem(src, columns)
    if problem:
        sub, message, hint = problem
        raise where.error(sub, message, hint=hint)
    if src.format != "auto":
        return src.format
    return next(fmt for fmt in DETECT_ORDER if all(src.fields.get(c, c) in columns for c in FORMAT_FIELDS[fmt]))


# ---------------------------------------------------------------------------------------------------
# shaping: mixing, hold-out, sampling, capping


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


def _eval_prompts(root: Path, where: Where, task) -> pl.Series:
    """The prompts an eval.target task will be asked (its first `limit` rows)."""
    loaded = load_source(root, Source(source=task.source, split=task.split), where, where.key)
    columns = [c for c in loaded.frame.columns if c != ROW]
    if task.prompt_field not in columns:
        raise where.error("prompt_field", f"no column '{task.prompt_field}' in {task.source}",
                          hint=did_you_mean(task.prompt_field, columns) or f"columns: {', '.join(columns)}")
    s = loaded.frame[task.prompt_field].head(task.limit) if task.limit else loaded.frame[task.prompt_field]
    return s if s.dtype == pl.String or s.dtype.is_numeric() else pl.Series([str(v) for v in s.to_list()])


# ---------------------------------------------------------------------------------------------------
# the stage


def _fail_issue(where: Where, checked: Checked, total: int) -> SpecIssue:
    """on_invalid: fail: one issue per source, with the commonest reasons and where to find them."""
    rows_by_reason: dict[str, list[int]] = {}
    for q in checked.quarantine:
        rows_by_reason.setdefault(q["reason"], []).append(q["row"])
    top = sorted(rows_by_reason.items(), key=lambda kv: -len(kv[1]))[:3]
    listed = "; ".join(f"{why}: {len(rows)} (rows {', '.join(map(str, rows[:3]))}{', ...' if len(rows) > 3 else ''})" for why, rows in top)
    return where.issue("", f"{len(checked.quarantine)} of {total} rows are invalid: {listed}",
                       hint="on_invalid: quarantine keeps the valid rows and lists the others in quarantine.jsonl")


def _check_source(root: Path, src: Source, where: Where, d: DataSpec, seed: tuple[int, int], role: str,
                  label: str, fmt: str | None = None, stratify_at: Where | None = None) -> tuple[Checked, dict]:
    """Read and check one source; its manifest entry gets the counts, the census and the reasons.
    `fmt`: the format it must have (validation); `stratify_at`: where the stratify key is, when used."""
    loaded = load_source(root, src, where, label)
    columns = [c for c in loaded.frame.columns if c != ROW]
    if not columns and loaded.unreadable:
        raise where.error("source", f"'{src.source}' has no readable rows: {loaded.unreadable[0]['reason']}")
    found = detect_format(src, columns, where)
    if fmt and found != fmt:
        raise where.error("format", f"{src.source} is {found}, the training data is {fmt}; validation must match it")
    if stratify_at:
        if d.stratify not in columns:
            raise stratify_at.error("", f"no column '{d.stratify}' in {src.source}",
                                 hint=did_you_mean(d.stratify, columns) or f"columns: {', '.join(columns)}")
        if loaded.frame[d.stratify].dtype.is_nested() or loaded.frame[d.stratify].dtype == pl.Object:
            raise stratify_at.error("", f"'{d.stratify}' in {src.source} holds lists or objects; stratify needs a column of labels")
    checked = check_rows(loaded, found, src, d.standardize, seed, role, d.stratify if stratify_at else None)
    entry = loaded.entry | {"set": role, "format": found, "rows_valid": int(checked.rows["_valid"].sum()),
                            "rejected": len(checked.quarantine), "converted": checked.converted, "type_census": checked.census}
    if checked.quarantine:
        reasons: dict[str, int] = {}
        for q in checked.quarantine:
            reasons[q["reason"]] = reasons.get(q["reason"], 0) + 1
        entry["rejections"] = dict(sorted(reasons.items(), key=lambda kv: -kv[1]))
    return checked, entry


def prepare(ctx: StageContext) -> Prepared:
    """Everything the stage writes, computed in memory; nothing touches data/<exp>/ here."""
    d, root = ctx.spec.data, ctx.root
    spec_file = str(ctx.params.get("spec") or "params.yaml")
    data_at = Where(spec_file, f"{ctx.name}.data")
    seed = d.seed % 2**32
    label = f"data {ctx.name}"

    # 1-2. read and check every source
    checked, entries, fails = [], [], []
    for i, src in enumerate(d.train):
        where = data_at.at("train").at(i)
        c, entry = _check_source(root, src, where, d, (seed, i), "train", label,
                                 stratify_at=data_at.at("stratify") if d.stratify else None)
        entry["planned_weight"] = src.weight if src.weight is not None else 1.0
        checked.append(c)
        entries.append(entry)
        if c.quarantine and d.on_invalid == "fail":
            fails.append(_fail_issue(where, c, entry["rows_read"]))
    formats = [e["format"] for e in entries]
    if len(set(formats)) > 1:
        listed = ", ".join(f"{s.source}: {f}" for s, f in zip(d.train, formats))
        raise data_at.error("train", f"a mixture needs one format; the sources are {listed}", hint="map columns with fields: and set format:")
    fmt = formats[0]
    val_checked = val_entry = None
    if d.validation:
        val_checked, val_entry = _check_source(root, d.validation, data_at.at("validation"), d, (seed, len(d.train)),
                                               "validation", label, fmt=fmt)
        if val_checked.quarantine and d.on_invalid == "fail":
            fails.append(_fail_issue(data_at.at("validation"), val_checked, val_entry["rows_read"]))
    if fails:
        raise SpecError(fails)
    empty = [data_at.at("train").at(i).issue("", f"no valid rows left in {s.source}: all {e['rows_read']} rejected"
                                                 + (f", most for: {next(iter(e['rejections']))}" if e.get("rejections") else ""),
                                             hint="standardize: true converts stringified JSON and numbers; fields: maps columns")
             for i, (s, e) in enumerate(zip(d.train, entries)) if e["rows_valid"] == 0]
    if empty:
        raise SpecError(empty)

    # 3. mix, hold out, sample, cap. These steps decide on a skeleton (source, position, key, stratum)
    # and always stratify by source, so the weights survive each step; the rows are gathered once.
    strata = [STRATUM] if d.stratify else []
    rows = pl.concat([c.rows for c in checked], how="vertical")  # no copy: the parts stay where they are
    skeletons, offset = [], 0
    for i, c in enumerate(checked):
        skeletons.append(c.rows.select(KEY, *strata, **{POS: pl.int_range(c.rows.height, dtype=pl.Int64) + offset, SOURCE: pl.lit(i, dtype=pl.Int32)})
                         .filter(c.rows["_valid"]))
        offset += c.rows.height
    parts = mix(skeletons, [e["planned_weight"] for e in entries], bool(d.stratify))
    pool = pl.concat(parts, how="vertical")
    heldout = pool.clear()
    if d.validation_split:
        n_val = max(1, int(pool.height * d.validation_split + 0.5)) if pool.height > 1 else 0
        heldout, pool = take(pool, n_val, [SOURCE, *strata])
    planned_rows = max(1, int(pool.height * d.sample_ratio + 0.5)) if pool.height else 0
    limited = bool(d.limit and d.limit < planned_rows)  # the limit, not the ratio, sets the size
    if d.limit:
        planned_rows = min(planned_rows, d.limit)
    chosen, _ = take(pool, planned_rows, [SOURCE, *strata])
    if chosen.is_empty():
        raise data_at.error("train", "no training rows left after holding out validation and sampling",
                            hint="raise sample_ratio, lower validation_split, or add rows")
    fields = list(FORMAT_FIELDS[fmt])
    train = rows.gather(chosen.sort(KEY, SOURCE)[POS]).select(fields)  # seeded order, sources evenly interleaved
    if d.validation_split:
        validation = rows.gather(heldout.sort(KEY, SOURCE)[POS]).select(fields)
    elif val_checked:
        validation = val_checked.rows.filter(pl.col("_valid")).select(fields)
    else:
        validation = train.clear()

    # 4. contamination: training prompts against every evaluation set, and the validation set against
    # each test set (the quickstart's validation file was its test file, and nothing said so)
    contamination = {}
    targets = ctx.spec.eval.target
    if validation.height or targets:
        index = Contamination(prompts_of(train, fmt))
        held = Contamination(prompts_of(validation, fmt)) if validation.height else None
        if validation.height:
            contamination["validation"] = index.check(prompts_of(validation, fmt), d.validation.source if d.validation else "validation_split")
        for i, task in enumerate(targets):
            prompts = _eval_prompts(root, Where(spec_file, f"{ctx.name}.eval.target.{i}"), task)
            contamination[f"target:{task.name}"] = index.check(prompts, task.source)
            if held is not None:
                contamination[f"validation vs target:{task.name}"] = {
                    **held.check(prompts, task.source), "same_file": bool(d.validation) and same_source(root, d.validation, task)}

    # 5. the manifest: counts, ratios and weights planned and actual, so a report can flag a difference
    used = dict(chosen.group_by(SOURCE).len().iter_rows())
    held = dict(heldout.group_by(SOURCE).len().iter_rows())
    for i, entry in enumerate(entries):
        entry.update(rows_mixed=parts[i].height, rows_heldout=held.get(i, 0), rows_used=used.get(i, 0),
                     actual_weight=round(used.get(i, 0) / chosen.height, 6))
    quarantine = [q for c in checked for q in c.quarantine] + (val_checked.quarantine if val_checked else [])
    census: dict[str, dict[str, int]] = {}  # by canonical field, summed over the train sources
    for c, src in zip(checked, d.train):
        canonical = {col: canon for canon, col in src.fields.items()}
        for col, kinds in c.census.items():
            bucket = census.setdefault(canonical.get(col, col), {})
            for kind, n in kinds.items():
                bucket[kind] = bucket.get(kind, 0) + n
    manifest = {
        "format": fmt,
        "policy": {"on_invalid": d.on_invalid, "standardize": d.standardize},
        "seed": d.seed,
        "sources": entries,
        "validation": val_entry or ({"validation_split": d.validation_split} if d.validation_split else None),
        "mixed_rows": pool.height + heldout.height,
        "heldout_rows": heldout.height,
        # with a limit that caps the sample, the plan is limit / pool, not sample_ratio: comparing the
        # achieved ratio with sample_ratio would call a followed plan "not followed"
        "planned_sample_ratio": round(planned_rows / pool.height, 6) if limited else d.sample_ratio,
        "actual_sample_ratio": round(chosen.height / pool.height, 6),
        "limit": d.limit,
        "limited": limited,
        "planned_train_rows": planned_rows,
        "train_rows": train.height,
        "validation_rows": validation.height,
        "rejected_rows": len(quarantine),
        "converted_rows": sum(c.converted for c in checked) + (val_checked.converted if val_checked else 0),
        "type_census": census,
        "contamination": contamination,
    }
    if d.stratify:
        manifest["stratify"] = {"column": d.stratify, "mixed": _strata(pl.concat(parts)), "train": _strata(chosen)}
    return Prepared(train=train, validation=validation, quarantine=quarantine, manifest=manifest)


def _strata(rows: pl.DataFrame, most: int = 100) -> dict[str, int]:
    """Rows per stratum value, the commonest first (at most `most` values, so a manifest stays small)."""
    counts = rows.group_by(STRATUM).len().sort(["len", STRATUM], descending=[True, False]).head(most)
    return dict(counts.iter_rows())


def write_outputs(out_dir: Path, prepared: Prepared) -> None:
    """Write everything into a temporary sibling folder, then swap it in: an interrupted or failed write
    leaves the previous data/<exp>/ as it was."""
    with replacing(out_dir) as tmp:
        prepared.train.write_ndjson(tmp / "train.jsonl")
        prepared.validation.write_ndjson(tmp / "validation.jsonl")
        with (tmp / "quarantine.jsonl").open("w") as f:
            for q in prepared.quarantine:
                f.write(json.dumps(q, ensure_ascii=False, default=str) + "\n")
        manifest = prepared.manifest
        manifest["files"] = {name: file_sha256(tmp / name) for name in ("train.jsonl", "validation.jsonl", "quarantine.jsonl")}
        manifest["sha256"] = manifest["files"]["train.jsonl"]  # what training fingerprints
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False, default=str) + "\n")


def _warnings(m: dict) -> list[str]:
    """What deserves a look before training, from the manifest."""
    out = []
    for s in m["sources"] + ([m["validation"]] if m["validation"] and "source" in m["validation"] else []):
        if s.get("pin") == "not pinned in spec":
            out.append(f"{s['source']} is not pinned in the spec: revision '{s.get('revision') or 'main'}' resolved to {s.get('resolved_revision')}")
        if s.get("dvc", {}).get("matches") is False:
            out.append(f"{s['source']} differs from its DVC record ({s['dvc']['file']}): `dvc add` or `dvc checkout` it")
        if s.get("rejected"):
            top = next(iter(s["rejections"]))
            out.append(f"{s['source']}: {s['rejected']} of {s['rows_read']} rows quarantined (most: {top})")
    for name, c in m["contamination"].items():
        if c["normalized"]:
            out.append(f"{c['normalized']} of {c['n']} {name} prompts also appear in the training data ({c['exact']} exactly)")
    return out


def run(ctx: StageContext) -> None:
    t0 = time.time()
    prepared = prepare(ctx)
    m = prepared.manifest
    write_outputs(ctx.data_dir, prepared)
    # The duration stays out of data/<exp>/: DVC hashes that folder, and a timing inside it would make
    # every identical rerun look like new data and retrain everything downstream.
    seconds = round(time.time() - t0, 2)
    timing = ctx.run_dir / "timings" / "data.json"
    timing.parent.mkdir(parents=True, exist_ok=True)
    timing.write_text(json.dumps({"data": seconds}) + "\n")
    for w in _warnings(m):
        print(f"[data {ctx.name}] warning: {w}", flush=True)
    print(f"[data {ctx.name}] {m['train_rows']} train / {m['validation_rows']} validation rows, {m['rejected_rows']} quarantined, "
          f"sample ratio {m['actual_sample_ratio']} (planned {m['planned_sample_ratio']}) in {seconds}s -> data/{ctx.name}/", flush=True)
