"""Teacher-SFT, the training side (seed 001's SF-SFT): SFT on the solutions the teacher stage kept.

    method:
      kind: teacher-sft
      teacher: {base: builtin:tiny, num_samples: 4, reward: numeric_match}

The `teacher-<exp>` stage (runtime/teacher.py) samples and filters; it writes
`runs/<exp>/teacher/train.jsonl` ({prompt, completion}) and `manifest.json` (counts, pass rate).
This method trains on that file exactly as SFT does (runtime/methods/sft.py, anchors included) and
copies the manifest into train/summary.json, so the record shows what the model learned from.

Imported by the train stage only (trl at module level, through sft.py).
"""

from __future__ import annotations

from pathlib import Path

from tunebook.files import read_json
from tunebook.runtime.context import StageContext
from tunebook.runtime.methods.sft import SFT


class TeacherSFT(SFT):
    kind = "teacher-sft"
    rows_stage = "teacher"

    def rows_file(self, ctx: StageContext) -> Path:
        return ctx.run_dir / "teacher" / "train.jsonl"

    def no_rows(self, ctx: StageContext) -> str:
        return "the teacher kept no solutions (see runs/<exp>/teacher/manifest.json)"

    def summary(self, ctx: StageContext) -> dict:
        return {"teacher": read_json(ctx.run_dir / "teacher" / "manifest.json")}


METHOD = TeacherSFT()
