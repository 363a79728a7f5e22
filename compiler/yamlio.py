"""Safe YAML reading that remembers where every key came from.

`read_yaml(path)` returns plain data plus a map from key path (tuple) to line number, so that a
validation error can say `specs/x.yaml:14: method.lr: ...`. Only the safe loader is used (no tags that
build objects). Hostile input fails fast with a located error instead of eating memory or crashing:
files over 1 MiB and anything but a regular file are refused, alias expansion is bounded (a "billion
laughs" document), so are nesting depth and recursive aliases, and text that cannot be written back
as UTF-8 (a lone surrogate from a `"\\ud800"` escape) is refused where it appears.
"""

from __future__ import annotations

import copy
import hashlib
import re
import stat
from pathlib import Path

import yaml

from tunebook.compiler.errors import SpecError, SpecIssue

# libyaml's C parser when the wheel has it (10x faster; same safe semantics), else pure Python.
_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class Loader(_Base):
    """Plain values read as YAML 1.2 reads them, which is what editors (yaml-language-server, checking
    specs against specs/schema.json) and DVC (`dvc exp run -S`, ruamel) read. PyYAML speaks YAML 1.1:
    there `lr: 1e-5` (no dot) is the text "1e-5", `on`/`yes`/`no` are booleans and `2024-01-01` a date,
    so the CLI and the editor disagreed about the same line. Here a number is a number however it is
    spelled, a boolean is true/false, and everything else is text."""


_DROPPED = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:float", "tag:yaml.org,2002:timestamp"}
Loader.yaml_implicit_resolvers = {first: [(tag, rx) for tag, rx in resolvers if tag not in _DROPPED]
                                  for first, resolvers in _Base.yaml_implicit_resolvers.items()}
Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
# YAML 1.2 core floats: a dot or an exponent (plain digits stay ints, checked first), or .inf/.nan
Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+)"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))

MAX_BYTES = 1 << 20
MAX_NODES = 100_000  # after alias expansion; real specs have a few hundred
MAX_DEPTH = 64  # nesting levels; real specs have fewer than 10
# libyaml composes nodes recursively in C: ~100,000 nested levels overflow the C stack (a segfault,
# not an exception), and composing a huge document is the slow part. Every node but a lone scalar
# needs one of these characters, so a text with fewer of them is small and shallow enough; a text with
# more is measured on the event stream first (iterative, and stopped at the first limit crossed).
_INDICATORS = "[{-:?,"
_PRESCAN_ABOVE = 5_000


def _too_big(file: str) -> SpecError:
    return SpecError([SpecIssue(file, "", f"file is larger than {MAX_BYTES >> 10} KiB; a spec should be small")])


def _too_deep(file: str, line: int | None) -> SpecError:
    return SpecError([SpecIssue(file, "", f"nested more than {MAX_DEPTH} levels deep; a spec is a few levels of keys", line)])


def _too_many(file: str, nodes: int, max_nodes: int, line: int | None = None) -> SpecError:
    return SpecError([SpecIssue(file, "", f"has more than {max_nodes} values"
                                + (f" once aliases are expanded ({nodes}; an alias bomb?)" if nodes > max_nodes else ""), line)])


def _prescan(text: str, file: str, max_nodes: int) -> None:
    if sum(text.count(c) for c in _INDICATORS) < _PRESCAN_ABOVE:
        return
    loader, depth, nodes = Loader(text), 0, 0
    try:
        while loader.check_event():
            ev = loader.get_event()
            if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    raise _too_deep(file, ev.start_mark.line + 1)
            elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
                continue
            elif not isinstance(ev, (yaml.ScalarEvent, yaml.AliasEvent)):
                continue
            nodes += 1
            if nodes > max_nodes:
                raise _too_many(file, 0, max_nodes, ev.start_mark.line + 1)
    finally:
        loader.dispose()


def _children(node) -> list:
    if isinstance(node, yaml.MappingNode):
        return [n for kv in node.value for n in kv]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_shape(root, file: str) -> None:
    """Depth, recursive aliases and unwritable text, walked without recursion (aliases share nodes)."""
    depth: dict[int, int] = {}
    open_: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            open_.discard(key)
            depth[key] = 1 + max((depth[id(c)] for c in _children(node)), default=0)
            if depth[key] > MAX_DEPTH:
                raise _too_deep(file, node.start_mark.line + 1)
            continue
        if key in depth:
            continue
        if key in open_:
            raise SpecError([SpecIssue(file, "", "an alias refers to a node that contains it (recursive alias)", node.start_mark.line + 1)])
        if isinstance(node, yaml.ScalarNode):
            try:
                node.value.encode("utf-8")
            except UnicodeEncodeError as e:
                raise SpecError([SpecIssue(file, "", f"text that is not valid Unicode ({node.value[e.start]!r}, a lone surrogate)",
                                           node.start_mark.line + 1)]) from None
            depth[key] = 1
            continue
        open_.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node))


def _expanded_size(node, memo: dict) -> tuple[int, int]:
    """(nodes, characters) of the document with every alias expanded, computed without expanding it.

    PyYAML shares aliased objects, so loading a "billion laughs" file is cheap; the blow-up comes
    later, when anything walks or serializes the data (params.yaml, hashes). A long string aliased a
    thousand times blows up the same way with few nodes, hence the characters. Refuse both up front.
    """
    key = id(node)
    if key in memo:
        return memo[key]
    nodes, chars = 1, len(node.value) if isinstance(node, yaml.ScalarNode) else 0
    for c in _children(node):
        n, ch = _expanded_size(c, memo)
        nodes, chars = nodes + n, chars + ch
    memo[key] = (nodes, chars)
    return nodes, chars


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


def parse_yaml(text: str, file: str, *, max_bytes: int = MAX_BYTES) -> tuple[object, dict[tuple, int]]:
    """Parse one document. `max_bytes` is larger for generated files (params.yaml of a thousand
    experiments); expansion is then bounded by the text's own size, so memory stays linear in it."""
    size = len(text.encode("utf-8", "replace"))
    if size > max_bytes:
        raise SpecError([SpecIssue(file, "", f"file is larger than {max_bytes >> 10} KiB")])
    max_nodes = MAX_NODES if max_bytes <= MAX_BYTES else max(MAX_NODES, size // 2)
    try:
        _prescan(text, file, max_nodes)
        loader = Loader(text)
        try:
            node = loader.get_single_node()
            if node is not None:
                # depth first: the walks below recurse, and are safe once the depth is bounded
                _check_shape(node, file)
                nodes, chars = _expanded_size(node, {})
                if nodes > max_nodes:
                    raise _too_many(file, nodes, max_nodes)
                if chars > 4 * max_bytes:
                    raise SpecError([SpecIssue(file, "", f"aliases expand the document to {chars} characters, more than "
                                               f"{4 * max_bytes} (an alias bomb?)")])
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        if "nesting depth" in str(e.problem or e.context):  # PyYAML >= 6.0.3 has its own depth limit
            raise _too_deep(file, line) from None
        raise SpecError([SpecIssue(file, "", f"not valid YAML: {e.problem or e.context}", line)]) from None
    except (yaml.YAMLError, RecursionError, ValueError, OverflowError) as e:
        # ValueError/OverflowError: libyaml resolving a scalar that looks like a date but is not one
        raise SpecError([SpecIssue(file, "", f"not valid YAML: {e}")]) from None
    lines: dict[tuple, int] = {}
    if node is not None:
        _lines(node, (), lines, set())
    return data, lines


_cache: dict[tuple, tuple] = {}


def read_yaml(path: Path, display: str | None = None) -> tuple[object, dict[tuple, int]]:
    """Parse a YAML file; a base shared by many variants is parsed once (keyed by path and content).

    Callers get a deep copy, so mutating the result never leaks into the next caller.
    """
    file = display or str(path)
    raw = _read_bytes(path, file)
    key = (str(path), file, hashlib.blake2b(raw, digest_size=16).digest())
    if key not in _cache:
        if len(_cache) > 1024:  # a long-lived process (tests, the bench) compiling many distinct files
            _cache.clear()
        _cache[key] = _decode_and_parse(raw, file)
    return copy.deepcopy(_cache[key])


def _read_bytes(path: Path, file: str) -> bytes:
    """At most MAX_BYTES + 1 bytes of a regular file: /dev/zero, a FIFO or a huge file cannot hang or fill memory."""
    try:
        st = path.stat()
        if stat.S_ISDIR(st.st_mode):
            raise SpecError([SpecIssue(file, "", "is a directory, expected a YAML file")])
        if not stat.S_ISREG(st.st_mode):
            raise SpecError([SpecIssue(file, "", "is not a regular file (a device, pipe or socket), expected a YAML file")])
        if st.st_size > MAX_BYTES:
            raise _too_big(file)
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise SpecError([SpecIssue(file, "", "no such file")]) from None
    except (OSError, ValueError) as e:  # permissions, a name too long, a NUL byte in the name
        raise SpecError([SpecIssue(file, "", f"cannot be read: {getattr(e, 'strerror', None) or e}")]) from None
    if len(raw) > MAX_BYTES:
        raise _too_big(file)
    return raw


def _decode_and_parse(raw: bytes, file: str) -> tuple[object, dict[tuple, int]]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError([SpecIssue(file, "", f"not UTF-8 text (byte {e.start})")]) from None
    return parse_yaml(text, file)
