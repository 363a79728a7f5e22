"""`tunebook repair`: a dvc.lock that DVC left cut short (killed mid-write) is mended from its whole
entries and the copy a stage keeps as it starts (runtime/lockfile.py).

The locks here are DVC's own, written by `dvc repro` of a small shell pipeline; the damage is what
DVC's in-place write leaves when it is killed: the new text cut at any byte, the empty file included.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import yaml

from tunebook.runtime import lockfile

PIPELINE = {"stages": {
    "a": {"cmd": "echo a > a.txt", "outs": ["a.txt"]},
    "b": {"cmd": "cat a.txt a.txt > b.txt", "deps": ["a.txt"], "outs": ["b.txt"]},
    "c": {"cmd": "cat src.txt > c.txt", "deps": ["src.txt"], "outs": ["c.txt"]},
    "d": {"cmd": "cat b.txt c.txt > d.txt", "deps": ["b.txt", "c.txt"], "outs": ["d.txt"]},
    "e": {"cmd": "cat d.txt > e.txt", "deps": ["d.txt"], "outs": ["e.txt"]},
}}


def _dvc(root, *args):
    dvc = shutil.which("dvc") or os.path.join(os.path.dirname(sys.executable), "dvc")
    return subprocess.run([dvc, *args], cwd=root, capture_output=True, text=True, check=False,
                          env={**os.environ, "DVC_NO_ANALYTICS": "1"})


@pytest.fixture(scope="module")
def locks(tmp_path_factory):
    """A DVC project run twice: `before` is dvc.lock after the first run (the whole copy a stage
    kept), `after` the lock DVC was writing when killed (stage c's input changed in between)."""
    root = tmp_path_factory.mktemp("lockproj")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    assert _dvc(root, "init", "-q").returncode == 0
    (root / "dvc.yaml").write_text(yaml.safe_dump(PIPELINE, sort_keys=False))
    (root / "src.txt").write_text("one\n")
    assert _dvc(root, "repro", "-q").returncode == 0
    before = (root / "dvc.lock").read_text()
    (root / "src.txt").write_text("two\n")
    assert _dvc(root, "repro", "-q").returncode == 0
    after = (root / "dvc.lock").read_text()
    assert before != after
    return root, before, after


def _project(tmp_path, locks, lock_text: str, copy: str | None):
    src, _, _ = locks
    root = tmp_path / "p"
    shutil.copytree(src, root, symlinks=True)
    (root / "dvc.lock").write_text(lock_text)
    shutil.rmtree(root / lockfile.KEEP, ignore_errors=True)
    if copy is not None:
        (root / lockfile.WHOLE).parent.mkdir(parents=True, exist_ok=True)
        (root / lockfile.WHOLE).write_text(copy)
    return root


def test_every_cut_mends_to_entries_dvc_wrote(tmp_path, locks):
    """Cut anywhere (every byte of the new lock): the mended file passes DVC's schema, keeps each whole
    entry of the new text, takes the rest from the copy, and never keeps the entry the cut fell in."""
    _, before, after = locks
    new, old = yaml.safe_load(after)["stages"], yaml.safe_load(before)["stages"]
    root = _project(tmp_path, locks, "", before)
    seen_damaged = 0
    for cut in range(len(after)):
        (root / "dvc.lock").write_text(after[:cut])
        if lockfile.damage(root) is None:  # cut at a line's end: DVC takes the shorter file, reruns what it lost
            assert after[:cut].endswith("\n") and cut > 0, cut
            continue
        seen_damaged += 1
        m = lockfile.repair(root)
        mended = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
        assert lockfile.damage(root) is None, cut
        assert set(mended) == set(old) | set(m.kept), cut
        for name, entry in mended.items():
            assert entry == (new[name] if name in m.kept else old[name]), (cut, name)
        assert not m.dropped, cut
    assert seen_damaged > len(after) - after.count("\n")  # every cut mid-line, and some at a line's end
    assert len(list((root / lockfile.KEEP).glob("dvc.lock.damaged-*"))) == seen_damaged  # nothing deleted


def test_without_a_copy_the_cut_entry_is_dropped_and_dvc_reruns_only_what_it_lacks(tmp_path, locks):
    _, _, after = locks
    cut = after.index("  d:\n") + 40  # inside d's entry
    root = _project(tmp_path, locks, after[:cut], copy=None)
    m = lockfile.repair(root)
    assert (m.kept, m.restored, m.dropped, m.missing) == (["a", "b", "c"], [], ["d"], ["e"])
    assert "`dvc repro` runs these 2 stage(s) again" in lockfile.describe(m, root)
    status = _dvc(root, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert set(yaml.safe_load(status.stdout)) == {"d", "e"}  # not in the lock: DVC reruns them, nothing else
    assert _dvc(root, "repro", "-q").returncode == 0
    assert (root / "dvc.lock").read_text() == after


def test_mended_from_the_copy_dvc_reruns_the_stage_it_was_recording(tmp_path, locks):
    _, before, after = locks
    cut = after.index("  c:\n") + 30  # DVC was writing c's new entry when it was killed
    root = _project(tmp_path, locks, after[:cut], before)
    m = lockfile.repair(root)
    assert m.kept == ["a", "b"] and set(m.restored) == {"c", "d", "e"} and not m.dropped
    status = yaml.safe_load(_dvc(root, "status", "--json").stdout)
    assert set(status) == {"c", "d", "e"}  # c's entry is the old one: its outputs changed, it and what follows rerun
    assert _dvc(root, "repro", "-q").returncode == 0
    assert (root / "dvc.lock").read_text() == after


def test_a_whole_lock_is_left_alone(tmp_path, locks):
    _, before, after = locks
    root = _project(tmp_path, locks, after, before)
    assert lockfile.damage(root) is None and lockfile.repair(root) is None
    assert (root / "dvc.lock").read_text() == after
    assert not list((root / lockfile.KEEP).glob("dvc.lock.damaged-*"))


def test_a_stage_keeps_a_copy_only_of_a_whole_lock(tmp_path, locks):
    _, before, after = locks
    root = _project(tmp_path, locks, after[: len(after) // 2], copy=None)
    lockfile.keep_whole_copy(root)
    assert not (root / lockfile.WHOLE).exists()
    (root / "dvc.lock").write_text(before)
    lockfile.keep_whole_copy(root)
    assert (root / lockfile.WHOLE).read_text() == before


def test_repair_waits_for_no_dvc_command(tmp_path, locks):
    from dvc.lock import make_lock

    _, before, after = locks
    root = _project(tmp_path, locks, after[:100], before)
    held = make_lock(str(root / ".dvc/tmp/lock"), tmp_dir=str(root / ".dvc/tmp"))
    held.lock()
    try:
        with pytest.raises(lockfile.DvcBusy, match="DVC command is running"):
            with lockfile.dvc_idle(root):
                pass
    finally:
        held.unlock()
    with lockfile.dvc_idle(root):
        assert lockfile.repair(root) is not None


def test_cli_status_points_at_repair_and_repair_mends(tmp_path, locks):
    from tests.conftest import tunebook_cmd

    _, before, after = locks
    root = _project(tmp_path, locks, "", before)
    st = subprocess.run(tunebook_cmd() + ["status"], cwd=root, capture_output=True, text=True)
    assert st.returncode == 3 and "dvc.lock is damaged: it is empty" in st.stderr and "tunebook repair" in st.stderr
    assert "Traceback" not in st.stderr + st.stdout
    rp = subprocess.run(tunebook_cmd() + ["repair"], cwd=root, capture_output=True, text=True)
    assert rp.returncode == 0, rp.stderr
    assert "5 stage(s)" in rp.stdout and "Next: `dvc status`" in rp.stdout
    assert yaml.safe_load((root / "dvc.lock").read_text()) == yaml.safe_load(before)
    again = subprocess.run(tunebook_cmd() + ["repair"], cwd=root, capture_output=True, text=True)
    assert again.returncode == 0 and "whole: nothing to mend" in again.stdout


def test_a_cut_rwlock_is_set_aside(tmp_path, locks):
    """DVC's .dvc/tmp/rwlock is JSON written in place: cut, `dvc repro` refuses to start; repaired, it runs."""
    from tests.conftest import tunebook_cmd

    _, before, after = locks
    root = _project(tmp_path, locks, after, before)
    rw = root / lockfile.RWLOCK
    rw.write_text('{"read": {"a.txt": [{"pid": 1234, "cmd": "dvc rep')
    refused = _dvc(root, "repro")
    assert refused.returncode != 0 and "RWLock" in refused.stderr + refused.stdout
    rp = subprocess.run(tunebook_cmd() + ["repair"], cwd=root, capture_output=True, text=True)
    assert rp.returncode == 0 and "set aside" in rp.stdout and "dvc.lock is whole" in rp.stdout, rp.stdout + rp.stderr
    assert not rw.exists() and len(list((root / lockfile.KEEP).glob("rwlock.damaged-*"))) == 1
    assert _dvc(root, "repro", "-q").returncode == 0
