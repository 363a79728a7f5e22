"""A record is input, not trusted: read it within limits, refuse it cleanly, name its files injectively.

`load_record` reads every record through here. Whatever the file holds, the answer is a `Record` or a
`RecordError` naming the file and the field (the CLI exits 2), never a crash or a hang:

| refused | why |
| --- | --- |
| more than 64 MiB | read at most MAX_BYTES + 1 bytes |
| bytes that are not UTF-8 | the offset is named |
| a key twice in one object | JSON parsers disagree on which one wins: the log would show one, a diff tool the other |
| NaN, Infinity anywhere (timings, extra, ...) | a number in a record is finite; the field is named |
| an integer of more than 20 digits | a count or a step has no business there; Python would also refuse to print 4,300 digits |
| nesting deeper than 32 | the parser and the renderer recurse |
| a lone surrogate (`"\\ud800"`) | cannot be written as UTF-8: the log could not be saved |
| a key or name longer than 200 characters, a text longer than 1 MiB | a log line, a file name |
| more than 20,000 metrics, 20,000 samples or 5,000,000 per-item scores | 100,000 metrics took 30 s and 930 MB |
| a non-text `model.base` / `revision` / `resolved_revision` | shown as text in the log's Model line |

`log_name` maps an experiment name to its log file: the name itself when it is a plain name
(`[a-z0-9][a-z0-9_.-]*`, at most 128 characters, no `..`, not `review`), refused otherwise, so two
records never share a file and no name can reach another folder.

Imports reports.record (the schema), never the other way round.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tunebook.compiler.errors import printable
from tunebook.reports.markdown import safe_name
from tunebook.reports.record import Record, RecordError

MAX_BYTES = 64 << 20
MAX_INT_DIGITS = 20
MAX_DEPTH = 32
MAX_KEY = 200
MAX_TEXT = 1 << 20
MAX_METRICS = 20_000
MAX_SAMPLES = 20_000
MAX_SCORES = 5_000_000
NAME_FIELDS = ("suite", "task", "metric", "checkpoint")
_INF = float("inf")
_HUGE = 10 ** MAX_INT_DIGITS

LOG_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,127}")
RESERVED_LOGS = {"review": "logs/review.md is `tunebook review`'s log"}


class _Duplicate(ValueError):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set = set()
        raise _Duplicate(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return out


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def read_record_json(path: Path) -> Any:
    """The parsed JSON of a record file, within the limits above; RecordError otherwise."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise RecordError(f"{path}: no such record (run `dvc repro` first, or pass --record PATH)") from None
    except (IsADirectoryError, PermissionError, OSError) as e:
        raise RecordError(f"{path}: cannot be read ({e.strerror or e})") from None
    if len(data) > MAX_BYTES:
        raise RecordError(f"{path}: more than {MAX_BYTES >> 20} MiB; a record holds numbers and a few samples")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RecordError(f"{path}: not valid UTF-8 at byte {e.start} ({data[e.start:e.start + 4]!r})") from None
    try:
        odd: list[str] = []  # NaN, Infinity, a huge int: the walk then checks every number, naming its field

        def constant(name: str) -> float:
            odd.append(name)
            return float(name)

        def integer(digits: str) -> int:
            if len(digits) > MAX_INT_DIGITS:
                odd.append(digits[:10])
            return int(digits)

        raw = json.loads(text, object_pairs_hook=_pairs, parse_constant=constant, parse_int=integer)
    except json.JSONDecodeError as e:
        raise RecordError(f"{path}:{e.lineno}:{e.colno}: not valid JSON: {e.msg}") from None
    except _Duplicate as e:
        raise RecordError(f"{path}: the key {_show(str(e))} appears twice in one object; keep one") from None
    except RecursionError:
        raise RecordError(f"{path}: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as e:
        raise RecordError(f"{path}: {e}") from None
    problem = _walk(raw, text, numbers=bool(odd) or bool(_EXPONENT.search(text)))
    if problem:
        raise RecordError(f"{path}: not a valid tunebook record:\n  {problem}\n  see docs/record.md for the schema")
    return raw


def load_record(path: Path) -> Record:
    """The record at `path`, read within the limits above and validated; RecordError otherwise."""
    raw = read_record_json(path)  # within limits: size, UTF-8, duplicate keys, depth, huge ints (issue 16)
    try:
        record = Record.model_validate(raw)
    except ValidationError as e:
        lines = [f"{path}: not a valid tunebook record ({e.error_count()} problem(s)):"]
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            lines.append(f"  {loc}: {err['msg']}")
        lines.append("  see docs/record.md for the schema")
        raise RecordError("\n".join(lines)) from None
    problems = check_record(record)
    if problems:
        lines = [f"{path}: not a valid tunebook record ({len(problems)} problem(s)):", *(f"  {p}" for p in problems)]
        raise RecordError("\n".join([*lines, "  see docs/record.md for the schema"]))
    return record


def _show(text: str, most: int = 60) -> str:
    return repr(printable(text[:most]) + ("…" if len(text) > most else ""))


_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")
_EXPONENT = re.compile(r"\d[eE][+-]?\d{3,}(?=[\s,\]}]|$)")  # 1e400 overflows to inf (not "...4e1880" in a digest)


def _walk(raw: Any, text: str = "", numbers: bool = True) -> str | None:
    """The first limit `raw` breaks, as 'field.path: what', or None. Iterative: depth cannot crash it.
    `text` (the JSON it came from) tells which checks can find anything: a lone surrogate needs a
    \\udXXX escape; `numbers` says whether the parser saw NaN, Infinity, a 3-digit exponent or a huge int.
    An ordinary record then walks its containers only (1,000 records for `tunebook review`)."""
    surrogates = not text or bool(_SURROGATE.search(text))
    long_text = not text or len(text) > MAX_TEXT
    stack: list[tuple[Any, tuple, int]] = [(raw, (), 0)]
    scores = 0
    while stack:
        node, loc, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"{_where(loc)}: nested deeper than {MAX_DEPTH} levels"
        if isinstance(node, dict):
            for k, v in node.items():
                if len(k) > MAX_KEY:
                    return f"{_where(loc)}: a key of {len(k):,} characters (at most {MAX_KEY})"
                if surrogates and _has_surrogate(k):
                    return f"{_where(loc)}: a key holds a lone surrogate"
                if isinstance(v, (dict, list)) or (numbers and isinstance(v, (int, float))) or \
                        ((surrogates or long_text) and isinstance(v, str)):
                    stack.append((v, (*loc, k), depth + 1))
        elif isinstance(node, list):
            if loc == ("metrics",) and len(node) > MAX_METRICS:
                return f"metrics: {len(node):,} metrics (at most {MAX_METRICS:,})"
            if loc == ("samples",) and len(node) > MAX_SAMPLES:
                return f"samples: {len(node):,} samples (at most {MAX_SAMPLES:,})"
            if len(loc) == 3 and loc[0] == "metrics" and loc[2] in ("samples", "sample_ids"):
                scores += len(node)
                if scores > MAX_SCORES:
                    return f"{_where(loc)}: more than {MAX_SCORES:,} per-item scores in the record"
                # per-item scores are typed and checked by Metric (issue 13); their ids are text
                if loc[2] == "sample_ids" and all(isinstance(x, str) for x in node) and \
                        not _has_surrogate("".join(node)) and max(map(len, node), default=0) <= MAX_KEY:
                    continue
                if loc[2] == "samples" and all(x.__class__ in (int, float, bool) for x in node):
                    continue
            stack.extend((v, (*loc, i), depth + 1) for i, v in enumerate(node)
                         if isinstance(v, (dict, list)) or numbers or surrogates or long_text)
        elif isinstance(node, float):
            if node != node or node in (_INF, -_INF):
                # a metric's value, stderr and samples are named by Metric's validators (issue 13); the rest here
                if not (len(loc) == 3 and loc[0] == "metrics" and loc[2] in ("value", "stderr", "reference_value")):
                    return f"{_where(loc)}: not a finite number ({node})"
        elif isinstance(node, int):
            if node.__class__ is int and not -_HUGE < node < _HUGE:
                return f"{_where(loc)}: an integer of more than {MAX_INT_DIGITS} digits"
        elif isinstance(node, str):
            if len(node) > MAX_TEXT:
                return f"{_where(loc)}: a text of {len(node):,} characters (at most {MAX_TEXT:,})"
            if surrogates and _has_surrogate(node):
                return f"{_where(loc)}: holds a lone surrogate (an unpaired \\ud800-\\udfff escape): not text that can be written"
    return None


def _where(loc: tuple) -> str:
    return ".".join(map(str, loc)) or "(top level)"


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_record(record: Record) -> list[str]:
    """Field problems pydantic's types let through: name lengths, the Model line's texts."""
    out = []
    if len(record.experiment) > MAX_KEY:
        out.append(f"experiment: a name of {len(record.experiment):,} characters (at most {MAX_KEY})")
    for i, m in enumerate(record.metrics):
        for f in NAME_FIELDS:
            if len(getattr(m, f)) > MAX_KEY:
                out.append(f"metrics.{i}.{f}: a name of {len(getattr(m, f)):,} characters (at most {MAX_KEY})")
    for i, c in enumerate(record.checkpoints):
        if len(c.name) > MAX_KEY:
            out.append(f"checkpoints.{i}.name: a name of {len(c.name):,} characters (at most {MAX_KEY})")
    for key in ("base", "revision", "resolved_revision", "sha256", "dtype"):
        v = record.model.get(key)
        if v is not None and not isinstance(v, str):
            out.append(f"model.{key}: text expected, got {type(v).__name__} ({_show(json.dumps(v), 40)})")
    if record.title is not None and len(record.title) > 1000:
        out.append(f"title: {len(record.title):,} characters (at most 1000)")
    return out


def _non_finite(node: Any, loc: tuple) -> list[str]:
    stack, out = [(node, loc)], []
    while stack and len(out) < 20:
        v, at = stack.pop()
        if isinstance(v, float) and not math.isfinite(v):
            out.append(f"{'.'.join(map(str, at))}: not a finite number ({v})")
        elif isinstance(v, dict):
            stack.extend((x, (*at, k)) for k, x in v.items())
        elif isinstance(v, (list, tuple)):
            stack.extend((x, (*at, i)) for i, x in enumerate(v))
    return sorted(out)


def log_name(name: str) -> str:
    """The file name (without .md) of an experiment's log: the name itself, or a refusal. Injective."""
    if not LOG_NAME_RE.fullmatch(name) or ".." in name or name.endswith("."):
        raise RecordError(f"experiment: {_show(name)} cannot name a log file: use lowercase letters, digits, '_', '-' and '.' "
                     "(at most 128 characters, no '..'); rename the record's experiment, or give -o PATH")
    if name in RESERVED_LOGS:
        raise RecordError(f"experiment: '{name}' is reserved ({RESERVED_LOGS[name]}); rename the record's experiment, or give -o PATH")
    return name


def pipeline_experiments(root: Path) -> set[str]:
    """Experiments the project's pipeline renders logs for: params.yaml's keys, and runs/<exp>/record.json."""
    names = {p.parent.name for p in (Path(root) / "runs").glob("*/record.json")}
    try:
        params = yaml.safe_load((Path(root) / "params.yaml").read_text(encoding="utf-8")) or {}
        names |= {k for k in params if isinstance(k, str) and k not in ("baselines", "builtin")} if isinstance(params, dict) else set()
    except (OSError, ValueError, yaml.YAMLError):
        pass
    return names


def guard_overwrite(root: Path, record_path: Path, name: str, out: Path, force: bool) -> None:
    """Refuse (RecordError) to let a record that is not the pipeline's own `runs/<name>/record.json`
    overwrite the log or plots the pipeline writes for `name`, unless `force`."""
    root = Path(root)
    own = (root / "runs" / name / "record.json")
    if force or (own.exists() and Path(record_path).resolve() == own.resolve()):
        return
    if name not in pipeline_experiments(root):
        return
    log, plots = (root / "logs" / f"{name}.md").resolve(), (root / "logs" / "plots" / safe_name(name)).resolve()
    out = Path(out).resolve()
    if out == log or (out.parent / "plots" / safe_name(name)).resolve() == plots:
        raise RecordError(f"{record_path}: experiment '{name}' is one of this project's pipeline experiments; rendering this "
                     f"record would overwrite {'its log' if out == log else 'its plots'} (made from runs/{name}/record.json). "
                     "Render it elsewhere (-o another folder) or pass --force")
