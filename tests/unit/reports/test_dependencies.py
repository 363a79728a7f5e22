"""`pip install tunebook` alone must give a working `tunebook report`: every third-party module that
reports/ imports at module level is a declared core dependency (issue 13, item 22: numpy was not)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib

# import name -> distribution name, where they differ; markupsafe comes with jinja2, which needs it
DIST = {"yaml": "pyyaml"}
CARRIED = {"markupsafe": "jinja2"}


def _top_level_imports(path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:  # module level only: imports inside functions are the lazy, optional ones
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_reports_imports_only_declared_core_dependencies(root):
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0].lower() for d in project["dependencies"]}
    third_party = set()
    for path in sorted((root / "reports").glob("*.py")):
        third_party |= {m for m in _top_level_imports(path)
                        if m not in sys.stdlib_module_names and m not in ("tunebook", "__future__")}
    assert "numpy" in third_party  # the statistics need it, so the check below is not vacuous
    missing = {m for m in third_party if DIST.get(m, m) not in declared and CARRIED.get(m) not in declared}
    assert not missing, f"reports/ imports {sorted(missing)} at module level; declare it in [project] dependencies"
