"""`compile`, `report` and `review` must start fast: they never import torch."""

from __future__ import annotations

import subprocess
import sys


def test_compiler_reports_and_cli_do_not_import_torch(root):
    code = (
        "import sys, tunebook.compiler, tunebook.reports.record, tunebook.cli, tunebook.runtime.record\n"
        "import tunebook.reports.render, tunebook.reports.review\n"
        "heavy = [m for m in ('torch', 'transformers', 'trl', 'peft', 'lm_eval') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)
