"""tunebook.compiler: validate specs and compile them into DVC stages and params. Never imports torch."""

from tunebook.compiler.compile import Pipeline, Stage, baseline_key, compile_specs
from tunebook.compiler.errors import SpecError, SpecIssue, StaleError
from tunebook.compiler.load import LoadedSpec, discover, load_spec, load_specs
from tunebook.compiler.schema import Spec
from tunebook.compiler.write import render_pipeline, write_pipeline

__all__ = [
    "LoadedSpec", "Pipeline", "Spec", "SpecError", "SpecIssue", "Stage", "StaleError", "baseline_key",
    "compile_specs", "discover", "load_spec", "load_specs", "render_pipeline", "write_pipeline",
]
