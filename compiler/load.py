"""Load specs: YAML -> `extends:` inheritance -> validated `Spec`, with every error located.

Inheritance is a deep merge where the child wins; lists are replaced, not concatenated (a variant that
lists its data sources means exactly those). `extends` paths are relative to the file that names them;
cycles are errors, and so is a parent outside the project. Every key remembers the file and line it
came from, so an error in an inherited value points at the parent file.

Paths in a spec are inputs (data, eval sets, task folders, templates, local models) and stay inside
the project, symlinks resolved, unless the spec sets `allow_external_inputs: true`; outputs are named
after the experiment (`data/<name>`, `runs/<name>`), whose pattern keeps them inside.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ValidationError

from tunebook.compiler.errors import SpecError, SpecIssue, did_you_mean
import tunebook.compiler.schema as schema
from tunebook.compiler.schema import Spec
from tunebook.compiler.yamlio import read_yaml

Origin = tuple[str, int]  # (file, line)


@dataclass(frozen=True)
class LoadedSpec:
    spec: Spec
    file: str  # as given, relative to the project when possible
    sha256: str  # of the merged, validated spec (inheritance included)
    # key path -> (file, line) of every value, inherited ones included: later checks (compiler/inputs.py)
    # locate their findings at the spec's line too
    origins: dict = field(default_factory=dict, compare=False, repr=False)


def _merge(base: dict, child: dict, base_org: dict, child_org: dict) -> tuple[dict, dict]:
    """Deep-merge child over base; origins of replaced subtrees are dropped, the child's added."""
    org = dict(base_org)

    def merge(b: dict, c: dict, prefix: tuple) -> dict:
        out = dict(b)
        for k, v in c.items():
            path = prefix + (k,)
            if isinstance(v, dict) and isinstance(b.get(k), dict):
                out[k] = merge(b[k], v, path)
            else:
                out[k] = v
                for p in [p for p in org if p[: len(path)] == path]:
                    del org[p]
        return out

    merged = merge(base, child, ())
    org.update(child_org)
    return merged, org


MAX_EXTENDS_DEPTH = 32


def _read_tree(given: Path, root: Path, chain: tuple[Path, ...], home: Path | None = None) -> tuple[dict, dict]:
    # home: the folder of the spec named on the command line *as named*: a symlinked spec whose target
    # lies outside does not make the outside folder its home (issue 16)
    home = home or Path(os.path.abspath(given)).parent
    if home.is_relative_to(os.path.abspath(root)):  # a symlinked specs/ folder is no way out either
        home = root
    display = _display(given, root)  # as named (a symlinked spec shows as the link, not its target)
    try:
        path = given.resolve()
    except (OSError, RuntimeError, ValueError) as e:
        raise SpecError([SpecIssue(display, "", f"cannot be read: {e}")]) from None
    if len(chain) >= MAX_EXTENDS_DEPTH:
        raise SpecError([SpecIssue(display, "extends", f"inheritance is more than {MAX_EXTENDS_DEPTH} files deep")])
    if path in chain:
        cycle = " -> ".join(_display(p, root) for p in chain + (path,))
        raise SpecError([SpecIssue(display, "extends", f"inheritance cycle: {cycle}")])
    data, lines = read_yaml(path, display)
    if data is None:
        raise SpecError([SpecIssue(display, "", "file is empty; a spec needs at least name, model and data")])
    if not isinstance(data, dict):
        raise SpecError([SpecIssue(display, "", f"expected a mapping of keys at the top level, got {type(data).__name__}")])
    origins = {p: (display, ln) for p, ln in lines.items()}
    parent = data.pop("extends", None)
    origins = {p: o for p, o in origins.items() if p[:1] != ("extends",)}
    if parent is None:
        return data, origins
    parents = parent if isinstance(parent, list) else [parent]
    merged, morg = {}, {}
    for ref in parents:
        line = lines.get(("extends",))
        if not isinstance(ref, str) or not ref.strip():
            raise SpecError([SpecIssue(display, "extends", "must be a file path or a list of file paths", line)])
        try:
            ppath = (path.parent / ref).resolve()
            found = ppath.is_file()
        except (OSError, ValueError) as e:  # a NUL byte, a name too long, a symlink loop
            raise SpecError([SpecIssue(display, "extends", f"'{ref}' is not a usable path ({e})", line)]) from None
        if not found:
            raise SpecError([SpecIssue(display, "extends", f"'{ref}' not found (paths are relative to this file)", line)])
        if not (_inside(ppath, root) or _inside(ppath, home)):
            raise SpecError([SpecIssue(display, "extends", f"'{ref}' is outside the project ({ppath}); "
                                       "a parent spec must be versioned with the project", line)])
        pdata, porg = _read_tree(ppath, root, chain + (path,), home)
        merged, morg = _merge(merged, pdata, morg, porg)
    return _merge(merged, data, morg, origins)


def _inside(path: Path, folder: Path) -> bool:
    return path.is_relative_to(folder.resolve())


def _display(path: Path, root: Path) -> str:
    path = Path(os.path.abspath(path))
    for base in (Path(os.path.abspath(root)), root.resolve()):
        if path.is_relative_to(base):
            return str(path.relative_to(base))
    return str(path)


def _locate(loc: tuple, origins: dict, default_file: str) -> tuple[str, int | None]:
    for n in range(len(loc), 0, -1):
        if loc[:n] in origins:
            return origins[loc[:n]]
    return default_file, None


def _issues_from(e: ValidationError, origins: dict, file: str, data: dict) -> list[SpecIssue]:
    issues = []
    for err in e.errors():
        loc = _user_loc(err["loc"], data)
        path = ".".join(str(p) for p in loc)
        f, line = _locate(loc, origins, file)
        hint, msg = None, err["msg"]
        if err["type"] == "extra_forbidden":
            parent = _model_fields_at(loc[:-1])
            hint = did_you_mean(loc[-1], parent) if parent else None
            allowed = ", ".join(sorted(parent)) if parent else ""
            msg = f"unknown key '{loc[-1]}'" + (f"; valid keys here: {allowed}" if allowed and not hint else "")
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"] == "literal_error":
            msg = f"{err['msg']} (got {err.get('input')!r})"
            choices = re.findall(r"'([^']*)'", str((err.get("ctx") or {}).get("expected", "")))
            hint = did_you_mean(err.get("input"), choices) if isinstance(err.get("input"), str) else None
        elif err["type"] in _SCALAR_TYPES and isinstance(err.get("input"), str):
            msg = f"{err['msg']} (got the text {err['input'][:40]!r})"
            hint = ("write true or false, without quotes" if err["type"] == "bool_type"
                    else "write the number without quotes: quoted, it is text")
        issues.append(SpecIssue(f, path, msg, line, hint))
    # one issue per (path, message): unions repeat the same complaint per member
    seen, uniq = set(), []
    for i in issues:
        if (i.path, i.message) not in seen:
            seen.add((i.path, i.message))
            uniq.append(i)
    return uniq


_SCALAR_TYPES = {"int_type", "float_type", "bool_type"}
_TYPE_TAGS = {"str", "int", "float", "bool", "none", "dict", "list"}


def _is_union_member(part) -> bool:
    if not isinstance(part, str):
        return False
    if part in _TYPE_TAGS or "[" in part or part.startswith("function-"):  # 'list[str]', 'literal[...]'
        return True
    cls = getattr(schema, part, None)
    return isinstance(cls, type) and issubclass(cls, BaseModel)


def _user_loc(loc: tuple, data) -> tuple:
    """pydantic's error location as the user's key path: union members ('EveryK', 'list[str]',
    'literal[...]') are dropped. Parts are matched against the data first, so a user's key is kept
    whatever it looks like ('A', 'str')."""
    out, node = [], data
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        elif _is_union_member(part):
            continue
        else:
            node = None  # a missing key, or one a validator added: kept, nothing below it to match
        out.append(part)
    return tuple(out)


def _model_fields_at(loc: tuple) -> set[str] | None:
    """The field names valid at a key path, for 'did you mean' suggestions."""
    model: type[BaseModel] | None = Spec
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        model = _find_model(field.annotation)
    return set(model.model_fields) if model else None


def _find_model(ann):
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in typing.get_args(ann):
        m = _find_model(arg)
        if m is not None:
            return m
    return None


def load_spec(path: Path, root: Path | None = None, overrides: dict | None = None) -> LoadedSpec:
    """Read, inherit and validate one spec file. Raises SpecError listing every problem."""
    root = root or Path.cwd()
    data, origins = _read_tree(Path(os.path.abspath(path)), root, ())
    file = _display(Path(path), root)
    if overrides:
        data, origins = _merge(data, overrides, origins, {})
    try:
        # Strict: a spec file is read as YAML 1.2 (yamlio), so a number is already a number and text is
        # text. `lr: "1e-5"` (quoted) is text, which the JSON Schema editors check against rejects, so the
        # CLI rejects it too rather than coercing it: editor and CLI agree, and a value is what it looks
        # like. params.yaml stays lax where the runtime reads it (`dvc exp run -S` values pass through it).
        spec = Spec.model_validate(data, strict=True)
    except ValidationError as e:
        raise SpecError(_issues_from(e, origins, file, data)) from None
    except (TypeError, KeyError, AttributeError, IndexError) as e:
        # a validator that did not expect this value's type (a bug to fix there): still the spec's
        # fault as far as the user can tell, so exit 2 naming the file, never a crash
        raise SpecError([SpecIssue(file, "", f"a value has a type the schema did not expect ({type(e).__name__}: {e})")]) from None
    outside = [(loc, msg, *_locate(loc, origins, file)) for loc, msg in path_problems(spec, root)]
    if outside:
        raise SpecError([SpecIssue(f, ".".join(map(str, loc)), msg, line) for loc, msg, f, line in outside])
    canon = json.dumps(spec.model_dump(mode="json"), sort_keys=True)
    return LoadedSpec(spec=spec, file=file, sha256=hashlib.sha256(canon.encode()).hexdigest(), origins=origins)


def load_specs(paths: list[Path], root: Path) -> list[LoadedSpec]:
    """Load many specs, gathering the errors of all of them; names must be unique."""
    loaded, issues = [], []
    for p in paths:
        try:
            loaded.append(load_spec(p, root))
        except SpecError as e:
            issues.extend(e.issues)
    names: dict[str, str] = {}
    for ls in loaded:
        if ls.spec.name in names:
            issues.append(SpecIssue(ls.file, "name", f"experiment name '{ls.spec.name}' is also used by {names[ls.spec.name]}"))
        names[ls.spec.name] = ls.file
    if issues:
        raise SpecError(issues)
    return loaded


def discover(specs_dir: Path) -> list[Path]:
    """Experiment specs in a folder. Files starting with '_' are bases for `extends:` only."""
    return sorted(p for p in specs_dir.glob("*.yaml") if not p.name.startswith("_"))


# --- paths -----------------------------------------------------------------------------------------
_NOT_PATHS = ("hf:", "builtin:")


@dataclass(frozen=True)
class Input:
    """A path a spec reads: where the spec says it, and the stages that read it. One list drives both
    the path confinement below and the DVC deps of those stages (compiler/compile.py), so they cannot drift."""

    loc: tuple  # key path in the spec
    path: str  # as written; may be a hub source (hf:, builtin:), never a DVC dep then
    stages: tuple[str, ...]  # stage kinds that read it: data, teacher, train, eval, baseline
    model: bool = False  # a model field: a hub id ('org/name') unless it is a local folder


def input_paths(spec: Spec) -> list[Input]:
    """Every input a spec reads, with its key path and the stages that read it. Model fields may hold hub
    ids ('org/name'), which are checked like relative paths: they cannot start with '/', '~' or contain '..'."""
    d, m, ev = spec.data, spec.method, spec.eval
    out = [Input(("model", "base"), spec.model.base, ("train", "eval", "baseline"), model=True)]
    out += [Input(("data", "train", i, "source"), s.source, ("data",)) for i, s in enumerate(d.train)]
    if d.validation:
        out.append(Input(("data", "validation", "source"), d.validation.source, ("data",)))
    if m.teacher:
        out.append(Input(("method", "teacher", "base"), m.teacher.base, ("teacher",), model=True))
    # the data stage reads the target sets too: it checks the training prompts against them (contamination)
    out += [Input(("eval", "target", i, "source"), t.source, ("data", "eval", "baseline")) for i, t in enumerate(ev.target)]
    if ev.general and ev.general.include_path:
        # early stopping on the general suite measures it during training
        on_general = m.early_stopping is not None and m.early_stopping.on == "general"
        out.append(Input(("eval", "general", "include_path"), ev.general.include_path, ("eval", "baseline") + ("train",) * on_general))
    if ev.reward:
        out += [Input(("eval", "reward", "prompts"), ev.reward.prompts, ("eval",)),
                Input(("eval", "reward", "model"), ev.reward.model, ("eval",), model=True)]
    if ev.judge:
        out.append(Input(("eval", "judge", "prompts"), ev.judge.prompts, ("eval",)))
        if ev.judge.template:
            out.append(Input(("eval", "judge", "template"), ev.judge.template, ("eval",)))
        out += [Input(("eval", "judge", "judges", i, "model"), j.model, ("eval",), model=True)
                for i, j in enumerate(ev.judge.judges) if j.kind == "hf"]
    # plugins: every stage that looks a name up (training only with GRPO's rewards: SFT kinds train on rows)
    users = ("teacher", "eval", "baseline") + ("train",) * (m.grpo is not None)
    out += [Input(("plugins", i), p, users) for i, p in enumerate(spec.plugins)]
    return out


def _dvc_cache_dirs(root: Path) -> list[Path]:
    """The project's DVC cache, wherever it is configured to live: with `cache.type: symlink` every
    DVC-tracked input is a symlink into it, and that is not leaving the project."""
    dirs = [root / ".dvc" / "cache"]
    for name in ("config", "config.local"):
        cfg = configparser.ConfigParser()
        try:
            cfg.read(root / ".dvc" / name)
            if cfg.has_option("cache", "dir"):
                dirs.append((root / ".dvc" / cfg.get("cache", "dir")).resolve())
        except (configparser.Error, OSError, UnicodeDecodeError):
            pass
    return dirs


def path_problems(spec: Spec, root: Path) -> list[tuple[tuple, str]]:
    """(key path, message) for each input path that is unusable, or outside `root` without the opt-in."""
    root = root.resolve()
    caches = None
    problems = []
    for loc, raw in [(i.loc, i.path) for i in input_paths(spec) if not i.path.startswith(_NOT_PATHS)]:
        if not raw.strip() or any(ord(c) < 32 for c in raw):
            problems.append((loc, f"{raw!r} is not a usable path (empty, or a control character such as NUL)"))
            continue
        if spec.allow_external_inputs:
            continue
        p = Path(raw).expanduser()
        lexical = Path(os.path.normpath(p if p.is_absolute() else root / p))
        try:
            resolved = lexical.resolve()
        except (OSError, RuntimeError) as e:  # a name too long, a symlink loop
            problems.append((loc, f"'{raw}' is not a usable path ({e})"))
            continue
        if not lexical.is_relative_to(root):
            problems.append((loc, f"'{raw}' is outside the project ({lexical}); inputs stay inside it unless "
                                  "the spec sets `allow_external_inputs: true`"))
        elif not resolved.is_relative_to(root):
            caches = caches if caches is not None else _dvc_cache_dirs(root)
            if any(resolved.is_relative_to(c) for c in caches):
                continue
            problems.append((loc, f"'{raw}' is a symlink to {resolved}, outside the project; inputs stay inside it "
                                  "unless the spec sets `allow_external_inputs: true`"))
    from tunebook.compiler.policy import policy_problems  # hub revisions, judge keys and hosts (issue 16)

    return problems + policy_problems(spec, root)
