"""Safe markdown: record text is escaped, never evaluated; templates are sandboxed and strict."""

from __future__ import annotations

import pytest
from jinja2 import UndefinedError
from jinja2.sandbox import SecurityError

from tunebook.reports.markdown import ci, duration, environment, fence, md, num, render, signed, value
from tunebook.files import write_atomic
from tunebook.reports.stats import Interval


def test_md_escapes_markdown_and_html():
    assert md("a|b") == "a\\|b"
    assert md("<script>x</script>") == "&lt;script&gt;x&lt;/script&gt;"
    assert md("line1\nline2") == "line1<br>line2"
    assert md("{{ 7*7 }}") == "{{ 7\\*7 }}"
    # a bare URL is broken up (`:\/\/`) so GitHub's autolinking cannot make a link of it (issue 16)
    assert md("[link](http://x) `code` ~~s~~ $x$") == "\\[link\\](http:\\/\\/x) \\`code\\` \\~\\~s\\~\\~ \\$x\\$"
    # underscores inside words stay readable; emphasis markers do not
    assert md("tiny_facts_color _em_") == "tiny_facts_color \\_em\\_"


def test_fence_cannot_be_closed_by_its_content():
    text = "before\n```\n<script>\n```` after"
    block = fence(text)
    assert block.startswith("`````text\n") and block.endswith("\n`````")
    assert text in block


def test_number_formats():
    assert num(None) == "—" and num(0.84301) == "0.8430" and num(169200.0) == "169,200"
    assert signed(-0.5433) == "-0.5433" and signed(None) == "—"
    assert ci(Interval(-0.1, -0.2, 0.0, "stderr")) == "[-0.2000, +0.0000]"
    assert ci(Interval(-0.1, None, None, "unknown")) == "unknown" and ci(None) == "—"
    assert duration(36.0) == "36.0 s" and duration(125) == "2m 05s" and duration(169200) == "47h 00m"
    assert value(1e-05) == "1e-05" and value({"b": 1, "a": [1, 2]}) == '{"a":\\[1,2\\],"b":1}' and value(None) == "—"


def test_environment_is_sandboxed_and_strict():
    env = environment()
    with pytest.raises(UndefinedError):
        env.from_string("{{ missing }}").render()
    with pytest.raises(SecurityError):
        env.from_string("{{ x.__class__.__mro__ }}").render(x=1)
    with pytest.raises(SecurityError):
        env.from_string("{{ items.append(1) }}").render(items=[])


def test_every_printed_value_is_escaped():
    out = environment().from_string("{{ a }} {{ b | num }} {{ c }}").render(a="x|<y>", b=0.5, c=None)
    assert out == "x\\|&lt;y&gt; 0.5000 —"


def test_templates_render_with_strict_undefined():
    with pytest.raises(UndefinedError):
        render("experiment.md.j2")


def test_write_atomic_leaves_no_temporary_files(tmp_path):
    path = write_atomic(tmp_path / "deep" / "log.md", "text\n")
    assert path.read_text() == "text\n"
    assert [p.name for p in path.parent.iterdir()] == ["log.md"]
    assert write_atomic(tmp_path / "img.png", b"\x89PNG").read_bytes() == b"\x89PNG"
