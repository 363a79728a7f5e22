"""A project's own GGUF file as a model (`model: {base: models/x.gguf}`): the compiler adds its conversion
stage, the stage writes a float32 folder, and the stages load that folder. The GGUF files are written
here with the `gguf` package's writer from a small random Llama, the way llama.cpp's converter lays one
out (its tensor names, q/k rows permuted, a byte-level BPE vocabulary), so the converted model can be
compared with the model it was written from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")

from tunebook.compiler import compile_specs, load_specs, write_pipeline  # noqa: E402
from tunebook.compiler.compile import gguf_name  # noqa: E402
from tunebook.compiler.errors import SpecError  # noqa: E402
from tunebook.compiler.schema import ModelSpec  # noqa: E402
from tunebook.runtime import convert, stages  # noqa: E402
from tunebook.runtime.models import load_model, load_tokenizer, model_path  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

MERGES = ["h e", "l l", "he ll", "o Ġ"]
SPEC = """\
name: g
model: {base: models/small.gguf}
data:
  train:
    - source: data/train.jsonl
"""


def small_llama(tie: bool):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    vocab = 256 + len(MERGES) + 1
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, tie_word_embeddings=tie,
                      bos_token_id=vocab - 1, eos_token_id=vocab - 1)
    return LlamaForCausalLM(cfg).eval()


def _permute(w, n_head: int):
    """llama.cpp's convert_hf_to_gguf.py `permute` of q/k rows (transformers' GGUF loader undoes it)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(model, path: Path, arch: str = "llama", qtype=None) -> Path:
    """`model` as a GGUF file: F32 tensors, or `qtype` (e.g. Q8_0) for the 2-D weights."""
    import numpy as np
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    cfg = model.config
    tokens = list(bytes_to_unicode().values()) + [m.replace(" ", "") for m in MERGES] + ["<|endoftext|>"]
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("small test llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(10000.0)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([1] * (len(tokens) - 1) + [3])  # the last one is a control token
    w.add_token_merges(MERGES)
    w.add_bos_token_id(len(tokens) - 1)
    w.add_eos_token_id(len(tokens) - 1)
    w.add_chat_template("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}")
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    for key, value in model.state_dict().items():
        if key == "lm_head.weight" and cfg.tie_word_embeddings:
            continue  # a tied model has no output.weight: the loader ties it back
        a = value.numpy().astype(np.float32)
        if key.endswith("q_proj.weight"):
            a = _permute(a, cfg.num_attention_heads)
        elif key.endswith("k_proj.weight"):
            a = _permute(a, cfg.num_key_value_heads)
        name = names.get_name(key, try_suffixes=(".weight",))
        if qtype is not None and a.ndim == 2:
            w.add_tensor(name, gguf.quants.quantize(a, qtype), raw_dtype=qtype)  # its shape read from the bytes
        else:
            w.add_tensor(name, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)  # the CLI and the stages run in the project
    (tmp_path / "models").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text('{"prompt": "1+1=", "completion": "2"}\n')
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "g.yaml").write_text(SPEC)
    return tmp_path


def compiled(root: Path):
    pipeline = compile_specs(load_specs([root / "specs" / "g.yaml"], root))
    write_pipeline(root, pipeline)
    return pipeline


def test_a_gguf_model_gets_its_conversion_stage_and_the_stages_load_its_folder(project):
    pipeline = compiled(project)
    name = gguf_name("models/small.gguf")
    assert name.startswith("small-") and len(name) == len("small-") + 8
    st = {s.name: s for s in pipeline.stages}
    conv = st[f"pretrain-{name}"]
    assert (conv.cmd, conv.deps, conv.outs, conv.params) == (f"tunebook run pretrain {name}", ["models/small.gguf"],
                                                             [f"models/{name}"], [f"builtin.{name}"])
    assert pipeline.params["builtin"][name] == {"kind": "gguf", "file": "models/small.gguf"}
    for stage in ("train-g", "eval-g"):
        assert f"models/{name}" in st[stage].deps and "models/small.gguf" not in st[stage].deps
    assert f"models/{name}" in next(s for n, s in st.items() if n.startswith("baseline-")).deps
    with pytest.raises(FileNotFoundError, match=f"dvc repro pretrain-{name}"):
        model_path(project, ModelSpec(base="models/small.gguf"))  # not converted yet: said, not taken for a hub id


def test_the_stage_converts_a_float32_gguf_to_the_same_model(project, monkeypatch):
    original = small_llama(tie=False)
    write_gguf(original, project / "models" / "small.gguf")
    compiled(project)
    name = gguf_name("models/small.gguf")
    monkeypatch.setattr(stages, "_quiet_libraries", lambda: None)  # the stage's process-wide settings: not in a test
    monkeypatch.setattr(stages, "_cpu_threads", lambda kind: None)
    stages.run_stage(project, "pretrain", name)  # exactly what `dvc repro pretrain-<name>` runs
    spec = ModelSpec(base="models/small.gguf", dtype="float32")
    assert model_path(project, spec) == (str(project / "models" / name), None)
    model, tok = load_model(project, spec), load_tokenizer(project, spec)
    ids = torch.tensor([tok("hello world").input_ids])
    assert tok.decode(ids[0]) == "hello world" and tok.chat_template
    with torch.no_grad():
        assert torch.equal(model(ids).logits, original(ids).logits)  # F32 in, float32 out: bit for bit
    summary = json.loads((project / "models" / name / "pretrain_summary.json").read_text())
    assert summary["file"] == "models/small.gguf" and summary["architecture"] == "llama" and summary["chat_template"]
    assert summary["params"] == sum(p.numel() for p in original.parameters())


def test_a_quantized_gguf_converts_to_its_dequantized_weights(project):
    original = small_llama(tie=True)
    path = write_gguf(original, project / "models" / "small.gguf", qtype=gguf.GGMLQuantizationType.Q8_0)
    out = project / "models" / "out"
    summary = convert.build({"kind": "gguf", "file": "models/small.gguf"}, "out", out, project)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.tie_word_embeddings and model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    emb, back = original.model.embed_tokens.weight, model.model.embed_tokens.weight
    assert not torch.equal(emb, back) and torch.allclose(emb, back, atol=0.02)  # Q8_0's rounding, kept: lossy
    # float32 on disk: ~4 bytes a weight against Q8_0's ~1.06 (the tokenizer and header add to the small file)
    assert summary["weights_bytes"] > 2.5 * path.stat().st_size


def test_an_architecture_transformers_cannot_read_is_refused_before_any_weight(project):
    write_gguf(small_llama(tie=True), project / "models" / "small.gguf", arch="rwkv6")
    with pytest.raises(SpecError) as e:
        convert.build({"kind": "gguf", "file": "models/small.gguf"}, "x", project / "models" / "x", project)
    assert "holds a 'rwkv6' model" in str(e.value) and "llama" in str(e.value)
    assert not (project / "models" / "x").exists()
