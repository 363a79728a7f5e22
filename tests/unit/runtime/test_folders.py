"""runtime/folders.replacing: a folder is swapped whole, and what a killed swap left is cleaned up."""

from __future__ import annotations

import pytest

from tunebook.runtime.folders import recover, replacing


def siblings(out):
    return sorted(p.name for p in out.parent.iterdir())


def test_success_swaps_the_folder_whole(tmp_path):
    out = tmp_path / "exp"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with replacing(out) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert siblings(out) == ["exp"]


def test_an_error_keeps_the_previous_folder_and_removes_the_new_one(tmp_path):
    out = tmp_path / "exp"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with replacing(out) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("boom")
    assert (out / "old.txt").read_text() == "old"
    assert siblings(out) == ["exp"]


def test_a_kill_while_writing_leaves_a_temporary_folder_the_next_call_removes(tmp_path):
    out = tmp_path / "exp"
    out.mkdir()
    killed = tmp_path / ".exp.new.abc123"  # what SIGKILL inside the with-block leaves
    killed.mkdir()
    (killed / "half.txt").write_text("half")
    with replacing(out) as tmp:
        (tmp / "new.txt").write_text("new")
    assert siblings(out) == ["exp"]
    assert (out / "new.txt").exists()


def test_a_kill_between_the_two_renames_is_undone(tmp_path):
    """Killed after `out` was renamed aside and before the new folder took its name: the previous
    folder comes back, so readers never find neither."""
    out = tmp_path / "exp"
    aside = tmp_path / ".exp.old"
    aside.mkdir()
    (aside / "old.txt").write_text("old")
    (tmp_path / ".exp.new.xyz").mkdir()
    recover(out)
    assert (out / "old.txt").read_text() == "old"
    assert siblings(out) == ["exp"]


def test_other_folders_beside_it_are_left_alone(tmp_path):
    out = tmp_path / "exp"
    (tmp_path / ".exp-kl.new.abc").mkdir()  # another experiment's name only starts the same
    (tmp_path / "other").mkdir()
    with replacing(out) as tmp:
        (tmp / "a").write_text("a")
    assert siblings(out) == [".exp-kl.new.abc", "exp", "other"]
