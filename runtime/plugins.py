"""A project's plugin files, imported by the stages that look names up (teacher, train, eval, baseline).

    plugins: [plugins/my_rewards.py]     # in the spec: .py files, relative to the project

A plugin file registers rewards, answer extractors and answer transforms with the decorators that
`tunebook.plugins` exports, as the built-ins do (docs/plugins.md). `load` imports each file once per
process, by its path, as the module `tunebook_plugin_<path>` (`plugins/my_rewards.py` ->
`tunebook_plugin_plugins_my_rewards`); a file that fails to import is a SpecError naming the file and
line, not a traceback. `code` names the plugin files behind the functions a result used, for its
fingerprint: edit a plugin's reward and the training run is a new one, not a resumed old one.

Pure Python: imports the registries (no torch) and tunebook.files.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import traceback
from pathlib import Path

from tunebook.compiler.errors import SpecError, SpecIssue
from tunebook.files import file_sha256
from tunebook.runtime.extract import ANSWER_TRANSFORMS, EXTRACTORS
from tunebook.runtime.rewards import REWARDS

LOADED: dict[str, tuple[str, str]] = {}  # module name -> (the path as the spec gives it, its sha256)


def module_name(raw: str) -> str:
    """The module a plugin file is imported as, derived from its path (one path, one name)."""
    return "tunebook_plugin_" + re.sub(r"\W+", "_", os.path.normpath(raw).removesuffix(".py")).strip("_")


def load(root: Path, paths: list[str]) -> None:
    """Import the spec's plugin files (paths relative to `root`), each once per process."""
    for i, raw in enumerate(paths):
        name = module_name(raw)
        if name in sys.modules:
            continue
        path = Path(raw) if Path(raw).is_absolute() else root / raw
        if not path.is_file():
            raise SpecError([SpecIssue("params.yaml", f"plugins.{i}", f"plugin '{raw}' does not exist")])
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # noqa: BLE001 - the user's code: said as the file's error, at its line
            del sys.modules[name]
            raise SpecError([SpecIssue(raw, "", f"plugin failed to import: {type(e).__name__}: {e}", _line(e, path))]) from None
        LOADED[name] = (raw, file_sha256(path))


def _line(e: Exception, path: Path) -> int | None:
    """The line of the plugin file where the import failed (the innermost frame in that file)."""
    if isinstance(e, SyntaxError) and e.filename and Path(e.filename) == path:
        return e.lineno
    frames = [f for f in traceback.extract_tb(e.__traceback__) if Path(f.filename) == path]
    return frames[-1].lineno if frames else None


def code(rewards: list[str] = (), extract: str | None = None, answer_transform: str | None = None) -> dict:
    """{"plugins": {file: sha256}} for the plugin files that define the named functions; {} when they
    are all built-in, so a fingerprint of built-ins only stays what it was before plugins existed."""
    fns = [REWARDS[n] for n in rewards] + [EXTRACTORS[n] for n in [extract] if n] + [ANSWER_TRANSFORMS[n] for n in [answer_transform] if n]
    files = dict(sorted(LOADED[f.__module__] for f in fns if f.__module__ in LOADED))
    return {"plugins": files} if files else {}
