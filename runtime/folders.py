"""Replace an output folder as a whole: write into a temporary sibling, then swap it in.

Used by stages whose output is a folder other stages read (data/<exp>/, runs/<exp>/teacher/). A
kill at any moment leaves either the previous folder or the new one in place, never a mix, never
neither: the old folder is renamed aside (not deleted) before the new one takes its name, and the
next call puts it back if a kill fell between the two renames. The next call also removes what a
killed call left: its half-written `.<name>.new.*` folder. (DVC's repository lock means one stage
of a project runs at a time, so no live writer owns such a folder.)
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(out: Path):
    """`with replacing(out) as tmp:` write into tmp; on success tmp becomes `out`, on error it is removed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    recover(out)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.new."))
    old = out.with_name(f".{out.name}.old")
    try:
        yield tmp
        shutil.rmtree(old, ignore_errors=True)
        if out.exists():
            out.rename(old)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def recover(out: Path) -> None:
    """Undo what a killed `replacing(out)` left: restore `.<name>.old` if `out` is missing (killed
    between the two renames), delete leftover `.<name>.old` and `.<name>.new.*` folders."""
    old = out.with_name(f".{out.name}.old")
    if old.is_dir() and not out.exists():
        old.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    for stale in out.parent.glob(f".{out.name}.new.*"):
        shutil.rmtree(stale, ignore_errors=True)
