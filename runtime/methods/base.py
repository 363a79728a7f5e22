"""The `Method` protocol: everything the train stage asks of a training method, and nothing else.

A method is one object per spec `method.kind` (registered in runtime/methods/__init__.py). The train
stage (runtime/train.py) owns the run folder, resume, callbacks, logging and the summary; it asks the
method where its rows come from, whether they have the right shape, and for a trl trainer built over
the shared TrainingArguments (runtime/trainer_args.py), as trl pairs a `<method>_config.py` with a
`<method>_trainer.py` over one base config.

Imports only the spec's error types and the stage context: no torch, no trl.
"""

from __future__ import annotations

from pathlib import Path

from tunebook.compiler.errors import SpecError, SpecIssue
from tunebook.runtime.context import StageContext


class Method:
    """A training method. Subclasses set the class attributes and implement `build`; the defaults
    fit a method that trains on the data stage's rows.

    kind: the spec's `method.kind` (compiler/schema.py METHOD_BLOCKS lists the same kinds)
    row_fields: the row shapes it trains on, each a tuple of fields; the first is named in errors
    data_format: the data source `format:` that produces the first shape (named in the error's hint)
    rows_stage: the stage that writes its rows (named when they are missing)
    samples_itself: True when the method samples completions during training and hands them to the
        watchdog itself (GRPO), so the watchdog needs no sampler of its own
    """

    kind: str = ""
    row_fields: tuple[tuple[str, ...], ...] = ()
    data_format: str = "prompt_completion"
    rows_stage: str = "data"
    samples_itself: bool = False

    def rows_file(self, ctx: StageContext) -> Path:
        """Where its training rows come from."""
        return ctx.data_dir / "train.jsonl"

    def preflight(self, ctx: StageContext) -> None:
        """Spec errors the params can show before any model is loaded (none by default)."""

    def no_rows(self, ctx: StageContext) -> str:
        """Why the rows file can be empty, for the error."""
        return "no rows"

    def check_rows(self, ctx: StageContext, rows: list[dict], path: Path) -> None:
        """Refuse rows of the wrong shape (the first row stands for all: the data stage wrote them)."""
        if not rows:
            raise SpecError([SpecIssue("params.yaml", f"{ctx.name}.data", f"{path}: {self.no_rows(ctx)}")])
        if any(all(f in rows[0] for f in shape) for shape in self.row_fields):
            return
        need = self.row_fields[0]
        missing = [f for f in need if f not in rows[0]]
        raise SpecError([SpecIssue("params.yaml", f"{ctx.name}.data.train",
                                   f"kind {self.kind} trains on {{{', '.join(need)}}} rows; {path.name} lacks {', '.join(missing)}",
                                   hint=f"set `format: {self.data_format}` (and `fields:` to map columns) on the data source")])

    def build(self, ctx: StageContext, out: Path, rows: list[dict], model, tok, callbacks: list, watchdog):
        """The trl trainer for this run: TrainingArguments from `trainer_args(ctx.spec.method, out)`
        plus the method's own settings, the LoRA config, and the stage's callbacks."""
        raise NotImplementedError

    def summary(self, ctx: StageContext) -> dict:
        """What this method adds to train/summary.json (nothing by default)."""
        return {}
