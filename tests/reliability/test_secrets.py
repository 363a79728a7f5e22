"""Secrets are read where they are used and written nowhere.

The shared project ran its whole pipeline with a fake hub token (HF_TOKEN, HUGGING_FACE_HUB_TOKEN)
and a fake judge API key in the environment, and with a judged evaluation whose OpenAI-compatible
judge (a fake on localhost) really received the key. Every file in the project (records, reports,
dvc.lock, params.yaml, data, runs/** with dvclive, DVC's cache and state, git objects and history)
and everything the commands printed are searched for the secrets, raw and in the encodings a
careless writer might use.
"""

from __future__ import annotations

import base64
import json
import zlib
from pathlib import Path

import pytest

from tests.reliability.conftest import FAKE_JUDGE_KEY, FAKE_SPEC_TOKEN, SECRETS
from tests.reliability.tally import tried

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def needles(secret: str) -> list[bytes]:
    raw = secret.encode()
    return [raw, base64.b64encode(raw), raw.hex().encode(), json.dumps(secret).encode(), secret.encode("utf-16-le")]


def files_under(root: Path):
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            yield path


def git_object_text(path: Path) -> bytes:
    """Loose git objects are zlib-compressed: search them inflated."""
    try:
        return zlib.decompress(path.read_bytes())
    except zlib.error:
        return b""


def test_secrets_appear_in_no_file_and_no_output(built, fake_judge):
    p = built.project
    # the judge really ran, with the key: otherwise this test would prove nothing about the judge path
    assert FAKE_JUDGE_KEY in fake_judge.keys_seen, "the judged evaluation never sent its key"
    assert any(m["suite"] == "judge" for m in built.record["metrics"]), "no judge metrics in the record"

    # what `dvc exp show` prints (the description is a param) goes into the searched output too
    p.run(["dvc", "exp", "show", "--no-pager", "--md"], check=False)
    p.run(["dvc", "params", "diff", "--all"], check=False)
    # the one place a pasted token may stay is the spec file the user pasted it into (and its git blob)
    spec = (p.root / "specs/mini.yaml").read_bytes()
    assert FAKE_SPEC_TOKEN.encode() in spec, "the spec lost its pasted token: this test would prove nothing"
    searched, hits = 0, []
    for path in list(files_under(p.root)) + [p.log]:
        if path == p.root / "specs/mini.yaml":
            continue
        blobs = [path.read_bytes()]
        if "/.git/objects/" in path.as_posix():
            inflated = git_object_text(path)
            if inflated.endswith(spec) and inflated.startswith(b"blob "):
                continue
            blobs.append(inflated)
        searched += 1
        for secret in SECRETS:
            for needle in needles(secret):
                if any(needle in b for b in blobs):
                    hits.append(f"{path.relative_to(p.root.parent)} holds {secret[:8]}... as {needle[:12]!r}")
    history = p.run(["git", "log", "-p", "--all", "--binary", "--", ".", ":(exclude)specs/mini.yaml"]).stdout.encode()
    hits += [f"git history holds {s[:8]}..." for s in SECRETS if s.encode() in history]
    record_title = built.record.get("title") or ""
    assert "[redacted]" in record_title, f"the record's title kept no redaction mark: {record_title!r}"
    assert searched > 50, f"only {searched} files searched: the project did not run"
    assert not hits, "\n".join(hits)
    tried("hostile inputs", len(SECRETS))
    tried("secret leaks", len(SECRETS))


def test_params_name_the_key_variable_not_the_key(built):
    params = (built.project.root / "params.yaml").read_text()
    assert "api_key_env: TUNEBOOK_FAKE_JUDGE_API_KEY" in params  # the NAME is configuration...
    assert FAKE_SPEC_TOKEN not in params and "[redacted]" in params  # a pasted token is not
    assert FAKE_JUDGE_KEY not in params  # ...the value never is
