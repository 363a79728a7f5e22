"""What a spec may ask for that reaches beyond its project: hub revisions, judge keys and hosts.

A spec is input a researcher may not have written (a colleague's, a pull request's, a paper's): it
cannot name a file outside the project (compiler/load.py), and here it cannot steer a hub lookup out of
the cache, nor send a secret anywhere but a judge the *project* allows. The same checks run when
`tunebook compile` reads the spec and when a stage reads params.yaml (`dvc exp run -S` and hand edits
bypass the compiler), and the judge checks once more right before a key is read (runtime/suites/judge.py).

- A hub `revision` is a commit, tag or branch name (git's ref-name rules, `refs/pr/<n>` included):
  no `..`, no leading `/` or `-`, no `\\`, no control characters, no component starting with `.`.
  A `hf:` repo id is `name` or `owner/name`.
- A judge's `api_key_env` is the NAME of a variable ending in `_API_KEY` or `_TOKEN`, and not one of
  the well-known credentials of other services (CREDENTIALS below: cloud, CI, git forges, the hub).
  A value that looks like a token where a name is expected is refused without echoing it.
- A judge `url` is http(s) with no credentials in it (`user:pass@`, a `?api_key=` or token-looking
  query). A loopback host (localhost, 127.0.0.0/8, ::1) is free; any other host must be listed by the
  project, where a spec cannot write: `[judges] hosts = [...]` in `tunebook.toml` at the project root,
  or `TUNEBOOK_JUDGE_HOSTS` (comma-separated) in the environment. A remote host with a key must use https.
- Free text (a spec's `description`) that looks like a secret is a compile warning; the secret-looking
  part is replaced by `[redacted]` before it reaches params.yaml, the record or the log.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
import re
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

# --- secrets -----------------------------------------------------------------------------------------
# Shapes of credentials, named so a warning says what was seen (the value itself is never echoed).
SECRET_SHAPES = [
    ("a Hugging Face token", re.compile(r"\bhf_[A-Za-z0-9]{20,}")),
    ("an API key (sk-...)", re.compile(r"\bsk-[A-Za-z0-9_-]{16,}")),
    ("a Stripe-style key", re.compile(r"\b[spr]k_(?:live|test)_[A-Za-z0-9]{10,}")),
    ("a GitHub token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})")),
    ("an AWS access key id", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("a Google API key", re.compile(r"\bAIza[0-9A-Za-z_-]{30,}")),
    ("a Slack token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("a JSON web token", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")),
    ("a private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    # a long run of mixed-case letters and digits, the shape of most generated keys (a git commit,
    # lowercase hex, is not one)
    ("a long random-looking token", re.compile(r"(?<![A-Za-z0-9])(?=[A-Za-z0-9]*[a-z])(?=[A-Za-z0-9]*[A-Z])"
                                               r"(?=[A-Za-z0-9]*[0-9])[A-Za-z0-9]{32,}")),
]
REDACTED = "[redacted]"


def secret_kind(text: str) -> str | None:
    """What kind of secret `text` seems to hold, or None."""
    for kind, pattern in SECRET_SHAPES:
        if pattern.search(text):
            return kind
    return None


def redact(text: str) -> str:
    """`text` with every secret-looking part replaced by [redacted]."""
    for _, pattern in SECRET_SHAPES:
        text = pattern.sub(REDACTED, text)
    return text


# --- judge keys ----------------------------------------------------------------------------------------
KEY_NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,94}_(API_KEY|TOKEN)$")
# Credentials of other services: a judge has no business with them even when their names fit.
CREDENTIALS = frozenset({
    "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_TOKEN", "HF_HUB_TOKEN",
    "GITHUB_TOKEN", "GH_TOKEN", "GH_ENTERPRISE_TOKEN", "GITLAB_TOKEN", "CI_JOB_TOKEN", "CI_JOB_JWT_TOKEN",
    "ACTIONS_RUNTIME_TOKEN", "ACTIONS_ID_TOKEN_REQUEST_TOKEN", "BITBUCKET_TOKEN",
    "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AZURE_DEVOPS_EXT_PAT_TOKEN", "GOOGLE_OAUTH_ACCESS_TOKEN",
    "CLOUDSDK_AUTH_ACCESS_TOKEN", "DIGITALOCEAN_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN", "HEROKU_API_KEY",
    "NPM_TOKEN", "NODE_AUTH_TOKEN", "PYPI_TOKEN", "PYPI_API_TOKEN", "TWINE_PASSWORD", "DOCKER_TOKEN",
    "VAULT_TOKEN", "CONSUL_HTTP_TOKEN", "SLACK_TOKEN", "SLACK_BOT_TOKEN", "WANDB_API_KEY", "DVC_STUDIO_TOKEN",
    "STUDIO_TOKEN", "KAGGLE_KEY", "CODECOV_TOKEN", "SENTRY_AUTH_TOKEN", "CLOUDFLARE_API_TOKEN", "CF_API_TOKEN",
})


def key_name_problem(name: object) -> str | None:
    """Why `name` may not be a judge's `api_key_env`, or None. Never echoes a token-looking value."""
    if not isinstance(name, str):
        return "must be the NAME of an environment variable"
    if secret_kind(name) or (len(name) >= 20 and not KEY_NAME_RE.fullmatch(name) and re.search(r"[a-z]", name) and re.search(r"\d", name)):
        return (f"looks like a key itself ({secret_kind(name) or 'a token'}, shown here only as '{name[:3]}…'), "
                "not the NAME of an environment variable: put the key in the environment and name the variable "
                "(e.g. JUDGE_API_KEY); if the key was committed, revoke it")
    if not KEY_NAME_RE.fullmatch(name):
        return (f"'{name[:60]}' is not allowed: a judge key variable is named like *_API_KEY or *_TOKEN in capitals "
                "(e.g. JUDGE_API_KEY), so a spec cannot send any other variable (HOME, AWS_SECRET_ACCESS_KEY) to a server")
    if name in CREDENTIALS:
        return f"'{name}' holds another service's credential; give the judge its own variable (e.g. JUDGE_API_KEY)"
    return None


# --- judge hosts ---------------------------------------------------------------------------------------
SETTINGS_FILE = "tunebook.toml"
HOSTS_ENV = "TUNEBOOK_JUDGE_HOSTS"
_SECRET_QUERY = re.compile(r"key|token|secret|pass|auth|sig|credential|session|bearer", re.I)


def allowed_hosts(root: Path) -> set[str]:
    """Remote judge hosts the project allows: `[judges] hosts` in tunebook.toml, plus TUNEBOOK_JUDGE_HOSTS."""
    hosts = {h.strip().lower() for h in os.environ.get(HOSTS_ENV, "").split(",") if h.strip()}
    path = Path(root) / SETTINGS_FILE
    if path.is_file():
        try:
            listed = tomllib.loads(path.read_text(encoding="utf-8")).get("judges", {}).get("hosts", [])
        except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError, AttributeError):
            listed = []
        hosts |= {str(h).strip().lower() for h in listed if isinstance(h, str)} if isinstance(listed, list) else set()
    return hosts


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_problem(url: object, root: Path, sends_key: bool) -> str | None:
    """Why a judge may not be reached at `url`, or None. Never echoes a credential found in it."""
    if not isinstance(url, str):
        return "must be a URL"
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        return "contains spaces or control characters"
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as e:
        return f"is not a usable URL ({e})"
    if parts.scheme not in ("http", "https") or not host:
        return "must be an http:// or https:// URL with a host (e.g. http://127.0.0.1:8000/v1)"
    if "@" in parts.netloc:
        return ("holds credentials (user:password@host): they would be written to params.yaml and the record; "
                "put the key in the environment and name it with api_key_env")
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if _SECRET_QUERY.search(name) or secret_kind(value):
            return (f"holds a credential in its query ('{name[:30]}=…'): it would be written to params.yaml and the "
                    "record; put the key in the environment and name it with api_key_env")
    if secret_kind(parts.path) or secret_kind(parts.fragment):
        return "holds what looks like a key in its path: put the key in the environment and name it with api_key_env"
    if is_loopback(host):
        return None
    if host not in allowed_hosts(root):
        return (f"host '{host}' is not allowed: a judge on another machine must be listed by the project, where a spec "
                f"cannot write it ([judges] hosts = [\"{host}\"] in {SETTINGS_FILE}, or {HOSTS_ENV}); loopback hosts are free")
    if sends_key and parts.scheme != "https":
        return f"sends its key to '{host}' over plain http: use https for a host other than this machine"
    return None


# --- hub names -----------------------------------------------------------------------------------------
MAX_REVISION = 255
_REF_CHAR = re.compile(r"^[A-Za-z0-9._/+-]+$")
REPO_ID_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,95})(?:/[A-Za-z0-9](?:[A-Za-z0-9._-]{0,95}))?$")


def revision_problem(rev: object) -> str | None:
    """Why `rev` is not a commit, tag or branch name, or None."""
    if rev is None:
        return None
    if not isinstance(rev, str):
        return f"must be a commit, tag or branch name (text), not {type(rev).__name__}"
    bad = "a commit, tag or branch name (e.g. main, v1.0, refs/pr/3 or a 40-hex commit)"
    if not rev or len(rev) > MAX_REVISION or not _REF_CHAR.fullmatch(rev):
        return f"{rev[:60]!r} is not {bad}: letters, digits and . _ - + / only"
    parts = rev.split("/")
    if (rev.startswith(("-", "/")) or rev.endswith(("/", ".", ".lock")) or ".." in rev or "" in parts
            or any(p.startswith(".") or p.endswith(".lock") for p in parts)):
        return f"{rev[:60]!r} is not {bad}: no '..', no empty or hidden component, no leading '/' or '-'"
    return None


def repo_id_problem(repo_id: str) -> str | None:
    if not REPO_ID_RE.fullmatch(repo_id) or ".." in repo_id or repo_id.endswith("."):
        return f"'hf:{repo_id[:60]}' is not a hub repo id (hf:name or hf:owner/name)"
    return None


# --- a whole spec --------------------------------------------------------------------------------------
def policy_problems(spec, root: Path) -> list[tuple[tuple, str]]:
    """(key path, message) for every revision, hub id, judge key and judge URL the policy refuses."""
    out: list[tuple[tuple, str]] = []

    def rev(loc: tuple, value) -> None:
        if (msg := revision_problem(value)) is not None:
            out.append((loc, msg))

    rev(("model", "revision"), spec.model.revision)
    sources = [(("data", "train", i), s) for i, s in enumerate(spec.data.train)]
    if spec.data.validation:
        sources.append((("data", "validation"), spec.data.validation))
    for loc, s in sources:
        rev((*loc, "revision"), s.revision)
        if s.source.startswith("hf:") and (msg := repo_id_problem(s.source[3:])):
            out.append(((*loc, "source"), msg))
    for loc, s in [(("eval", "target", i), t) for i, t in enumerate(spec.eval.target)]:
        if s.source.startswith("hf:") and (msg := repo_id_problem(s.source[3:])):
            out.append(((*loc, "source"), msg))
    if spec.method.teacher:
        rev(("method", "teacher", "revision"), spec.method.teacher.revision)
    if spec.eval.reward:
        rev(("eval", "reward", "revision"), spec.eval.reward.revision)
    if spec.eval.judge:
        for i, j in enumerate(spec.eval.judge.judges):
            loc = ("eval", "judge", "judges", i)
            rev((*loc, "revision"), j.revision)
            if j.api_key_env is not None and (msg := key_name_problem(j.api_key_env)):
                out.append(((*loc, "api_key_env"), msg))
            if j.url is not None and (msg := url_problem(j.url, root, j.api_key_env is not None)):
                out.append(((*loc, "url"), msg))
    return out


def text_warnings(data, prefix: tuple = ()) -> list[tuple[tuple, str]]:
    """(key path, kind) for each string in a spec's raw data that looks like a secret."""
    out = []
    if isinstance(data, dict):
        for k, v in data.items():
            if isinstance(k, str) and secret_kind(k):
                out.append(((*prefix, k[:3] + "…"), secret_kind(k)))
            out += text_warnings(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += text_warnings(v, (*prefix, i))
    elif isinstance(data, str) and (kind := secret_kind(data)):
        out.append((prefix, kind))
    return out


def secret_warnings(loaded, root: Path) -> list[str]:
    """A warning per line of a spec file (parents included) that looks like it holds a secret: free text
    such as `description` is redacted on its way out, but the file itself is committed."""
    files = dict.fromkeys(f for ls in loaded for f in [ls.file, *(f for f, _ in getattr(ls, "origins", {}).values())])
    out = []
    for file in files:
        path = Path(file) if Path(file).is_absolute() else Path(root) / file
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()[:100_000]
        except OSError:
            continue
        for n, line in enumerate(lines, 1):
            if kind := secret_kind(line):
                out.append(f"{file}:{n}: this line looks like it holds {kind} (not shown): free text is written with it "
                           f"replaced by {REDACTED}, but the spec file itself is committed; if the secret is real, revoke it")
    return out
