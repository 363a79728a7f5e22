"""Load specs: YAML -> `extends:` inheritance -> validated `Spec`, with every error located.

Inheritance is a deep merge where the child wins; lists are replaced, not concatenated (a variant that
lists its data sources means exactly those). `extends` paths are relative to the file that names them;
cycles are errors. Every key remembers the file and line it came from, so an error in an inherited
value points at the parent file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from compiler.errors import SpecError, SpecIssue, did_you_mean
from compiler.schema import Spec
from compiler.yamlio import read_yaml

Origin = tuple[str, int]  # (file, line)


@dataclass(frozen=True)
class LoadedSpec:
    spec: Spec
    file: str  # as given, relative to the project when possible
    sha256: str  # of the merged, validated spec (inheritance included)


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


def _read_tree(path: Path, root: Path, chain: tuple[Path, ...]) -> tuple[dict, dict]:
    display = _display(path, root)
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
        if not isinstance(ref, str):
            raise SpecError([SpecIssue(display, "extends", "must be a file path or a list of file paths", lines.get(("extends",)))])
        ppath = (path.parent / ref).resolve()
        if not ppath.exists():
            raise SpecError([SpecIssue(display, "extends", f"'{ref}' not found (paths are relative to this file)", lines.get(("extends",)))])
        pdata, porg = _read_tree(ppath, root, chain + (path,))
        merged, morg = _merge(merged, pdata, morg, porg)
    return _merge(merged, data, morg, origins)


def _display(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _locate(loc: tuple, origins: dict, default_file: str) -> tuple[str, int | None]:
    for n in range(len(loc), 0, -1):
        if loc[:n] in origins:
            return origins[loc[:n]]
    return default_file, None


def _issues_from(e: ValidationError, origins: dict, file: str, data: dict) -> list[SpecIssue]:
    issues = []
    for err in e.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-after")))
        # pydantic puts union member names in loc ("EveryK"); they mean nothing to a user
        loc = tuple(p for p in loc if not (isinstance(p, str) and p[:1].isupper()) and p not in ("literal['all', 'final']",))
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
        issues.append(SpecIssue(f, path, msg, line, hint))
    # one issue per (path, message): unions repeat the same complaint per member
    seen, uniq = set(), []
    for i in issues:
        if (i.path, i.message) not in seen:
            seen.add((i.path, i.message))
            uniq.append(i)
    return uniq


def _model_fields_at(loc: tuple) -> set[str] | None:
    """The field names valid at a key path, for 'did you mean' suggestions."""
    import typing

    from pydantic import BaseModel

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
    import typing

    from pydantic import BaseModel

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
    data, origins = _read_tree(Path(path).resolve(), root, ())
    file = _display(Path(path), root)
    if overrides:
        data, origins = _merge(data, overrides, origins, {})
    try:
        spec = Spec.model_validate(data)
    except ValidationError as e:
        raise SpecError(_issues_from(e, origins, file, data)) from None
    canon = json.dumps(spec.model_dump(mode="json"), sort_keys=True)
    return LoadedSpec(spec=spec, file=file, sha256=hashlib.sha256(canon.encode()).hexdigest())


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
