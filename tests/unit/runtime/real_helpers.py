"""Where the embedded real model's package is, for the tests that need it (skipped without the extra)."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

NAME = "smollm2-135m-instruct"
CFG = yaml.safe_load((ROOT / "compiler" / f"{NAME}.yaml").read_text())


def _gguf_file() -> Path | None:
    try:
        path = Path(str(metadata.distribution(CFG["package"]).locate_file(CFG["file"])))
        import gguf  # noqa: F401
    except (metadata.PackageNotFoundError, ImportError):
        return None
    return path if path.is_file() else None


GGUF = _gguf_file()
needs_real = pytest.mark.skipif(GGUF is None, reason="needs the real model's package: pip install 'tunebook[real]'")
