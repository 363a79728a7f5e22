"""The module structure docs/architecture.md promises, read off the source with `ast` (nothing imported):

- no import circle anywhere in tunebook, counting imports inside functions too;
- no stage module imports another stage module (shared code lives in rooms of its own);
- an import inside a function is either a heavy library kept out of the CLI's start (torch and the
  libraries that import it) or carries a one-line `# why` on its line.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"compiler": "tunebook.compiler", "runtime": "tunebook.runtime", "reports": "tunebook.reports", "tunebook": "tunebook"}
# what `tunebook run <kind>` dispatches to (runtime/stages.py): each is a stage, none imports another
STAGE_MODULES = {f"tunebook.runtime.{m}" for m in ("builtin", "convert", "data", "teacher", "train", "evaluate", "record")}
# imported inside functions so that `tunebook compile/report/review` start without them (tests/unit/test_no_torch.py)
HEAVY = ("torch", "transformers", "trl", "peft", "lm_eval", "datasets", "accelerate", "dvclive", "tokenizers",
         "gguf", "huggingface_hub", "pyarrow", "polars", "numpy", "scipy", "safetensors", "jsonschema")


def _modules() -> dict[str, Path]:
    mods = {}
    for folder, pkg in PACKAGES.items():
        for f in (ROOT / folder).rglob("*.py"):
            rel = f.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            mods[".".join([pkg, *parts])] = f
    return mods


def _targets(node, module: str, is_pkg: bool, mods) -> list[str]:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            parts = module.split(".")[: len(module.split(".")) - node.level + (1 if is_pkg else 0)]
            base = ".".join(parts + ([node.module] if node.module else []))
        names = [base] + [f"{base}.{a.name}" for a in node.names]
    found = []
    for n in names:  # `from tunebook.runtime import data` names a module; `import a.b.c` imports a.b.c
        while n and n not in mods:
            n = n.rpartition(".")[0]
        if n and n != module:
            found.append(n)
    return found


def _graph():
    mods = _modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    inner = []
    for m, f in mods.items():
        text = f.read_text()
        tree = ast.parse(text)
        lines = text.splitlines()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges[m].update(_targets(node, m, f.name == "__init__.py", mods))
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        inner.append((m, f, node, lines[node.lineno - 1]))
    return mods, edges, inner


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    sys.setrecursionlimit(10_000)
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def test_no_import_circle_anywhere():
    _, edges, _ = _graph()
    assert _cycles(edges) == []


def test_stage_modules_never_import_each_other():
    _, edges, _ = _graph()
    bad = sorted((a, b) for a in STAGE_MODULES for b in edges.get(a, ()) if b in STAGE_MODULES)
    assert bad == [], "shared code belongs in a module of its own (docs/architecture.md)"


def test_imports_inside_functions_are_heavy_libraries_or_say_why():
    _, _, inner = _graph()
    bad = []
    for m, f, node, line in inner:
        name = node.names[0].name if isinstance(node, ast.Import) else (node.module or "")
        if getattr(node, "level", 0) == 0 and name.split(".")[0] in HEAVY:
            continue
        if "#" in line:
            continue
        bad.append(f"{f.relative_to(ROOT)}:{node.lineno}: {line.strip()}")
    assert bad == [], "move these to the top of the module, or say why on the line:\n" + "\n".join(bad)


def test_test_modules_never_import_each_other():
    """Shared test code lives in helper modules or conftest.py (docs/architecture.md, "tests")."""
    bad = []
    for f in (ROOT / "tests").rglob("test_*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[-1].startswith("test_"):
                bad.append(f"{f.relative_to(ROOT)}:{node.lineno}: from {'.' * node.level}{node.module}")
            elif isinstance(node, ast.Import) and any(a.name.split(".")[-1].startswith("test_") for a in node.names):
                bad.append(f"{f.relative_to(ROOT)}:{node.lineno}")
    assert bad == []
