"""Safe YAML reading that remembers where every key came from.

`read_yaml(path)` returns plain data plus a map from key path (tuple) to line number, so that a
validation error can say `specs/x.yaml:14: method.lr: ...`. Only the safe loader is used (no tags that
build objects), files over 1 MiB are refused, and alias expansion is bounded so a "billion laughs"
document fails fast instead of eating memory.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from compiler.errors import SpecError, SpecIssue

# libyaml's C parser when the wheel has it (10x faster; same safe semantics), else pure Python.
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

MAX_BYTES = 1 << 20
MAX_NODES = 100_000  # after alias expansion; real specs have a few hundred


def _expanded_size(node, memo: dict) -> int:
    """Node count of the document with every alias expanded, computed without expanding it.

    PyYAML shares aliased objects, so loading a "billion laughs" file is cheap; the blow-up comes
    later, when anything walks or serializes the data. Refuse such documents up front.
    """
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = 1  # a recursive alias counts once instead of looping
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(v, memo) for v in node.value)
    else:
        size = 1
    memo[key] = size
    return size


def _lines(node, prefix: tuple, out: dict, seen: set) -> None:
    if id(node) in seen:  # aliases point at the same node; its lines were recorded once
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = prefix + (k.value,)
            out.setdefault(key, k.start_mark.line + 1)
            _lines(v, key, out, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            key = prefix + (i,)
            out.setdefault(key, v.start_mark.line + 1)
            _lines(v, key, out, seen)


def parse_yaml(text: str, file: str) -> tuple[object, dict[tuple, int]]:
    if len(text.encode("utf-8", "replace")) > MAX_BYTES:
        raise SpecError([SpecIssue(file, "", f"file is larger than {MAX_BYTES >> 10} KiB; a spec should be small")])
    try:
        loader = Loader(text)
        try:
            node = loader.get_single_node()
            if node is not None and _expanded_size(node, {}) > MAX_NODES:
                raise yaml.YAMLError(f"document expands to more than {MAX_NODES} values (alias bomb?)")
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        raise SpecError([SpecIssue(file, "", f"not valid YAML: {e.problem or e.context}", line)]) from None
    except (yaml.YAMLError, RecursionError) as e:
        raise SpecError([SpecIssue(file, "", f"not valid YAML: {e}")]) from None
    lines: dict[tuple, int] = {}
    if node is not None:
        _lines(node, (), lines, set())
    return data, lines


_cache: dict[tuple, tuple] = {}


def read_yaml(path: Path, display: str | None = None) -> tuple[object, dict[tuple, int]]:
    """Parse a YAML file; a base shared by many variants is parsed once (keyed by path, size, mtime).

    Callers get a deep copy, so mutating the result never leaks into the next caller.
    """
    import copy

    file = display or str(path)
    try:
        st = path.stat()
        key = (str(path), file, st.st_size, st.st_mtime_ns)
    except OSError:
        key = None
    if key in _cache:
        return copy.deepcopy(_cache[key])
    result = _read_yaml(path, file)
    if key is not None:
        _cache[key] = copy.deepcopy(result)
    return result


def _read_yaml(path: Path, file: str) -> tuple[object, dict[tuple, int]]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError([SpecIssue(file, "", "no such file")]) from None
    except IsADirectoryError:
        raise SpecError([SpecIssue(file, "", "is a directory, expected a YAML file")]) from None
    if len(raw) > MAX_BYTES:
        raise SpecError([SpecIssue(file, "", f"file is larger than {MAX_BYTES >> 10} KiB; a spec should be small")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError([SpecIssue(file, "", f"not UTF-8 text (byte {e.start})")]) from None
    return parse_yaml(text, file)
