"""One pipeline per project, written by one compile at a time (issue 16).

- `pipeline_specs(root, named)`: `tunebook compile specs/one.yaml` used to rewrite dvc.yaml and
  params.yaml with that spec alone, silently dropping every other experiment's stages. dvc.yaml is the
  project's one pipeline, so naming specs now checks them *with* the rest: the named files are compiled
  together with every spec in specs/ (a named file outside specs/ joins them).
- `project_lock(root)`: two compiles at once each read the old files and wrote their own (last wins,
  and dvc.yaml could come from one and params.yaml from the other). A compile holds an exclusive
  `flock` on the project folder itself from reading the specs to the last rename: nothing is written
  to take it, and a killed compile's lock goes with its process. A second compile says it waits.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from pathlib import Path


def pipeline_specs(root: Path, named: list[Path], discover) -> tuple[list[Path], list[Path]]:
    """(every spec the pipeline is compiled from, the named ones that were added to specs/'s)."""
    every = list(discover(Path(root) / "specs"))
    seen = {os.path.abspath(p) for p in every}
    extra = [p for p in named if os.path.abspath(p) not in seen and not seen.add(os.path.abspath(p))]
    return every + extra, extra


@contextlib.contextmanager
def project_lock(root: Path, say=None):
    """Hold the project's compile lock (an flock on the folder) for the duration."""
    fd = os.open(root, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            (say or (lambda m: print(m, file=sys.stderr)))(
                f"waiting for another `tunebook compile` in {root} to finish (compiles of one project are serialized)")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
