"""Variants: each experiment as committed, in the workspace and in every `dvc exp` run, in one table.

    tunebook review      # the "Variants" section of logs/review.md

`dvc exp show --json` says which variants exist, their params and where they came from; the numbers
come from each variant's own run record (`runs/<exp>/record.json`, committed by DVC with every
experiment), read from git, so a variant is compared with its parent exactly as an experiment is
compared with its base model: the same intervals and badges (`reports.compute`), on each task's
primary metric, paired item by item when both have per-item scores.

When the parent commit holds no record (the results of `dvc repro` were never committed, then
`dvc exp run` replaced them in the workspace), the parent's result is taken from the workspace when its
params are the parent's, else from the copy the report stage (and each review) keeps of every record
under the digest of its params (`.tunebook/records/`, git-ignored); failing both, the row says so and
how to avoid it.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pydantic import ValidationError

from tunebook.reports.compute import SUITE_ORDER, ResultRow, compute_many
from tunebook.reports.record import Record
from tunebook.files import dict_sha256, write_atomic

MAX_COLUMNS = 6  # metric columns; beyond that the general suite folds into one "worst change" column
ARCHIVE = Path(".tunebook") / "records"  # relative to the project root; git-ignored by `tunebook compile`
RECORD = "runs/{exp}/record.json"
NOT_EXPERIMENTS = ("builtin", "baselines")  # params.yaml sections the compiler writes besides experiments

# ---------------------------------------------------------------------------------------------------
# dvc exp show --json


@dataclass(frozen=True)
class Variant:
    """One row of `dvc exp show`: the workspace, a commit, or an experiment run from a commit."""

    name: str
    rev: str
    parent: str | None  # the commit (branch name when known) an experiment was run from
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    sha: str = ""  # the full revision, to read files from git ("workspace" for the workspace)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _files(section: Any) -> dict[str, Any]:
    """Flatten `{file: {"data": {...}}}`; keys carry `file:` only when there is more than one file."""
    if not isinstance(section, dict):
        return {}
    files = {f: (v or {}).get("data") for f, v in section.items() if isinstance(v, dict)}
    out: dict[str, Any] = {}
    for f, data in files.items():
        for k, v in _flatten(data or {}).items():
            out[f"{f}:{k}" if len(files) > 1 else k] = v
    return out


def _error(node: dict) -> str | None:
    err = node.get("error")
    if isinstance(err, dict):
        return str(err.get("msg") or err.get("type") or err)
    return str(err) if err else None


def _variant(node: dict, fallback: str, parent: str | None) -> Variant:
    data = node.get("data") if isinstance(node.get("data"), dict) else {}
    rev = str(node.get("rev") or data.get("rev") or "")
    name = node.get("name") or fallback or (rev[:7] if rev != "workspace" else "workspace")
    return Variant(str(name), rev[:7] if rev != "workspace" else rev, parent,
                   _files(data.get("params")), _files(data.get("metrics")), _error(node), rev)


def parse_exp_show(entries: Any) -> list[Variant]:
    """Variants from parsed `dvc exp show --json`: each commit, then the experiments run from it."""
    out: list[Variant] = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        commit = _variant(entry, "", None)
        out.append(commit)
        for exp in entry.get("experiments") or []:
            if not isinstance(exp, dict):
                continue
            for rev in exp.get("revs") or []:
                if isinstance(rev, dict):
                    out.append(_variant(rev, str(exp.get("name") or ""), commit.name))
    return out


# ---------------------------------------------------------------------------------------------------
# records: from git, from the workspace, from the review's own copies


def git_files(root: Path, wanted: list[str]) -> dict[str, str]:
    """`{"<rev>:<path>": text}` for each blob that exists, read by one `git cat-file --batch`."""
    if not wanted:
        return {}
    try:
        res = subprocess.run(["git", "cat-file", "--batch"], cwd=root, input="\n".join(wanted).encode() + b"\n",
                             capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return {}
    out, buf, pos = {}, res.stdout, 0
    for spec in wanted:
        end = buf.find(b"\n", pos)
        if end < 0:
            break
        header = buf[pos:end].split()
        pos = end + 1
        if len(header) == 3 and header[1] == b"blob" and header[2].isdigit():
            size = int(header[2])
            out[spec] = buf[pos:pos + size].decode("utf-8", "replace")
            pos += size + 1
        elif len(header) == 3 and header[2].isdigit():  # a tree or commit: skip its content
            pos += int(header[2]) + 1
    return out


def parse_record(text: str | None) -> Record | None:
    if text is None:
        return None
    try:
        return Record.model_validate(json.loads(text))
    except (ValueError, ValidationError):  # JSONDecodeError is a ValueError
        return None


def params_of(v: Variant, experiment: str) -> dict[str, Any]:
    """The experiment's params in one variant, keys relative to the experiment ('method.lr')."""
    prefix = f"{experiment}."
    return {k[len(prefix):]: x for k, x in v.params.items() if k.startswith(prefix)}


_NUMBER = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")


def _number(v: Any) -> Any:
    """A number however it was read: DVC writes `lr: 1e-05`, which YAML 1.1 readers (the stages' PyYAML)
    take for text and DVC's JSON gives as a number; 5 and 5.0 are one value here too."""
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str) and _NUMBER.fullmatch(v.strip()):
        return float(v)
    return v


def params_digest(params: dict[str, Any]) -> str:
    """The key a record is kept under: the experiment's flattened params, numbers compared as numbers."""
    canon = {k: _number(v) for k, v in params.items()}
    return dict_sha256(canon)[:16]


def remember(root: Path, experiment: str, params: dict[str, Any], text: str) -> None:
    """Keep a copy of a workspace record under the digest of the params it ran with, so that its
    result outlives the workspace (`dvc exp run` replaces it) even when it was never committed."""
    if not params:
        return
    path = root / ARCHIVE / experiment / f"{params_digest(params)}.json"
    try:
        if path.exists() and path.read_text() == text:
            return
        write_atomic(path, text)
    except OSError:
        pass  # a cache, not a result: never a reason to fail the review


def remember_run(root: Path, experiment: str, raw_params: dict[str, Any], text: str) -> None:
    """`remember` for the report stage, from the experiment's raw slice of params.yaml (flattened as
    `dvc exp show` flattens it, so the review finds the copy by the params DVC lists)."""
    remember(root, experiment, _flatten(raw_params), text)


def recall(root: Path, experiment: str, params: dict[str, Any]) -> str | None:
    if not params:
        return None
    try:
        return (root / ARCHIVE / experiment / f"{params_digest(params)}.json").read_text()
    except OSError:
        return None


# ---------------------------------------------------------------------------------------------------
# the table


@dataclass
class Row:
    experiment: str
    name: str  # "main", "workspace", the dvc exp name
    rev: str
    parent: str | None  # the name of the row this one is compared with; None for the reference
    source: str  # where its record came from: "git", "workspace", "kept copy" or "" (none found)
    record: Record | None
    params: dict[str, Any]
    changed: dict[str, Any] = field(default_factory=dict)  # params that differ from the reference's
    cells: list[Any] = field(default_factory=list)  # per column: a ResultRow, the reference's final value, or None
    winner: bool = False
    also: list[str] = field(default_factory=list)  # other names for the same result (an applied experiment)
    error: str | None = None
    note: str = ""
    results: list[ResultRow] = field(default_factory=list)
    compared: bool = False  # results are changes against the reference (else: as measured against base)


def _same_result(a: Record | None, b: Record | None) -> bool:
    if a is None or b is None:
        return False
    key = lambda r: sorted((m.suite, m.task, m.metric, m.checkpoint, m.value, m.n) for m in r.metrics)  # noqa: E731
    return key(a) == key(b) and a.actual == b.actual


def _against(parent: Record, child: Record) -> Record:
    """`child`'s final results with `parent`'s final results as its base: compute() then gives the
    variant's change against its parent with the same intervals and badges as against the base model."""
    (pc, cc) = compute_many([parent, child])
    parent_final = {r.series: parent.metrics[r.index] for r in pc.results}
    base = [parent_final[r.series].model_copy(update={"checkpoint": "base", "step": 0})
            for r in cc.results if r.series in parent_final]
    final = [child.metrics[r.index] for r in cc.results]  # a task the parent lacks: its value, no change
    return child.model_copy(update={"metrics": base + final})


def _columns(rows: list[Row]) -> list[tuple[str, str, str]]:
    """(series, suite, label) of every primary result in the table: target first, then general."""
    rank = {s: i for i, s in enumerate(SUITE_ORDER)}
    seen: dict[str, tuple[str, str]] = {}
    for row in rows:
        for r in row.results:
            if r.suite in SUITE_ORDER:
                seen.setdefault(r.series, (r.suite, r.label))
    return sorted(((s, suite, label) for s, (suite, label) in seen.items()), key=lambda c: (rank[c[1]], c[2], c[0]))


def variants_table(variants: list[Variant], workspace: dict[str, tuple[Record, str]], root: Path | None,
                   read: Callable[[list[str]], dict[str, str]] | None = None) -> dict[str, Any]:
    """The Variants section's context: rows grouped per experiment, metric columns, winners, the params
    that differ, notes. `workspace` maps experiment -> (record, its text) as read from runs/."""
    if not variants:
        return {"groups": [], "columns": [], "folded": False, "params": [], "notes": [], "errors": [], "listed": False}
    read = read or (lambda wanted: git_files(root, wanted) if root is not None else {})
    commits = [v for v in variants if v.parent is None and v.rev != "workspace"]
    ws = next((v for v in variants if v.rev == "workspace"), None)
    # an experiment: a section of params.yaml that tunebook compiled (it names its spec), or any section
    # with a run record somewhere; not `builtin` or `baselines`
    candidates = sorted(set(workspace) | {k.split(".", 1)[0] for v in variants for k in v.params if "." in k}
                        - set(NOT_EXPERIMENTS))
    in_git = [v for v in variants if v.rev != "workspace" and v.sha]
    texts = read([f"{v.sha}:{RECORD.format(exp=e)}" for v in in_git for e in candidates])
    experiments = [e for e in candidates if e in workspace or any(f"{e}.spec" in v.params for v in variants)
                   or any(f"{v.sha}:{RECORD.format(exp=e)}" in texts for v in in_git)]

    groups, notes = [], []
    for exp in experiments:
        ws_params = params_of(ws, exp) if ws is not None else {}
        ws_record, ws_text = workspace.get(exp, (None, None))
        if root is not None and ws_text is not None:
            remember(root, exp, ws_params, ws_text)
        for commit in commits or [None]:
            rows = _group(exp, commit, ws, ws_record, ws_params, [v for v in variants if commit is not None
                                                                     and v.parent == commit.name],
                          texts, root)
            if rows:
                groups.append(rows)
                if rows[0].record is None:
                    notes.append((exp, rows[0].name))  # no reference: the template says why and what to do
    rows = [r for g in groups for r in g]
    if not rows:
        return {"groups": [], "columns": [], "folded": False, "params": [], "notes": notes,
                "errors": [(v.name, v.error) for v in variants if v.error], "listed": True}
    for row in rows:
        row.results = _results(row, next(r for r in rows if r.experiment == row.experiment and r.parent is None))
    columns = _columns(rows)
    folded = len(columns) > MAX_COLUMNS and any(c[1] == "general" for c in columns)
    if folded:
        columns = [c for c in columns if c[1] != "general"]
    for g in groups:
        _fill(g, columns, folded)
    labels = [label for _, _, label in columns] + (["general suite: worst change"] if folded else [])
    return {"groups": groups, "columns": labels, "folded": folded, "notes": notes, "listed": True,
            "params": [(g[0].experiment, _differing(g)) for g in groups if _differing(g)],
            "errors": [(v.name, v.error) for v in variants if v.error]}


def _group(exp: str, commit: Variant | None, ws: Variant | None, ws_record: Record | None,
           ws_params: dict, exps: list[Variant], texts: dict[str, str], root: Path | None) -> list[Row]:
    """The rows of one experiment under one commit: the reference (the commit's result), the
    workspace when it differs, and each `dvc exp` run from the commit that changed this experiment."""
    def git_record(v: Variant) -> Record | None:
        return parse_record(texts.get(f"{v.sha}:{RECORD.format(exp=exp)}"))

    rows: list[Row] = []
    if commit is not None:
        c_params = params_of(commit, exp)
        ref = Row(exp, commit.name, commit.rev, None, "git", git_record(commit), c_params)
        if ref.record is None and ws_record is not None and ws_params == c_params:
            ref.record, ref.source, ref.note = ws_record, "workspace", "not committed: from the workspace"
        if ref.record is None and root is not None:
            ref.record = parse_record(recall(root, exp, c_params))
            if ref.record is not None:
                ref.source, ref.note = "kept copy", "not committed: the copy kept when it ran (.tunebook/records)"
        if ref.record is None:
            ref.source, ref.note = "", "no result: the run was not committed"
        if not c_params and ref.record is None:
            return []  # the experiment does not exist at this commit
        rows.append(ref)
    else:
        c_params = ws_params
    for v in exps:
        params = params_of(v, exp)
        if params == c_params and v.error is None:
            continue  # this variant changed other experiments, not this one
        rows.append(Row(exp, v.name, v.rev, rows[0].name if rows else None, "git", git_record(v), params,
                        error=v.error))
    if ws_record is not None and ws is not None and not (rows and rows[0].source == "workspace"):
        twin = next((r for r in rows[1:] if r.params == ws_params and _same_result(r.record, ws_record)), None)
        if twin is not None:
            twin.also.append("workspace")
        elif not rows or ws_params != c_params or not _same_result(rows[0].record, ws_record):
            rows.insert(1 if rows else 0, Row(exp, "workspace", "workspace", rows[0].name if rows else None,
                                              "workspace", ws_record, ws_params))
    for r in rows:
        r.changed = {k: r.params.get(k) for k in sorted(set(r.params) | set(c_params))
                     if r.parent is not None and r.params.get(k) != c_params.get(k)}
    return rows


def _results(row: Row, ref: Row) -> list[ResultRow]:
    """The row's primary results: against the reference for a variant, as measured for the reference
    (and for a variant without a reference to compare with: `compared` tells)."""
    if row.record is None:
        return []
    row.compared = row is not ref and ref.record is not None
    return compute_many([_against(ref.record, row.record) if row.compared else row.record])[0].results


def _fill(rows: list[Row], columns: list[tuple[str, str, str]], folded: bool) -> None:
    """Cells per column and the winner: the best final value of the first column (the first target
    task's primary metric), in its direction; ties all win; a lone row wins nothing."""
    for row in rows:
        by = {r.series: r for r in row.results}
        row.cells = [by.get(s) for s, _, _ in columns]
        if folded:
            general = [r for r in row.results if r.suite == "general" and r.gain is not None]
            row.cells.append(min(general, key=lambda r: r.gain) if general else None)
    if not columns:
        return
    firsts = [(row, row.cells[0]) for row in rows if row.cells and row.cells[0] is not None]
    if len(firsts) < 2:
        return
    pick = max if firsts[0][1].higher_is_better else min
    top = pick(c.final for _, c in firsts)
    for row, c in firsts:
        row.winner = c.final == top


def _differing(rows: list[Row]) -> list[tuple[str, list[tuple[str, Any]]]]:
    """[(param, [(row name, value)])] for the params whose values differ between the rows."""
    keys = sorted({k for r in rows for k in r.params})
    out = []
    for k in keys:
        values = [(r.name, r.params.get(k)) for r in rows]
        if len({json.dumps(v, sort_keys=True, default=str) for _, v in values}) > 1:
            out.append((k, values))
    return out
