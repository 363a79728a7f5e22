"""Load base models and tokenizers: `builtin:<name>` (built in the project), a local folder, or a hub
repo at a pinned revision. `trust_remote_code` is passed only when the spec sets it. Also what
identifies a model's weights (`dir_digest`, `model_fingerprint`) and where models run (`device`).

A local folder may also be a peft LoRA adapter (another experiment's `runs/<exp>/train/final`: SFT, then
GRPO from it). Its adapter_config.json names its base (`builtin:<name>`, a project folder, or a hub id
at `revision`, as runtime/trainer_args.py `portable_adapter_config` writes it); the base is loaded
through the same code (so it may be an adapter itself) and the adapter merged into it
(`merge_and_unload`): the experiment starts from plain weights and trains a fresh LoRA on them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tunebook.compiler.compile import BUILTIN_CONFIGS, gguf_name, is_gguf
from tunebook.compiler.schema import ModelSpec
from tunebook.files import dict_sha256

BUILTIN = "builtin:"
ADAPTER_CONFIG = "adapter_config.json"
MAX_ADAPTER_DEPTH = 8  # adapters stacked on adapters: deeper than this is a loop of folders, refused
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "tokenizer.model", "vocab.json")


def is_adapter(path: str | Path) -> bool:
    """A local folder holding a peft adapter (adapter_config.json) rather than a full model."""
    return Path(path).is_dir() and (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base(folder: Path, spec: ModelSpec) -> ModelSpec:
    """The spec of the model an adapter folder was trained on, read from its adapter_config.json:
    `builtin:<name>`, a folder (relative to the project, or absolute), or a hub id with its revision.
    The dtype and trust_remote_code are the spec's own."""
    cfg_file = folder / ADAPTER_CONFIG
    try:
        cfg = json.loads(cfg_file.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{cfg_file} cannot be read as an adapter config ({e})") from None
    base = cfg.get("base_model_name_or_path") if isinstance(cfg, dict) else None
    if not base or not isinstance(base, str):
        raise ValueError(f"{cfg_file} names no base model (base_model_name_or_path): "
                         "the adapter cannot be merged into a model it does not name")
    if Path(base).is_absolute() and not Path(base).is_dir():
        raise FileNotFoundError(f"{cfg_file} names the base model {base}, a folder not on this machine: "
                                "set base_model_name_or_path to the spec's base (builtin:<name>, a project folder or a hub id)")
    revision = cfg.get("revision") or None
    return spec.model_copy(update={"base": base, "revision": revision if isinstance(revision, str) else None})


def adapter_chain(root: Path, spec: ModelSpec) -> list[tuple[Path, ModelSpec]]:
    """Each adapter folder on the way from `spec` down to a full model, with the base spec it names
    (outermost first); empty for a full model. An adapter naming itself, or a loop of adapters, is refused."""
    chain: list[tuple[Path, ModelSpec]] = []
    while True:
        path, _ = model_path(root, spec, adapters=True)
        if not is_adapter(path):
            return chain
        folder = Path(path).resolve()
        if folder in [f for f, _ in chain] or len(chain) >= MAX_ADAPTER_DEPTH:
            names = " -> ".join(str(f) for f, _ in chain + [(folder, spec)])
            raise ValueError(f"adapter folders name each other as base in a loop, or more than {MAX_ADAPTER_DEPTH} deep: {names}")
        spec = adapter_base(folder, spec)
        chain.append((folder, spec))


def model_path(root: Path, spec: ModelSpec, adapters: bool = True) -> tuple[str, str | None]:
    """(path or repo id, revision) to hand to from_pretrained. A local adapter folder is returned as it is
    (`load_model` merges it into its base); `adapters=False` follows adapters down to the full model."""
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
        if not adapters and is_adapter(local):
            return model_path(root, adapter_chain(root, spec)[-1][1], adapters=True)
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
    if is_adapter(path) and not any((Path(path) / f).is_file() for f in TOKENIZER_FILES):
        return load_tokenizer(root, adapter_chain(root, spec)[0][1])  # an adapter saved without one: its base's
    tok = AutoTokenizer.from_pretrained(path, revision=rev, trust_remote_code=spec.trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(root: Path, spec: ModelSpec):
    """The model's weights, ready to train or evaluate. An adapter folder is loaded onto its base (loaded
    by this same function, so an adapter's base may be an adapter) and merged into it: the result is a
    plain model in the base's dtype as loaded, with no peft layers left."""
    from transformers import AutoModelForCausalLM

    path, rev = model_path(root, spec)
    if is_adapter(path):
        from peft import PeftModel

        base = load_model(root, adapter_chain(root, spec)[0][1])
        return PeftModel.from_pretrained(base, path).merge_and_unload()
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
    """Weights hash for a local model folder; for a hub model its id and revision. For an adapter folder
    both: its own weights and its base's fingerprint (a retrained base is another merged model)."""
    path, _ = model_path(root, spec)
    if is_adapter(path):
        return dict_sha256({"adapter": dir_digest(Path(path)), "base": model_fingerprint(root, adapter_chain(root, spec)[0][1])})
    return dir_digest(Path(path)) if Path(path).is_dir() else dict_sha256(spec.model_dump(mode="json"))


def device() -> str:
    """Where models run: a CUDA GPU, else Apple's (MPS), else the CPU. from_pretrained loads onto the
    CPU; every stage and suite moves what `load_model` returns with `.to(device())`."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "mps" if torch.backends.mps.is_available() else "cpu"
