"""The `.gitignore` block tunebook keeps for the outputs DVC caches (model weights, checkpoints, data).

    tunebook compile        # rewrites the block between the markers, leaves every other line alone

DVC adds a stage's outputs to .gitignore only after the stage succeeds, so one failed `dvc repro`
left model weights and optimizer checkpoints untracked and unignored, one `git add -A` away from a
commit. The compiler knows every cached output before anything runs, so it writes them here first.
Records, metrics, plot CSVs and logs stay tracked on purpose: `dvc exp run` keeps only git-tracked
files and DVC outputs, so each variant keeps its own record and log.
"""

from __future__ import annotations

from pathlib import Path

from tunebook.compiler.compile import Pipeline
from tunebook.files import write_atomic

BEGIN = "# >>> tunebook: DVC-cached stage outputs, restored by `dvc repro` / `dvc checkout` (generated)"
END = "# <<< tunebook"
# Always ignored: dvclive's scratch folder, tunebook's own caches (smoke projects, task index, record
# copies) and SLURM job logs.
ALWAYS = ["/dvclive/", "/.tunebook/", "/runs/*/train.superseded-*/", "/runs/.jobs/"]  # .jobs: SLURM job logs


def cached_outputs(p: Pipeline) -> list[str]:
    """Every stage output DVC caches (not the `cache: false` ones, which git tracks), as ignore patterns."""
    out = set()
    for stage in p.stages:
        for o in stage.outs:
            path, opts = (o, {}) if isinstance(o, str) else next(iter(o.items()))
            if opts.get("cache", True):
                out.add("/" + path.strip("/") + "/")
    return sorted(out) + ALWAYS


def block(p: Pipeline) -> str:
    return "\n".join([BEGIN, *cached_outputs(p), END]) + "\n"


def updated(text: str, new_block: str) -> str:
    """`text` with the tunebook block replaced (or appended); every other line kept as it was."""
    lines = text.splitlines(keepends=True)
    if BEGIN in text and END in text:
        start = next(i for i, ln in enumerate(lines) if ln.rstrip("\n") == BEGIN)
        end = next(i for i, ln in enumerate(lines) if ln.rstrip("\n") == END and i > start)
        return "".join(lines[:start]) + new_block + "".join(lines[end + 1:])
    sep = "" if not text or text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
    return text + sep + new_block


def write_gitignore(root: Path, p: Pipeline) -> bool:
    """Bring the block in root/.gitignore up to date; atomic; returns whether the file changed."""
    path = root / ".gitignore"
    old = path.read_text() if path.exists() else ""
    new = updated(old, block(p))
    if new == old:
        return False
    write_atomic(path, new)
    return True
