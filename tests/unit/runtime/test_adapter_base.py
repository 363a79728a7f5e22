"""A spec may start from another experiment's LoRA adapter (`model.base: runs/<exp>/train/final`, SFT then
GRPO): runtime/models.py loads the base its adapter_config.json names, merges the adapter into it, and
the experiment trains a fresh LoRA on the merged weights. Checked on the embedded tiny model after two
real training steps."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.unit.runtime.train_helpers import lora_b_norm, project, spec_text, train

pytestmark = pytest.mark.usefixtures("one_thread")

WARM = "runs/warm/train/final"


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """A project where `warm` trained 2 steps of LoRA SFT on builtin:tiny: its root."""
    root = tmp_path_factory.mktemp("adapter")
    train(project(root, spec_text(name="warm", method={"max_steps": 2})))
    assert lora_b_norm(root / WARM) > 0  # the adapter moved: merging it changes the model
    return root


def _logits(model, ids):
    import torch

    with torch.no_grad():
        return model(input_ids=ids).logits


def _ids(tok):
    import torch

    return torch.tensor([tok("12-5=7 9-3=6 8-8=0")["input_ids"]])


def _spec(base: str):
    from tunebook.compiler.schema import ModelSpec

    return ModelSpec(base=base)


def test_an_adapter_folder_loads_as_its_base_with_the_adapter_merged(warm):
    import torch
    from peft import PeftModel

    from tunebook.runtime.models import load_model, load_tokenizer, model_path

    cfg = json.loads((warm / WARM / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == "builtin:tiny"  # portable: the spec's base, not this machine's path
    merged = load_model(warm, _spec(WARM)).eval()
    assert not any("lora" in name for name, _ in merged.named_modules())  # plain weights: a fresh LoRA goes on top
    assert next(merged.parameters()).dtype == torch.float32
    tok = load_tokenizer(warm, _spec(WARM))
    ids = _ids(tok)
    base = load_model(warm, _spec("builtin:tiny")).eval()
    plain = _logits(base, ids)
    with_adapter = _logits(PeftModel.from_pretrained(base, str(warm / WARM)).eval(), ids)
    assert torch.allclose(_logits(merged, ids), with_adapter, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(with_adapter, plain, atol=1e-4)  # the merge is not a no-op
    assert model_path(warm, _spec(WARM)) == (str(warm / WARM), None)
    assert model_path(warm, _spec(WARM), adapters=False) == (str(warm / "models" / "tiny"), None)


def test_the_tokenizer_is_the_adapters_own_else_its_bases(warm, tmp_path):
    from tunebook.runtime.models import load_tokenizer

    own = load_tokenizer(warm, _spec(WARM))
    bare = warm / "runs" / "bare"
    bare.mkdir(parents=True, exist_ok=True)
    for f in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy(warm / WARM / f, bare / f)
    from_base = load_tokenizer(warm, _spec("runs/bare"))
    assert from_base.get_vocab() == own.get_vocab() == load_tokenizer(warm, _spec("builtin:tiny")).get_vocab()
    assert from_base.pad_token is not None


def test_the_fingerprint_covers_the_adapter_and_its_base(warm):
    import torch
    from safetensors.torch import load_file, save_file

    from tunebook.runtime.models import dir_digest, model_fingerprint

    fp = model_fingerprint(warm, _spec(WARM))
    assert fp not in (dir_digest(warm / WARM), dir_digest(warm / "models" / "tiny"))
    # the same adapter on a copy of the base: the same fingerprint; on a base with one weight changed: another
    shutil.copytree(warm / "models" / "tiny", warm / "models" / "tiny-copy", dirs_exist_ok=True)
    moved = warm / "runs" / "moved"
    shutil.copytree(warm / WARM, moved, dirs_exist_ok=True)
    cfg = json.loads((moved / "adapter_config.json").read_text())
    (moved / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": "models/tiny-copy"}))
    assert model_fingerprint(warm, _spec("runs/moved")) == fp
    [weights] = sorted((warm / "models" / "tiny-copy").glob("*.safetensors"))
    tensors = load_file(str(weights))
    key = next(iter(tensors))
    tensors[key] = tensors[key] + torch.ones_like(tensors[key])
    save_file(tensors, str(weights), metadata={"format": "pt"})
    assert model_fingerprint(warm, _spec("runs/moved")) != fp


def test_an_adapter_trained_on_an_adapter_loads_through_both(warm):
    """GRPO after SFT, then another stage on top: the second run's adapter names the first's folder as
    its base (portable_adapter_config), and loading it merges both in turn."""
    import torch
    from peft import PeftModel

    from tunebook.runtime.models import load_model, load_tokenizer, model_fingerprint

    s = train(project(warm, spec_text(name="second", method={"max_steps": 2}) .replace("builtin:tiny", WARM)))
    assert s["model"]["base"] == WARM and s["model"]["weights_sha256"] == model_fingerprint(warm, _spec(WARM))
    second = "runs/second/train/final"
    assert json.loads((warm / second / "adapter_config.json").read_text())["base_model_name_or_path"] == WARM
    assert lora_b_norm(warm / second) > 0
    ids = _ids(load_tokenizer(warm, _spec(second)))
    stacked = _logits(PeftModel.from_pretrained(load_model(warm, _spec(WARM)), str(warm / second)).eval(), ids)
    assert torch.allclose(_logits(load_model(warm, _spec(second)).eval(), ids), stacked, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("base, error", [
    ("runs/loop", "loop"),  # an adapter naming itself
    ("", "names no base model"),
    ("/nowhere/on/this/machine", "not on this machine"),
])
def test_an_adapter_that_cannot_be_loaded_is_refused_clearly(warm, base, error):
    from tunebook.runtime.models import load_model, model_fingerprint

    folder = warm / "runs" / "loop"
    shutil.copytree(warm / WARM, folder, dirs_exist_ok=True)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": base}))
    for f in (load_model, model_fingerprint):
        with pytest.raises((ValueError, FileNotFoundError), match=error):
            f(warm, _spec("runs/loop"))


def test_compile_checks_an_adapter_folders_base(warm):
    """compile accepts an adapter folder as a model, and says when the base it names is not there."""
    from tunebook.compiler import compile_specs, load_specs
    from tunebook.compiler.inputs import check_inputs, stage_outputs

    spec = warm / "specs" / "chained.yaml"
    spec.write_text(spec_text(name="chained").replace("builtin:tiny", WARM))
    loaded = load_specs([spec], warm)
    found = check_inputs(loaded, warm, stage_outputs(compile_specs(loaded)))
    assert not [i for i in found.errors + found.missing if i.path == "model.base"]
    odd = warm / "runs" / "odd"
    shutil.copytree(warm / WARM, odd, dirs_exist_ok=True)
    cfg = json.loads((odd / "adapter_config.json").read_text())
    (odd / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": "builtin:nowhere"}))
    spec.write_text(spec_text(name="chained").replace("builtin:tiny", "runs/odd"))
    loaded = load_specs([spec], warm)
    found = check_inputs(loaded, warm, stage_outputs(compile_specs(loaded)))
    [issue] = [i for i in found.missing if i.path == "model.base"]
    assert "'models/nowhere' does not exist (the base model named by runs/odd/adapter_config.json)" in issue.message
    spec.unlink()
