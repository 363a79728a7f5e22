"""Interruption loses nothing: SIGKILL during data preparation and during report rendering, on real
runs of the tiny model, then `dvc repro` completes with every file whole and the same numbers.

Training and evaluation have their own kill-and-resume tests next to their stages
(tests/unit/runtime/test_train.py, test_evaluate.py); this file covers the stages around them and
what a report may and may not touch: `tunebook report` never modifies a record, and re-rendering
after a `dvc exp run` must leave the previous experiment's record recoverable.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import tunebook_cmd
from tests.reliability.conftest import Built, Project, copy_project
from tests.reliability.tally import tried
from tunebook.runtime import lockfile

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def kill_during(p: Project, args: list[str], stage: str, done_marker: str, *, at_marker=None, delay=(0.3, 3.0), seed=0) -> bool:
    """Run `dvc <args>` in its own process group; once `stage` is running, SIGKILL the whole group
    (dvc and the stage under it) after a random delay, or the moment `at_marker()` is true.
    Returns whether the kill landed before the stage finished."""
    proc = subprocess.Popen(["dvc", *args], cwd=p.root, env=p.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 600
        while not any(f"Running stage '{stage}'" in ln for ln in lines):
            assert proc.poll() is None or any(f"Running stage '{stage}'" in ln for ln in lines), "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.02)
        if at_marker is None:
            time.sleep(random.Random(seed).uniform(*delay))
        else:
            deadline = time.monotonic() + 60
            while not at_marker() and proc.poll() is None and time.monotonic() < deadline:
                pass
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        reader.join(timeout=10)
    with p.log.open("a") as f:
        f.write(f"$ dvc {' '.join(args)}  (killed)\n{''.join(lines)}")
    tried("kills")
    mend_lock_if_cut(p)
    return not any(done_marker in ln for ln in lines)


def mend_lock_if_cut(p: Project) -> None:
    """DVC writes dvc.lock in place: a kill that lands in that write (a few milliseconds after a stage)
    leaves it cut short, and DVC refuses every command until it is mended. Do what the error tells a
    user to do (docs/reliability.md, section 4)."""
    found = lockfile.damage(p.root)
    rwlock = p.root / lockfile.RWLOCK
    rwlock_cut = rwlock.exists() and not _parses_as_json(rwlock)
    if found is None and not rwlock_cut:
        return
    if found is not None:
        status = p.tunebook("status", check=False)
        assert status.returncode == (3 if found.dvc_refuses else 0) and "tunebook repair" in status.stderr, status.stderr
    print(f"the kill cut {'dvc.lock' if found else lockfile.RWLOCK} short; `tunebook repair`:\n{p.tunebook('repair').stdout}")
    assert lockfile.damage(p.root) is None and (not rwlock.exists() or _parses_as_json(rwlock))


def _parses_as_json(path: Path) -> bool:
    try:
        json.loads(path.read_text())
        return True
    except ValueError:
        return False


def assert_whole(root: Path) -> list[str]:
    """Every JSON, JSONL and YAML file in the project parses; every log ends with its footer.
    Returns the hidden temporary files a killed writer left behind (not outputs; listed, not parsed)."""
    leftovers = []
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if not path.is_file() or rel.startswith((".git/", ".dvc/")):
            continue
        if any(part.startswith(".") for part in Path(rel).parts[:-1]) or path.name.endswith(".tmp"):
            leftovers.append(rel)
            continue
        text = path.read_bytes()
        if path.suffix == ".json":
            json.loads(text)
        elif path.suffix == ".jsonl":
            for line in text.decode().splitlines():
                json.loads(line)
        elif path.suffix in (".yaml", ".lock"):
            yaml.safe_load(text)
        elif path.suffix == ".md" and rel.startswith("logs/"):
            assert "How to read this log" in text.decode(), f"{rel} is cut short"
    return leftovers


def finish_and_compare(p: Project, built: Built) -> None:
    """The next `dvc repro` completes; nothing is stale; the numbers are the uninterrupted run's."""
    p.run(["dvc", "repro"])
    status = p.run(["dvc", "status"])
    assert "up to date" in status.stdout.lower(), status.stdout
    leftovers = assert_whole(p.root)
    # a killed data stage's half-written folder is removed by the next run (runtime/folders.recover)
    assert not [f for f in leftovers if f.startswith("data/")], leftovers
    if leftovers:  # garbage, not damage: reported, see docs/reliability.md
        print(f"temporary files left by the killed writers: {leftovers}")
    record = json.loads((p.root / "runs/mini/record.json").read_text())
    assert [(m["checkpoint"], m["task"], m["metric"], m["value"]) for m in record["metrics"]] == \
        [(m["checkpoint"], m["task"], m["metric"], m["value"]) for m in built.record["metrics"]]
    assert (p.root / "data/mini/train.jsonl").read_bytes() == built.files["data/mini/train.jsonl"]


def test_sigkill_during_data_preparation(built, tmp_path):
    p = copy_project(built, tmp_path / "p")
    data = p.root / "data"
    # once at a random moment after the stage starts, once the moment it starts writing its folder
    landed = kill_during(p, ["repro", "-f", "-s", "data-mini"], "data-mini", "[data mini]", delay=(0.2, 2.5))
    assert_whole(p.root)
    landed += kill_during(p, ["repro", "-f", "-s", "data-mini"], "data-mini", "[data mini]",
                          at_marker=lambda: any(n.startswith(".mini.") for n in os.listdir(data)))
    assert_whole(p.root)
    assert landed, "no kill landed while the data stage was running"
    # once the moment DVC starts rewriting dvc.lock after the stage (it truncates, then writes): the
    # kill CI once landed by chance. Here it cut the lock in 30 of 30 tries; mended inside kill_during
    kill_during(p, ["repro", "-f", "-s", "data-mini"], "data-mini", "[data mini]", at_marker=_lock_write_began(p))
    assert_whole(p.root)
    finish_and_compare(p, built)


def _lock_write_began(p: Project):
    lock = p.root / "dvc.lock"
    before = lock.stat().st_mtime_ns

    def began() -> bool:
        try:
            st = lock.stat()
        except FileNotFoundError:
            return False
        return st.st_size == 0 or st.st_mtime_ns != before
    return began


def _cut_inside(text: str, stage: str) -> str:
    """dvc.lock as a kill inside DVC's write leaves it: the text cut in the middle of `stage`'s entry."""
    at = text.index(f"\n  {stage}:\n")
    cut = text.index("md5: ", at) + 9  # mid-hash: what is left is still a string, DVC's schema alone would not see it
    return text[:cut]


def test_dvc_lock_cut_by_a_kill_is_mended(built, tmp_path):
    """The three cuts a kill inside DVC's lock write leaves (empty, mid-entry with the stages' copy,
    mid-entry without one): `tunebook status` says what to run, `tunebook repair` mends it, and the next
    `dvc repro` reruns only what lost its entry, cheaply, to the same numbers."""
    p = copy_project(built, tmp_path / "p")
    lock, keep = p.root / "dvc.lock", p.root / lockfile.WHOLE
    whole = yaml.safe_load(built.lock)["stages"]
    # the copy is the lock as the last stage (report-mini) started: every entry but that stage's own
    assert yaml.safe_load(keep.read_text())["stages"] == {k: v for k, v in whole.items() if k != "report-mini"}
    weights = sorted((p.root / "runs/mini/train").rglob("*.safetensors"))
    before = {w: (w.read_bytes(), w.stat().st_mtime_ns) for w in weights}
    stages = list(whole)

    for cut, copy in (("", True), (_cut_inside(built.lock, "train-mini"), True), (_cut_inside(built.lock, "train-mini"), False)):
        lock.write_text(cut)
        if not copy:
            keep.unlink()
        refused = p.run(["dvc", "status"], check=False)
        found = lockfile.damage(p.root)
        assert found is not None and found.dvc_refuses == (refused.returncode != 0), (found, refused.stdout, refused.stderr)
        status = p.tunebook("status", check=False)
        assert "tunebook repair" in status.stderr and "Traceback" not in status.stderr, status.stderr
        mended = p.tunebook("repair").stdout
        assert "Next: `dvc status`" in mended, mended
        if copy:  # every entry but report-mini's comes back as DVC wrote it: only the report reruns
            assert {k: v for k, v in yaml.safe_load(lock.read_text())["stages"].items() if k != "report-mini"} == \
                {k: v for k, v in whole.items() if k != "report-mini"}, mended
            assert set(json.loads(p.run(["dvc", "status", "--json"]).stdout)) <= {"report-mini"}
            finish_and_compare(p, built)
        else:  # the entry the cut fell in, and every one after it, are gone: DVC reruns those stages
            dropped = stages[stages.index("train-mini"):]
            assert "no whole entry left for: train-mini (the cut fell in it)" in mended, mended
            assert f"no entry for: {', '.join(dropped[1:])} (lost after the cut, or never run)" in mended, mended
            out = p.run(["dvc", "repro"]).stdout
            assert "this run already finished" in out, out  # a finished training is not redone
            finish_and_compare(p, built)
    assert {w: (w.read_bytes(), w.stat().st_mtime_ns) for w in weights} == before, "the adapter was retrained"
    assert len(list((p.root / lockfile.KEEP).glob("dvc.lock.damaged-*"))) == 3  # each damaged file is kept
    tried("kills")


def test_sigkill_during_report_rendering(built, tmp_path):
    p = copy_project(built, tmp_path / "p")
    plots = p.root / "logs/plots/mini"
    landed = kill_during(p, ["repro", "-f", "-s", "report-mini"], "report-mini", "[report mini]", delay=(0.5, 4.0), seed=1)
    assert_whole(p.root)
    landed += kill_during(p, ["repro", "-f", "-s", "report-mini"], "report-mini", "[report mini]",
                          at_marker=lambda: (p.root / "runs/mini/record.json").exists() and plots.exists())
    assert_whole(p.root)
    assert landed, "no kill landed while the report stage was running"
    finish_and_compare(p, built)


def test_tunebook_report_never_touches_the_record_even_when_killed(built, tmp_path):
    p = copy_project(built, tmp_path / "p")
    record, log = p.root / "runs/mini/record.json", p.root / "logs/mini.md"
    before = record.read_bytes(), record.stat().st_mtime_ns
    p.tunebook("report", "mini")
    assert (record.read_bytes(), record.stat().st_mtime_ns) == before, "`tunebook report` modified the record"
    assert log.read_bytes() == built.files["logs/mini.md"], "re-rendering the same record changed the log"
    assert "up to date" in p.run(["dvc", "status"]).stdout.lower()
    rng = random.Random(3)
    for _ in range(2):  # killed mid-render: the log is the old one or a whole new one, never half
        proc = subprocess.Popen(tunebook_cmd() + ["report", "mini"], cwd=p.root, env=p.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 2.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        tried("kills")
        assert (record.read_bytes(), record.stat().st_mtime_ns) == before
        assert log.read_bytes() == built.files["logs/mini.md"]
    assert_whole(p.root)


def test_a_dvc_exp_run_keeps_the_previous_record_recoverable(built, tmp_path):
    """Records and logs are `cache: false` outputs: only git can keep their history, so the project's
    .gitignore must leave them tracked (it did not, until 9752c1b). A variant replaces the record in the
    workspace; the previous one stays in the commit, the variant's in its experiment commit."""
    p = copy_project(built, tmp_path / "p")
    p.run(["git", "add", "-A"])
    p.run(["git", "commit", "-qm", "first run"])
    first = (p.root / "runs/mini/record.json").read_bytes()
    lock = yaml.safe_load(p.run(["git", "show", "HEAD:dvc.lock"]).stdout)
    # a variant that reruns only the report stage: the cheapest way to replace the record
    p.run(["dvc", "exp", "run", "-S", "mini.expect.target_gain=0.5"])
    assert (p.root / "runs/mini/record.json").read_bytes() != first
    p.tunebook("report", "mini")  # and render again, as a user would
    out = next(o for o in lock["stages"]["report-mini"]["outs"] if o["path"] == "runs/mini/record.json")
    cached = p.root / ".dvc/cache/files/md5" / out["md5"][:2] / out["md5"][2:]  # if it were DVC-cached
    in_git = p.run(["git", "show", "HEAD:runs/mini/record.json"], check=False)
    recovered = cached.read_bytes() if cached.exists() else (in_git.stdout.encode() if in_git.returncode == 0 else None)
    assert recovered == first, "the first experiment's record is in neither git nor the DVC cache"
    assert p.run(["git", "show", "HEAD:logs/mini.md"]).stdout.encode() == built.files["logs/mini.md"]
    # and the variant's record lives in its experiment commit
    refs = [r for r in p.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"]).stdout.split() if "/exec/" not in r]
    assert len(refs) == 1, refs
    variant = p.run(["git", "show", f"{refs[0]}:runs/mini/record.json"]).stdout
    assert json.loads(variant)["expect"]["target_gain"] == 0.5
    assert variant.encode() == (p.root / "runs/mini/record.json").read_bytes()
