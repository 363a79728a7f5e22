"""Safe markdown: the Jinja environment, the escaping of record text, number formats, atomic writes.

Text in a record (names, notes, model outputs) is data, never template: it reaches Jinja only as a
value, and every value printed by `{{ }}` is escaped for markdown unless a filter here already made
it safe (numbers we formatted, fenced blocks). The environment is sandboxed, undefined names are
errors (`StrictUndefined`), and all templates are parsed when the environment is built.
"""

from __future__ import annotations

import functools
import json
import math
import re
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

from tunebook.reports.stats import Interval

TEMPLATES = Path(__file__).parent / "templates"

# characters with a meaning in (GitHub-flavoured) markdown tables and inline text
_SPECIAL = re.compile(r"\r\n|[\r\n]|[\\`*\[\]|~$]|&|<|>|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")
_REPLACE = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r\n": "<br>", "\n": "<br>", "\r": "<br>"}


# Characters that must not reach a log as they are: C0/C1 controls but tab and newlines (ESC rewrites a
# terminal on `cat`, NUL makes git call the file binary), bidirectional overrides and isolates (text that
# reads other than it is stored), zero-width and BOM, U+FFFE/U+FFFF, lone surrogates. Shown as \\uXXXX.
_INVISIBLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069"
                        "\ufeff\ufff9-\ufffb\ufffe\uffff\ud800-\udfff]")
# At the start of a text: what would open a heading, a list, a quote, a rule or a setext underline
_LEADING = re.compile(r"^(\s*)(#{1,6}(?=\s|$)|[-+](?=\s|$)|-{3,}|\d{1,9}(?=[.)](?:\s|$)))")
# A bare URL becomes a link on GitHub (the autolink extension): broken up so it shows as text
_AUTOLINK = re.compile(r"(?i)(?<=[a-z0-9+.-])(://)|\b(www)(\.)")


def visible(text: Any) -> str:
    """`text` with every invisible or control character shown as a \\uXXXX escape (tab and newlines kept)."""
    return _INVISIBLE.sub(lambda m: f"\\u{ord(m.group()):04x}", str(text))


def md(text: Any) -> Markup:
    """Record text as inline markdown that shows literally (also inside a table cell): no markup, no
    link, no block structure from its first characters, no control or bidi character."""
    text = _SPECIAL.sub(lambda m: _REPLACE.get(m.group(), "\\" + m.group()), visible(text))
    if text.startswith(("    ", "\t")):  # an indented code block, a nested list: the first blank as an entity
        text = ("&#32;" if text[0] == " " else "&#9;") + text[1:]
    text = _LEADING.sub(lambda m: m.group(1) + (m.group(2) + "\\" if m.group(2)[0].isdigit() else "\\" + m.group(2)), text)
    text = _AUTOLINK.sub(lambda m: ":\\/\\/" if m.group(1) else m.group(2) + "\\.", text)
    return Markup(text)


def fence(text: Any, info: str = "text") -> Markup:
    """A fenced block that no content can close early: the fence is longer than any backtick run in it."""
    text = visible(text)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    return Markup(f"{ticks}{info}\n{text}\n{ticks}")


def num(x: float | None, digits: int = 4) -> Markup:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return Markup("—")
    if isinstance(x, int) or abs(x) >= 10_000:
        return Markup(f"{x:,.0f}")
    return Markup(f"{x:.{digits}f}")


def sig(x: float | None, digits: int = 4) -> Markup:
    """Significant digits, for logged values whose scale varies (learning rates, gradient norms)."""
    return Markup("—") if x is None else Markup(f"{x:.{digits}g}")


def signed(x: float | None, digits: int = 4) -> Markup:
    if x is None:
        return Markup("—")
    return Markup(f"{x:+.{digits}f}")


def pct(x: float | None, digits: int = 1) -> Markup:
    if x is None:
        return Markup("—")
    return Markup(f"{x * 100:+.{digits}f}%")


def pval(p: float | None) -> Markup:
    """'p=0.013' (two significant digits), 'p<0.0001' below that."""
    if p is None:
        return Markup("—")
    return Markup("p<0.0001" if p < 1e-4 else f"p={p:.2g}")


def share(x: float | None) -> Markup:
    return Markup("—") if x is None else Markup(f"{x * 100:.1f}%")


def ci(interval: Interval | None, digits: int = 4) -> Markup:
    if interval is None:
        return Markup("—")
    if not interval.known:
        return Markup("unknown")
    return Markup(f"[{interval.low:+.{digits}f}, {interval.high:+.{digits}f}]")


def duration(seconds: float | None) -> Markup:
    if seconds is None:
        return Markup("—")
    if seconds < 60:
        return Markup(f"{seconds:.1f} s")
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return Markup(f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s")


def value(v: Any) -> Markup:
    """A parameter value: compact and deterministic (sorted keys), `—` when absent; escaped."""
    if v is None:
        return Markup("—")
    if isinstance(v, bool):
        return Markup("true" if v else "false")
    if isinstance(v, float):
        return Markup(f"{v:g}")
    if isinstance(v, (dict, list)):
        return md(json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False))
    return md(v)


def short(digest: str | None, length: int = 12) -> Markup:
    return Markup("—") if not digest else md(digest[:length])


def change(row: Any) -> Markup:
    """A result row in one line: 'base → final (delta, CI [low, high]) badge label'."""
    if row.interval is None:
        return Markup(f"{num(row.final)} ({md(row.verdict)})")
    return Markup(f"{num(row.base)} → {num(row.final)} ({signed(row.interval.delta)}, CI {ci(row.interval)}) "
                  f"{md(row.verdict)}")


def _finalize(v: Any) -> Any:
    """Every `{{ }}` goes through here: safe markup passes, None shows as a dash, the rest is escaped."""
    if isinstance(v, Markup):
        return v
    if v is None:
        return "—"
    if isinstance(v, float):
        return num(v)
    return md(v)


@functools.cache
def environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined, autoescape=False, finalize=_finalize,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(fence=fence, num=num, sig=sig, signed=signed, pct=pct, pval=pval, share=share, ci=ci,
                       duration=duration, value=value, short=short, change=change)
    for name in env.list_templates(extensions=["j2"]):
        env.get_template(name)  # a syntax error surfaces here, before any record is read
    return env


def safe_name(name: str) -> str:
    """An experiment name usable as one path component (records are input, not trusted)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "experiment"


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)
