"""Spec errors: gathered, located (file, dotted key path, line), with a suggestion when one exists.

The CLI prints them all at once and exits 2; a traceback appears only with --verbose.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

# Control characters and lone surrogates, as they may come from a spec (YAML "\e" escapes) or a file
# name: echoed raw, they could rewrite the user's terminal or fail to encode.
_UNPRINTABLE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def printable(text: object, keep_newlines: bool = False) -> str:
    """Text safe to print to a terminal: control characters and lone surrogates shown escaped."""
    out = _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape", "backslashreplace").decode("ascii"), str(text))
    return out if keep_newlines else out.replace("\n", "\\n")


@dataclass(frozen=True)
class SpecIssue:
    file: str
    path: str  # dotted key path, e.g. "method.lr"; "" for the whole file
    message: str
    line: int | None = None
    hint: str | None = None

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line else "")
        key = f" {self.path}:" if self.path else ""
        hint = f" ({self.hint})" if self.hint else ""
        return printable(f"{where}:{key} {self.message}{hint}")


class SpecError(Exception):
    """One or more problems in spec files. Exit code 2."""

    exit_code = 2

    def __init__(self, issues: list[SpecIssue]):
        self.issues = sorted(issues, key=lambda i: (i.file, i.line or 0, i.path))
        super().__init__("\n".join(str(i) for i in self.issues))


class StaleError(Exception):
    """Generated files are out of date or were edited by hand. Exit code 3."""

    exit_code = 3


# Names researchers bring from transformers/trl/peft arguments, mapped to tunebook's keys, so that
# `learnig_rate` (a typo of `learning_rate`) still suggests `lr`.
SYNONYMS = {
    "learning_rate": "lr",
    "num_train_epochs": "epochs",
    "num_epochs": "epochs",
    "per_device_train_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum",
    "max_length": "max_seq_length",
    "lora_r": "r",
    "rank": "r",
    "lora_alpha": "alpha",
    "lora_dropout": "dropout",
    "lr_scheduler_type": "scheduler",
    "model_name_or_path": "base",
    "dataset": "source",
}


def did_you_mean(word: str, options) -> str | None:
    options = sorted(options)
    close = difflib.get_close_matches(str(word), options, n=1, cutoff=0.6)
    if not close:
        alias = difflib.get_close_matches(str(word), list(SYNONYMS), n=1, cutoff=0.8)
        close = [SYNONYMS[alias[0]]] if alias and SYNONYMS[alias[0]] in options else []
    return f"did you mean '{close[0]}'?" if close else None
