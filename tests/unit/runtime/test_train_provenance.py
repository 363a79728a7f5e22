"""The train stage records what really ran, where it ran (train/summary.json): the training arguments
as the built trainer holds them (so an override under the spec shows), the model as loaded (commit or
weights digest) and the threads."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.unit.runtime.train_helpers import project, spec_text, train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_summary_holds_the_effective_training_args_model_and_threads(tmp_path, monkeypatch):
    from tunebook.runtime.models import dir_digest

    monkeypatch.setenv("TUNEBOOK_CPU_THREADS", "1")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    s = train(project(tmp_path, spec_text(method={"max_steps": 2, "lr": 5e-3, "seed": 7})))
    args = s["training_args"]
    assert args["learning_rate"] == 5e-3 and args["max_steps"] == 2 and args["seed"] == 7
    assert args["per_device_train_batch_size"] == 8 and args["gradient_accumulation_steps"] == 1
    assert args["lr_scheduler_type"] == "linear" and args["num_train_epochs"] == 1.0 and args["warmup_steps"] == 0.0
    assert (args["bf16"], args["fp16"], args["gradient_checkpointing"]) == (False, False, False)
    assert set(args) >= {"weight_decay", "max_grad_norm"}
    assert s["model"] == {"base": "builtin:tiny", "revision": None, "commit": None,
                          "weights_sha256": dir_digest(tmp_path / "models" / "tiny")}
    threads = s["threads"]
    assert threads["torch"] == 1 and set(threads["env"]) == {"TUNEBOOK_CPU_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"}
    assert threads["env"]["TUNEBOOK_CPU_THREADS"] == "1" and threads["env"]["MKL_NUM_THREADS"] is None
    assert s["precision"]["device"] == "cpu"


def test_an_override_under_the_spec_shows_in_the_summary(tmp_path):
    """Whatever sets the trainer's learning rate behind the spec's back (a trl default, a subclass, the
    environment), the summary reports the value the trainer used, not the spec's."""
    from tunebook.runtime.methods import sft

    real = sft.trainer_args
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sft, "trainer_args", lambda m, out: {**real(m, out), "learning_rate": 1e-3})
        s = train(project(tmp_path, spec_text(method={"max_steps": 2, "lr": 5e-3})))
    assert s["training_args"]["learning_rate"] == 1e-3


def test_a_hub_model_records_the_commit_it_was_loaded_from(monkeypatch):
    from tunebook.runtime import train

    loaded = SimpleNamespace(config=SimpleNamespace(_commit_hash="a" * 40))
    assert train.loaded_commit("org/model", "main", loaded) == "a" * 40
    # no commit on the config: the cached snapshot the files resolved to names it
    monkeypatch.setattr(train, "try_to_load_from_cache", lambda repo, name, revision: f"/hf/models--org--model/snapshots/{'b' * 40}/config.json")
    assert train.loaded_commit("org/model", "main", SimpleNamespace(config=SimpleNamespace())) == "b" * 40
