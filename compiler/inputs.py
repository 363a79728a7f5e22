"""What `tunebook compile` checks on disk, so a mistake surfaces at the spec's line and not later in a
stage (DVC's raw `[Errno 2]`, or an error pointing at params.yaml).

    tunebook compile            # every check below; any problem: exit 2, nothing written
    tunebook compile --check    # inputs not there yet (data still to fetch) only warn

- local inputs exist: data sources, eval sets, prompt files, judge templates (with their placeholders),
  lm-eval task folders, and models that are paths (`model_is_path`): `./x`, `../x`, a `.gguf` file,
  `a/b` whose `a` is a folder of the project or a near miss of one (`modles/x`); any other `org/name` is
  a hub id. A missing path gets a did-you-mean that corrects every part of it (`dat/trian` -> `data/train.jsonl`).
  An input that DVC tracks (a `.dvc` file beside it or above it) or that a stage of this pipeline
  writes (`data/tiny/...`, written by pretrain-tiny) is not missing: it is not there *yet*.
- columns: `fields:` mappings, the format's columns, `stratify`, and an eval task's `prompt_field` /
  `answer_field`, checked against the first rows of local .jsonl/.json/.csv files and the schema of
  .parquet files. Cheap: at most FIRST_ROWS rows or FIRST_BYTES bytes are read.
- lm-eval task names: the local task YAMLs of `include_path` and lm-eval's own task folder, scanned
  for `task:`, `group:` and `tag:` names without importing lm_eval (or torch) and cached per
  lm-eval version. Skipped when lm-eval is not installed or the local folder is still to be written.
- reward, extractor and answer-transform names: the built-ins of runtime/rewards.py and runtime/extract.py
  and those the spec's `plugins:` files define, read by parsing their source (compiler/registries.py),
  so the compiler never imports the runtime or a project's code. A plugin file that is missing or does
  not parse, or that defines a name already taken, is an error at its `plugins:` line.
"""

from __future__ import annotations

import csv
import difflib
import functools
import hashlib
import importlib.util
import io
import json
import os
import re
from importlib import metadata
from dataclasses import dataclass, field
from pathlib import Path

from tunebook.compiler.errors import SpecIssue, did_you_mean
from tunebook.compiler.load import _locate
from tunebook.compiler.registries import KINDS, builtin, definitions, names_used
from tunebook.compiler.schema import FORMAT_FIELDS, JUDGE_PLACEHOLDERS, Source, Spec
from tunebook.files import write_atomic

FIRST_ROWS = 100
FIRST_BYTES = 1 << 20
# auto-detection tries formats in this order (the data stage's order)
DETECT_ORDER = ("preference", "messages", "prompt_completion", "verifiable")


@dataclass
class Findings:
    """Problems found on disk: `errors` always fail compile; `missing` (inputs not there) fail a plain
    compile and only warn under --check, where the data may not have been fetched."""

    errors: list[SpecIssue] = field(default_factory=list)
    missing: list[SpecIssue] = field(default_factory=list)


# --- lm-eval task names ------------------------------------------------------------------------------
_NAME_LINE = re.compile(r"""^["']?(task|group|tag)["']?\s*:\s*(.*?)\s*(?:#.*)?$""")
_ITEM_LINE = re.compile(r"^\s*-\s+(.*?)\s*(?:#.*)?$")


def _unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"" else value


def task_names_in(folder: Path) -> set[str]:
    """Task, group and tag names defined by the task configs under `folder`, read line by line (top-level
    keys only; a `!function` tag or an `include:` never needs resolving for a name). Included templates
    count too (`_template_yaml`, extension-less files): lm-eval registers the tags they carry."""
    names: set[str] = set()
    for path in folder.rglob("*"):
        if not (path.name.endswith("yaml") or not path.suffix) or not path.is_file():
            continue
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        key = None
        for line in lines:
            m = _NAME_LINE.match(line)
            if m:
                key, value = m.groups()
                if value.startswith("[") and value.endswith("]"):  # tag: [a, b]
                    names.update(_unquote(v.strip()) for v in value[1:-1].split(",") if v.strip())
                elif value and not value.startswith(("{", "|", ">", "!")):
                    names.add(_unquote(value))
                    key = None
                continue
            item = _ITEM_LINE.match(line) if key in ("tag", "group") else None  # tag:\n  - a\n  - b
            if item and not item.group(1).startswith(("{", "task:", "group:")):
                names.add(_unquote(item.group(1)))
            elif line and not line[0].isspace() and not line.startswith("-"):
                key = None
    return names - {"null", "~"}


def lm_eval_tasks() -> set[str] | None:
    """Every task, group and tag name lm-eval knows, or None if lm-eval is not installed. Cached on disk
    per lm-eval version and install folder (a scan of its ~14,000 YAML files takes a few seconds)."""
    spec = importlib.util.find_spec("lm_eval")  # finds the package without running it (no torch)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "tasks"
    if not folder.is_dir():
        return None
    try:
        version = metadata.version("lm_eval")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return set(_cached_scan(str(folder), version))


@functools.cache
def _cached_scan(folder: str, version: str) -> tuple[str, ...]:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tunebook"
    cache = base / f"lm_eval-tasks-{version}-{hashlib.sha256(folder.encode()).hexdigest()[:12]}.json"
    try:
        return tuple(json.loads(cache.read_text()))
    except (OSError, ValueError):
        pass
    names = tuple(sorted(task_names_in(Path(folder))))
    try:  # atomic: a concurrent compile reads the old cache or the new one, never half of one
        write_atomic(cache, json.dumps(names))
    except OSError:
        pass  # an unwritable cache only costs the scan next time
    return names


# --- columns of local files ----------------------------------------------------------------------------
def first_columns(path: Path) -> list[str] | None:
    """Column names seen in the first rows of a local file, or None when this cheap look cannot tell
    (a folder, an unknown type, an unreadable or very large .json, no object rows)."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".ndjson"):
            with path.open("rb") as f:
                head = f.read(FIRST_BYTES)
            lines = head.splitlines()
            if len(head) == FIRST_BYTES and lines:
                lines = lines[:-1]  # the last line may be cut
            rows = []
            for line in lines:
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except ValueError:
                        continue  # the data stage quarantines it
                if len(rows) >= FIRST_ROWS:
                    break
            return _keys(rows)
        if suffix == ".json":
            if path.stat().st_size > 16 * FIRST_BYTES:
                return None
            data = json.loads(path.read_bytes())
            if isinstance(data, dict) and isinstance(data.get("data"), list):
                data = data["data"]
            return _keys(data[:FIRST_ROWS]) if isinstance(data, list) else None
        if suffix == ".csv":
            with path.open(newline="", encoding="utf-8", errors="replace") as f:
                header = next(csv.reader(io.StringIO(f.readline())), None)
            return [h for h in header if h] if header else None
        if suffix == ".parquet":
            import polars as pl

            return list(pl.read_parquet_schema(path))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    except Exception:  # noqa: BLE001 - a damaged parquet file: the data stage says what is wrong with it
        return None
    return None


def saved_split(folder: Path, raw: str, split: str) -> tuple[tuple[str, str | None] | None, list[str] | None]:
    """((message, hint) if the split is not there, columns of the split) of a `save_to_disk` folder, read
    from its metadata files; (None, None) for any other folder (data files: the data stage reads them)."""
    try:
        if (folder / "dataset_dict.json").is_file():
            splits = [str(x) for x in json.loads((folder / "dataset_dict.json").read_text()).get("splits") or []]
            if split not in splits:
                return (f"{raw} has no split '{split}'; splits: {', '.join(splits)}", did_you_mean(split, splits)), None
            info = folder / split / "dataset_info.json"
        elif (folder / "state.json").is_file():
            if split != "train":
                return (f"{raw} is a single dataset without splits", "leave split: out"), None
            info = folder / "dataset_info.json"
        else:
            return None, None
        features = json.loads(info.read_text()).get("features")
        return None, (list(features) if isinstance(features, dict) and features else None)
    except (OSError, ValueError, AttributeError):
        return None, None  # unreadable metadata: the data stage reports what datasets makes of it


def _keys(rows: list) -> list[str] | None:
    keys = list(dict.fromkeys(k for r in rows if isinstance(r, dict) for k in r))
    return keys or None


def format_problem(src: Source, columns: list[str]) -> tuple[str, str, str | None] | None:
    """(sub-key, message, hint) if `src`'s fields and format do not fit `columns`, else None. The data
    stage asks the same of the whole file (runtime/checks.py detect_format)."""
    for canon, col in src.fields.items():
        if col not in columns:
            return f"fields.{canon}", f"no column '{col}' in {src.source}", did_you_mean(col, columns) or f"columns: {', '.join(columns)}"

    def needs(fmt: str) -> list[str]:
        return [src.fields.get(c, c) for c in FORMAT_FIELDS[fmt]]

    if src.format != "auto":
        missing = [c for c in needs(src.format) if c not in columns]
        if missing:
            return ("format", f"format {src.format} needs column '{missing[0]}', which {src.source} does not have",
                    did_you_mean(missing[0], columns) or f"map a column with fields:; columns: {', '.join(columns)}")
        return None
    if any(all(c in columns for c in needs(fmt)) for fmt in DETECT_ORDER):
        return None
    close = {c: difflib.get_close_matches(c, columns, n=1, cutoff=0.6)
             for c in dict.fromkeys(f for fmt in DETECT_ORDER for f in FORMAT_FIELDS[fmt]) if c not in columns and c not in src.fields}
    hints = [f"{c}: {match[0]}" for c, match in close.items() if match]
    return ("format", f"cannot tell the format of {src.source} from its columns ({', '.join(columns)})",
            f"map them with fields: {{{', '.join(hints)}}}" if hints else "set format: and fields:")


# --- the checks ----------------------------------------------------------------------------------------
class _Checker:
    def __init__(self, root: Path, file: str, origins: dict, produced: list[str], found: Findings):
        self.root, self.file, self.origins, self.produced, self.found = root, file, origins, produced, found

    def issue(self, loc: tuple, message: str, hint: str | None = None) -> SpecIssue:
        f, line = _locate(loc, self.origins, self.file)
        return SpecIssue(f, ".".join(map(str, loc)), message, line, hint)

    def error(self, loc: tuple, message: str, hint: str | None = None) -> None:
        self.found.errors.append(self.issue(loc, message, hint))

    def local(self, loc: tuple, raw: str, folder: bool = False, why: str = "") -> Path | None:
        """The input's path if it is there to read; None for hub sources and inputs not there (yet).
        `why`: said after "does not exist" (why the value is read as a path at all)."""
        if raw.startswith(("hf:", "builtin:")):
            return None
        path = Path(raw) if Path(raw).is_absolute() else self.root / raw
        try:
            there = path.exists()
        except OSError as e:  # a name too long, a permission refused on the way
            self.error(loc, f"'{raw}' is not a usable path ({e.strerror or e})")
            return None
        if there:
            if folder and not path.is_dir():
                self.error(loc, f"'{raw}' is not a folder")
                return None
            return path
        if self._pending(raw, path):
            return None
        self.found.missing.append(self.issue(loc, f"'{raw}' does not exist{why}", _near_path(raw, self.root) or
                                             "put the file there, correct the path, or compile --missing-ok to write the pipeline first"))
        return None

    def _pending(self, raw: str, path: Path) -> bool:
        """DVC-tracked (a .dvc file here or above) or written by a stage: not there yet is fine."""
        rel = os.path.normpath(raw)
        if any(rel == out or rel.startswith(out.rstrip("/") + "/") for out in self.produced):
            return True
        for p in [path, *path.parents]:
            if p == self.root or not p.name:  # up to the project (or the filesystem's root, for outside inputs)
                break
            if p.with_name(p.name + ".dvc").is_file():
                return True
        return False

    def columns(self, loc: tuple, raw: str, split: str | None = None) -> list[str] | None:
        """Columns of a local file, or of the split of a `save_to_disk` folder (from its metadata)."""
        path = self.local(loc, raw)
        if path is None:
            return None
        if path.is_file():
            return first_columns(path)
        problem, columns = saved_split(path, raw, split or "train")
        if problem:
            self.error(loc[:-1] + ("split",), *problem)
        return columns

    def column(self, loc: tuple, name: str, columns: list[str], source: str) -> None:
        if name not in columns:
            self.error(loc, f"no column '{name}' in {source}", did_you_mean(name, columns) or f"its first rows have: {', '.join(columns)}")

    def source(self, loc: tuple, src: Source, stratify: str | None = None) -> None:
        cols = self.columns(loc + ("source",), src.source, src.split)
        if cols is None:
            return
        problem = format_problem(src, cols)
        if problem:
            sub, message, hint = problem
            self.error(loc + tuple(sub.split(".")), message, hint)
        if stratify:
            self.column(("data", "stratify"), stratify, cols, src.source)


def _near_path(raw: str, root: Path) -> str | None:
    """'did you mean ...' for a missing path, every part of it corrected: a part that is not there becomes the
    closest name in the folder above (folders for the inner parts; the last part compared without its
    extension), as long as what comes out exists."""
    parts = Path(os.path.normpath(raw)).parts
    here = Path(parts[0]) if Path(raw).is_absolute() else root
    fixed, changed = [parts[0]] if Path(raw).is_absolute() else [], False
    todo = parts[1:] if Path(raw).is_absolute() else parts
    for i, part in enumerate(todo):
        if part in ("..", ".") or (here / part).exists():
            here, fixed = here / part, fixed + [part]
            continue
        last = i == len(todo) - 1
        try:
            entries = [e for e in here.iterdir() if not e.name.startswith(".") and (last or e.is_dir())]
        except OSError:
            return None
        names = {(e.stem if last and e.is_file() else e.name): e.name for e in entries}
        close = difflib.get_close_matches(Path(part).stem if last else part, list(names), n=1, cutoff=0.75)
        if not close:
            return None
        here, fixed, changed = here / names[close[0]], fixed + [names[close[0]]], True
    return f"did you mean '{os.path.join(*fixed)}'?" if changed and fixed else None


def model_is_path(name: str, root: Path) -> str | None:
    """Why a model value is a path in the project (the words said if it is not there), or None for a hub id
    or an absolute path (storage only the machines that run the stages may see: a cluster's /scratch)."""
    if name.startswith(("hf:", "builtin:")) or Path(name).is_absolute():
        return None
    if name.lower().endswith(".gguf"):
        return ": no such GGUF file (a .gguf model is a file of the project, converted by a stage)"
    if name.startswith(("./", "../")):
        return ": no such folder"
    first = name.split("/", 1)[0]
    if "/" not in name or not first:
        return None
    try:
        if (root / first).is_dir():
            return f": no such folder (a path, not a hub id: '{first}/' is a folder of this project)"
        folders = [e.name for e in root.iterdir() if e.is_dir() and not e.name.startswith(".")]
    except OSError:
        return None
    close = difflib.get_close_matches(first, folders, n=1, cutoff=0.8) if len(first) >= 3 else []
    if close:
        return f": no such folder, and '{first}' looks like a mistyped '{close[0]}/' rather than a hub organisation"
    return None


def check_spec(spec: Spec, file: str, origins: dict, root: Path, produced: list[str], found: Findings) -> None:
    c = _Checker(root, file, origins, produced, found)
    d, m, ev = spec.data, spec.method, spec.eval
    for i, src in enumerate(d.train):
        c.source(("data", "train", i), src, d.stratify)
    if d.validation:
        c.source(("data", "validation"), d.validation)
    for i, t in enumerate(ev.target):
        cols = c.columns(("eval", "target", i, "source"), t.source, t.split)
        if cols is not None:
            c.column(("eval", "target", i, "prompt_field"), t.prompt_field, cols, t.source)
            c.column(("eval", "target", i, "answer_field"), t.answer_field, cols, t.source)
    for key in ("reward", "judge"):
        ps = getattr(ev, key)
        if ps is None:
            continue
        cols = c.columns(("eval", key, "prompts"), ps.prompts)
        if cols is not None:
            c.column(("eval", key, "prompt_field"), ps.prompt_field, cols, ps.prompts)
        if key == "judge" and ps.template:
            path = c.local(("eval", "judge", "template"), ps.template)
            text = path.read_text(errors="replace")[:FIRST_BYTES] if path is not None and path.is_file() else None
            lacking = [ph for ph in JUDGE_PLACEHOLDERS if text is not None and ph not in text]
            if lacking:
                c.error(("eval", "judge", "template"), f"{ps.template} lacks {', '.join(lacking)}",
                        f"a judge template holds all of {', '.join(JUDGE_PLACEHOLDERS)}")
    if ev.general:
        _check_tasks(c, ev.general)
    # a model that looks like a path is one (model_is_path); anything else may be a hub id, or an absolute
    # path on storage that only the machines running the stages see (a cluster's /scratch)
    models = [(("model", "base"), spec.model.base)] + ([(("method", "teacher", "base"), m.teacher.base)] if m.teacher else [])
    models += [(("eval", "reward", "model"), ev.reward.model)] if ev.reward else []
    models += [(("eval", "judge", "judges", i, "model"), j.model) for i, j in enumerate(ev.judge.judges) if j.kind == "hf"] if ev.judge else []
    for loc, name in models:
        why = model_is_path(name, root)
        if why is not None:
            path = c.local(loc, name, folder=not name.lower().endswith(".gguf"), why=why)
            if path is not None and path.is_dir() and name.lower().endswith(".gguf"):
                c.error(loc, f"'{name}' is a folder; a .gguf model is one GGUF file")
            elif path is not None and (path / ADAPTER_CONFIG).is_file():
                _check_adapter_base(c, loc, name, path)
    _check_names(c, spec)


ADAPTER_CONFIG = "adapter_config.json"  # a peft adapter folder (another run's train/final): merged into its base on load


def _check_adapter_base(c: _Checker, loc: tuple, name: str, folder: Path, depth: int = 0) -> None:
    """A model folder that is a LoRA adapter (runtime/models.py merges it into its base when it loads): the
    base its adapter_config.json names must be there to load, or be written by a stage. A folder not
    there yet (a stage's output) is checked when it is."""
    cfg_file = f"{name.rstrip('/')}/{ADAPTER_CONFIG}"
    try:
        cfg = json.loads((folder / ADAPTER_CONFIG).read_text()[:FIRST_BYTES])
    except (OSError, ValueError) as e:
        c.error(loc, f"{cfg_file} cannot be read as an adapter config ({type(e).__name__})")
        return
    base = cfg.get("base_model_name_or_path") if isinstance(cfg, dict) else None
    if not isinstance(base, str) or not base:
        c.error(loc, f"{cfg_file} names no base model (base_model_name_or_path)",
                "an adapter is merged into the model it was trained on: set it to builtin:<name>, a project folder or a hub id")
        return
    why = f" (the base model named by {cfg_file})"
    if base.startswith("builtin:"):
        c.local(loc, f"models/{base[len('builtin:'):]}", folder=True, why=why)
        return
    if Path(base).is_absolute():
        if not Path(base).is_dir():
            c.error(loc, f"{cfg_file} names the base model {base}, a folder not on this machine",
                    "set base_model_name_or_path to the spec's base (builtin:<name>, a project folder or a hub id)")
        return
    if model_is_path(base, c.root) is None and not (c.root / base).is_dir():
        return  # a hub id (at the adapter's revision)
    path = c.local(loc, base, folder=True, why=why)
    if path is not None and (path / ADAPTER_CONFIG).is_file():
        if depth >= 8 or path.resolve() == folder.resolve():
            c.error(loc, f"{cfg_file}: adapters name each other as base in a loop (or more than 8 deep)")
            return
        _check_adapter_base(c, loc, base, path, depth + 1)


def _check_names(c: _Checker, spec: Spec) -> None:
    """Registry names against the built-ins and the spec's plugins (parsed, not imported)."""
    known = {kind: {name: "built in" for name in builtin(kind)} for kind in KINDS}  # name -> where it is defined
    for i, raw in enumerate(spec.plugins):
        loc = ("plugins", i)
        path = Path(raw) if Path(raw).is_absolute() else c.root / raw
        if not raw.endswith(".py"):
            c.error(loc, f"'{raw}' is not a Python file", "a plugin is a .py file that registers names (docs/plugins.md)")
            continue
        if not path.is_file():
            c.error(loc, f"'{raw}' does not exist", _near_path(raw, c.root) or "a plugin is a .py file in the project, its path relative to the project")
            continue
        try:
            found = definitions(path.read_text(), raw)
        except SyntaxError as e:
            c.error(loc, f"{raw}:{e.lineno}: does not parse: {e.msg}")
            continue
        except (OSError, UnicodeDecodeError, ValueError) as e:
            c.error(loc, f"'{raw}' cannot be read ({e})")
            continue
        for d in found:
            if d.name in known[d.kind]:
                c.error(loc, f"{d.kind} '{d.name}' at {raw}:{d.line} is already defined ({known[d.kind][d.name]})",
                        "a plugin adds names, it cannot replace one: rename it")
            else:
                known[d.kind][d.name] = f"at {raw}:{d.line}"
    for loc, kind, name in names_used(spec):
        if name not in known[kind]:
            decorator = KINDS[kind][1]
            c.error(loc, f"unknown {kind} '{name}'; available: {', '.join(sorted(known[kind]))}",
                    did_you_mean(name, known[kind]) or f"a new one is a function decorated with @{decorator}(\"{name}\") "
                                                       "in a plugin file listed under `plugins:` (docs/plugins.md)")


def _check_tasks(c: _Checker, general) -> None:
    local: set[str] = set()
    if general.include_path:
        folder = c.local(("eval", "general", "include_path"), general.include_path, folder=True)
        if folder is None:
            return  # not there (yet): its task names cannot be known
        local = task_names_in(folder)
    harness = lm_eval_tasks()
    if harness is None:
        return  # lm-eval is not installed here: the eval stage checks against its own index
    known = local | harness
    for i, task in enumerate(general.tasks):
        if task not in known:
            where = f"in {general.include_path} nor in lm-eval's index" if general.include_path else \
                "in lm-eval's index; a local task needs eval.general.include_path, its folder"
            c.error(("eval", "general", "tasks", i), f"unknown lm-eval task '{task}'", did_you_mean(task, known) or f"not {where}")


def check_inputs(loaded, root: Path, produced: list[str]) -> Findings:
    """Check every loaded spec against the files on disk. `produced`: the outputs of the pipeline's
    stages (relative paths), which are not missing before they are written."""
    found = Findings()
    produced = [os.path.normpath(p) for p in produced]
    for ls in loaded:
        try:
            check_spec(ls.spec, ls.file, ls.origins, root, produced, found)
        except (OSError, ValueError) as e:  # a name too long, a folder that cannot be listed: said, not a crash
            found.errors.append(SpecIssue(ls.file, "", f"an input cannot be checked ({type(e).__name__}: {e})"))
    # a base file's mistake is found once per spec that extends it: said once
    return Findings(list(dict.fromkeys(found.errors)), list(dict.fromkeys(found.missing)))


def stage_outputs(pipeline) -> list[str]:
    """Every output path of a compiled pipeline."""
    return [o if isinstance(o, str) else next(iter(o)) for st in pipeline.stages for o in st.outs]
