"""Row checks and the type census: what the data stage asks of every row it reads.

- `detect_format`: a source's format (prompt_completion, messages, preference, verifiable), as given or
  detected from its columns by the compiler's rule;
- `check_text` and `check_messages`: one field's verdicts, columnar first, with the few rows the columns
  cannot decide (stringified-JSON candidates, values to convert, mixed-kind columns) decided in Python
  by the reference definitions in runtime/kinds.py;
- `check_rows`: every row of a source, its seeded sort key and stratum, the census of JSON kinds and
  the quarantine (each rejected row with its reason);
- `check_source`: read and check one spec source, with its manifest entry (counts, census, reasons);
  `fail_issue`: the error that on_invalid: fail raises for a source with invalid rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from tunebook.compiler.errors import SpecIssue, did_you_mean
from tunebook.compiler.inputs import DETECT_ORDER, format_problem
from tunebook.compiler.schema import FORMAT_FIELDS, DataSpec, Source
from tunebook.runtime.kinds import kind_of, render_text, rejection
from tunebook.runtime.sources import ROW, Loaded, Where, load_source

ROLES = ("system", "user", "assistant", "tool")
MESSAGES = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))
# internal columns, never written: a row's sort key (seeded) and its stratum
KEY, STRATUM = "__key", "__stratum"
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
# one spec source, read and checked, for the stage


def fail_issue(where: Where, checked: Checked, total: int) -> SpecIssue:
    """on_invalid: fail: one issue per source, with the commonest reasons and where to find them."""
    rows_by_reason: dict[str, list[int]] = {}
    for q in checked.quarantine:
        rows_by_reason.setdefault(q["reason"], []).append(q["row"])
    top = sorted(rows_by_reason.items(), key=lambda kv: -len(kv[1]))[:3]
    listed = "; ".join(f"{why}: {len(rows)} (rows {', '.join(map(str, rows[:3]))}{', ...' if len(rows) > 3 else ''})" for why, rows in top)
    return where.issue("", f"{len(checked.quarantine)} of {total} rows are invalid: {listed}",
                       hint="on_invalid: quarantine keeps the valid rows and lists the others in quarantine.jsonl")


def check_source(root: Path, src: Source, where: Where, d: DataSpec, seed: tuple[int, int], role: str,
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
