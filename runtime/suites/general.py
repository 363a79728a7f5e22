"""The general (forgetting) suite through lm-eval: any lm-eval task or group by name, or local task
YAMLs from `include_path`, scored on a loaded model; the eval and baseline stages run it as the
`general` cell (runtime/evaluate.py), and early stopping on `general` measures a subset of it
(runtime/train.py).

    eval:
      general: {tasks: [tiny_facts_color], include_path: data/tiny/tasks, limit: 40}

- Local task YAMLs are copied to a temp folder with their `data_files` made absolute (lm-eval needs
  that); the task index is built once per stage, and an unknown task fails before any compute with a
  did-you-mean.
- The model is wrapped in lm-eval's `HFLM` following the tokenizer on BOS: a model trained with <s>
  at the start of every text scores nonsense without it (lm-eval encodes contexts without special
  tokens by default).
- Every metric lm-eval reports is recorded, with per-item scores; a group (mmlu) has no samples of
  its own and gets its leaf tasks'. Each task's config is hashed without the temp-folder path and
  with local data files by content, so the hash is the same on every machine.
- A general cell's fingerprint inputs besides its settings are the harness version (a new lm-eval
  may score differently), read without importing lm_eval, and the content of local task files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from importlib import metadata
from pathlib import Path
from typing import ClassVar

import yaml

from tunebook.compiler.errors import SpecError, SpecIssue, did_you_mean
from tunebook.compiler.schema import GeneralEval
from tunebook.files import dict_sha256
from tunebook.runtime.suites.base import Reference, Setup, stderr


def lm_eval_version() -> str | None:
    """Without importing lm_eval (5 s): a changed harness must change the general cell's fingerprint."""
    try:
        return metadata.version("lm_eval")
    except metadata.PackageNotFoundError:
        return None


def files_digest(path: Path) -> str:
    """Hash of every file below a folder (local lm-eval tasks: YAML and data), names included."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _local_task_dir(root: Path, include_path: str) -> Path:
    """Copy local task YAMLs to a temp folder with data_files made absolute (lm-eval needs that)."""
    src = (root / include_path).resolve()
    if not src.is_dir():
        raise SpecError([SpecIssue("params.yaml", "eval.general.include_path", f"'{include_path}' is not a folder")])
    dst = Path(tempfile.mkdtemp(prefix="tunebook-tasks-"))
    for f in sorted(src.glob("*.yaml")):
        cfg = yaml.safe_load(f.read_text())
        files = (cfg.get("dataset_kwargs") or {}).get("data_files")
        if isinstance(files, dict):
            cfg["dataset_kwargs"]["data_files"] = {k: str((src / v).resolve()) for k, v in files.items()}
        (dst / f.name).write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dst


def quiet_lm_eval() -> None:
    """lm-eval's warnings are about how tunebook calls it (an already-built model passed in, num_fewshot
    set explicitly), not about the run: they stay out of stage logs. Errors still show, and
    LMEVAL_LOG_LEVEL=INFO (lm-eval's own switch) brings everything back for debugging."""
    level = logging.getLevelName(os.environ.get("LMEVAL_LOG_LEVEL", "").upper() or "ERROR")
    logging.getLogger("lm_eval").setLevel(level if isinstance(level, int) else logging.ERROR)


def task_manager(root: Path, general: GeneralEval):
    from lm_eval.tasks import TaskManager

    quiet_lm_eval()

    include = str(_local_task_dir(root, general.include_path)) if general.include_path else None
    tm = TaskManager(include_path=include)  # indexing every task takes seconds: once per stage
    check_tasks(tm, general.tasks)
    return tm


def check_tasks(tm, tasks: list[str]) -> None:
    unknown = [t for t in tasks if t not in tm.all_tasks]
    if unknown:
        raise SpecError([SpecIssue("params.yaml", "eval.general.tasks", f"unknown lm-eval task '{t}'",
                                   hint=did_you_mean(t, tm.all_tasks)) for t in unknown])


def _leaves(group_subtasks: dict, task: str) -> list[str]:
    """A group (mmlu) has no samples of its own: its leaf tasks, in a stable order."""
    subs = group_subtasks.get(task)
    return [leaf for s in sorted(subs) for leaf in _leaves(group_subtasks, s)] if subs else [task]


def _config_identity(cfg: dict) -> tuple[str, dict]:
    """(sha256 of a task's config, its dataset and revision). The temp-folder path is dropped and
    local data files are hashed by content, so the hash is the same on every machine."""
    cfg = json.loads(json.dumps(cfg, default=str))
    (cfg.get("metadata") or {}).pop("config_source", None)
    kwargs = cfg.get("dataset_kwargs") or {}
    files = kwargs.get("data_files")
    if isinstance(files, dict):
        kwargs["data_files"] = {k: hashlib.sha256(Path(v).read_bytes()).hexdigest() if Path(v).is_file() else v
                                for k, v in files.items()}
    dataset = {"path": cfg.get("dataset_path"), "name": cfg.get("dataset_name"),
               "revision": cfg.get("revision") or kwargs.get("revision")}
    return dict_sha256(cfg), dataset


def general_inputs(root: Path, general: GeneralEval) -> dict:
    """What decides a general cell besides its settings: the harness version (a new lm-eval may score
    differently) and the content of local task files."""
    local = files_digest(root / general.include_path) if general.include_path else None
    return {"lm_eval": lm_eval_version(), "local_tasks": local}


def _quiet_hflm():
    """lm-eval's HFLM without its per-request progress bars (it passes `disable` explicitly, so
    TQDM_DISABLE cannot reach them): the sweep prints one progress line per cell instead."""
    from lm_eval.models.huggingface import HFLM

    class QuietHFLM(HFLM):
        def loglikelihood(self, requests, disable_tqdm: bool = True):
            return super().loglikelihood(requests, disable_tqdm=True)

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = True):
            return super().loglikelihood_rolling(requests, disable_tqdm=True)

        def generate_until(self, requests, disable_tqdm: bool = True):
            return super().generate_until(requests, disable_tqdm=True)

    return QuietHFLM


def eval_general(model, tok, general: GeneralEval, tm, checkpoint: str) -> dict:
    import lm_eval

    quiet_lm_eval()
    # Follow the tokenizer on BOS: a model trained with <s> at the start of every text scores
    # nonsense without it (lm-eval encodes contexts without special tokens by default).
    lm = _quiet_hflm()(pretrained=model, tokenizer=tok, batch_size=general.batch_size,
              max_length=model.config.max_position_embeddings, add_bos_token=bool(getattr(tok, "add_bos_token", False)))
    res = lm_eval.simple_evaluate(model=lm, tasks=list(general.tasks), task_manager=tm, limit=general.limit,
                                  num_fewshot=general.num_fewshot, log_samples=True,
                                  bootstrap_iters=0, random_seed=0, numpy_random_seed=0, torch_random_seed=0)
    version = lm_eval_version()
    metrics, tasks_info, warnings = [], {}, []
    for task in general.tasks:
        r = res["results"][task]
        leaves = _leaves(res.get("group_subtasks", {}), task)
        samples = [s for t in leaves for s in sorted(res["samples"].get(t, []), key=lambda s: s["doc_id"])]
        higher = {k: v for t in [task, *leaves] for k, v in res.get("higher_is_better", {}).get(t, {}).items()}
        idents = [_config_identity(res["configs"][t]) for t in leaves if t in res.get("configs", {})]
        config_sha = dict_sha256([h for h, _ in idents])
        first_cfg = res.get("configs", {}).get(leaves[0], {})
        primary = general.primary_metrics.get(task) or next(iter(m["metric"] for m in first_cfg.get("metric_list") or []), None)
        n_total = sum(res.get("n-samples", {}).get(t, {}).get("effective", 0) for t in leaves)
        found = []
        for key, val in sorted(r.items()):
            if "," not in key or "_stderr" in key or not isinstance(val, (int, float)):
                continue
            name, filt = key.split(",", 1)
            metric = name if filt == "none" else f"{name}/{filt}"  # gsm8k's strict-match vs flexible-extract
            # per-item scores; ifeval's instruction-level metrics are lists per item and have none
            per = [float(s[name]) for s in samples if s.get("filter", "none") == filt and isinstance(s.get(name), (bool, int, float))]
            se = r.get(f"{name}_stderr,{filt}")
            if not isinstance(se, (int, float)) and len(per) > 1:
                se = stderr(per)
            found.append(metric)
            metrics.append({"suite": "general", "task": task, "metric": metric, "checkpoint": checkpoint,
                            "value": float(val), "stderr": float(se) if isinstance(se, (int, float)) else None,
                            "n": int(n_total or len(per)), "higher_is_better": bool(higher.get(name, True)),
                            "samples": per or None,
                            "extra": {"primary": metric == primary, "num_fewshot": general.num_fewshot,
                                      "task_version": res.get("versions", {}).get(task), "config_sha256": config_sha,
                                      "lm_eval_version": version}})
        if primary and primary not in found:
            warnings.append(f"{task}: primary metric '{primary}' not reported; it reports {', '.join(found) or 'nothing'}")
            print(f"[eval] warning: {warnings[-1]}", flush=True)
        tasks_info[task] = {"version": res.get("versions", {}).get(task), "config_sha256": config_sha, "primary": primary,
                            "datasets": [d for _, d in idents], "n": n_total}
    return {"metrics": metrics, "warnings": warnings,
            "lm_eval": {"version": version, "tasks": tasks_info, "num_fewshot": general.num_fewshot}}


class GeneralSuite:
    """The `general` cell: the spec's lm-eval tasks. `check()` builds the task index (seconds) and
    refuses unknown tasks."""

    name: ClassVar[str] = "general"
    on_base: ClassVar[bool] = True
    per_experiment: ClassVar[bool] = False
    against_base: ClassVar[bool] = False

    def __init__(self, setup: Setup):
        self.setup, self.general, self.tm = setup, setup.ev.general, None

    def cells(self) -> list[str]:
        return ["general"] if self.general else []

    def check(self) -> None:
        self.tm = task_manager(self.setup.root, self.general)

    def inputs(self, cell: str) -> dict:
        return {"settings": self.general.model_dump(mode="json"), **general_inputs(self.setup.root, self.general)}

    def run(self, cell: str, model, tok, checkpoint: str, weights_fp: str, reference: Reference) -> dict:
        return eval_general(model, tok, self.general, self.tm, checkpoint)
