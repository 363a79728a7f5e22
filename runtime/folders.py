"""Replace an output folder as a whole: write into a temporary sibling, then swap it in.

Used by stages whose output is a folder other stages read (data/<exp>/, runs/<exp>/teacher/). A
kill at any moment leaves either the previous folder or the new one in place, never a mix, never
neither: the old folder is renamed aside (not deleted) before the new one takes its name.
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
