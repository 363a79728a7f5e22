"""The data stage on real local files: sources, formats, policies, shaping, contamination, errors, atomicity.

Each test builds a StageContext over a tmp_path project and runs the stage function itself; seed 000
(sample_ratio 0.25 that ran on 100 %) and seed 002 (353 stringified-JSON outputs among 4,044 plain ones)
are fixtures here. The datasets/hub paths are in test_data_hub.py.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunebook.compiler import load_spec
from tunebook.files import file_sha256
from tunebook.runtime import checks, data, shaping, sources

from .data_helpers import SPEC_FILE, context, pc_rows, run, spec_error, write_jsonl


# --- sources ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["jsonl", "json", "csv", "parquet"])
def test_every_local_file_type_gives_the_same_rows(tmp_path, suffix):
    rows = pc_rows(50)
    path = tmp_path / f"data/train.{suffix}"
    path.parent.mkdir()
    if suffix == "jsonl":
        write_jsonl(path, rows)
    elif suffix == "json":
        path.write_text(json.dumps(rows))
    elif suffix == "csv":
        pl.DataFrame(rows).write_csv(path)
    else:
        pl.DataFrame(rows).write_parquet(path)
    out = run(context(tmp_path, {"train": [{"source": f"data/train.{suffix}"}]}))
    m = out["manifest"]
    assert sorted(out["train"], key=lambda r: r["prompt"]) == sorted(rows, key=lambda r: r["prompt"])
    [src] = m["sources"]
    assert (src["type"], src["sha256"], src["rows_read"], m["format"]) == ("file", file_sha256(path), 50, "prompt_completion")
    assert m["type_census"] == {"prompt": {"string": 50}, "completion": {"string": 50}}


def test_dvc_tracked_file_records_its_md5_and_notices_an_edit(tmp_path, capsys):
    write_jsonl(tmp_path / "train.jsonl", pc_rows(20))
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    for args in (["init", "--no-scm", "-q"], ["add", "-q", "train.jsonl"]):
        subprocess.run([sys.executable, "-m", "dvc", *args], cwd=tmp_path, env=env, check=True)
    md5 = next(line.split()[-1] for line in (tmp_path / "train.jsonl.dvc").read_text().splitlines() if "md5:" in line)
    ctx = context(tmp_path, {"train": [{"source": "train.jsonl"}]})
    [src] = run(ctx)["manifest"]["sources"]
    assert src["dvc"] == {"file": "train.jsonl.dvc", "path": "train.jsonl", "md5": md5, "matches": True}
    assert len(src["sha256"]) == 64  # both: DVC's md5 says which version, sha256 is what was read

    write_jsonl(tmp_path / "train.jsonl", pc_rows(21))  # edited after `dvc add`
    [src] = run(ctx)["manifest"]["sources"]
    assert src["dvc"]["matches"] is False
    assert "differs from its DVC record (train.jsonl.dvc)" in capsys.readouterr().out
    # the record carries it, so the report says it too (rule data_differs_from_dvc), not only the stage log
    from tunebook.reports.compute import compute
    from tunebook.reports.rules import run_rule
    from tunebook.runtime.record import build_record

    record = build_record(ctx)
    assert record.data.sources[0].dvc["matches"] is False
    assert run_rule("data_differs_from_dvc", record, compute(record)) is not None


def test_a_file_inside_a_pipeline_output_records_the_dvc_lock_entry(tmp_path):
    write_jsonl(tmp_path / "data/tiny/train.jsonl", pc_rows(5))
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages:\n  pretrain-tiny:\n    cmd: x\n    outs:\n"
                                       "    - path: data/tiny\n      hash: md5\n      md5: abc.dir\n")
    [src] = run(context(tmp_path, {"train": [{"source": "data/tiny/train.jsonl"}]}))["manifest"]["sources"]
    assert src["dvc"] == {"file": "dvc.lock", "stage": "pretrain-tiny", "path": "data/tiny", "md5": "abc.dir"}


def test_large_files_are_read_in_chunks_with_progress(tmp_path, monkeypatch, capsys):
    """Lines that straddle chunk boundaries come out whole, and long reads print progress lines."""
    rows = [{"prompt": "x" * random.Random(i).randint(1, 300), "completion": str(i)} for i in range(400)]
    write_jsonl(tmp_path / "train.jsonl", rows)
    monkeypatch.setattr(sources, "CHUNK", 997)  # a prime: boundaries fall mid-line
    frame, unreadable, digests = sources.read_file(tmp_path / "train.jsonl", "data exp")
    assert frame.drop(sources.ROW).to_dicts() == rows and not unreadable
    assert digests["sha256"] == file_sha256(tmp_path / "train.jsonl")
    assert "[data exp: reading train.jsonl]" in capsys.readouterr().err


def test_mixed_kinds_in_a_column_are_not_coerced_and_bad_lines_are_quarantined(tmp_path):
    """Polars' own reader would turn the object into its JSON text, indistinguishable from seed 002's
    stringified JSON; the stage reads such a file row by row and counts each value's own kind."""
    path = tmp_path / "train.jsonl"
    path.write_text('{"prompt": "a", "completion": "plain"}\n'
                    '{"prompt": "b", "completion": {"answer": "4"}}\n'
                    '{"prompt": "c", "completion": "{\\"answer\\": \\"5\\"}"}\n'
                    '{"prompt": "d", "completion": 7}\n'
                    "{not json}\n"
                    '["a list"]\n')
    out = run(context(tmp_path, {"train": [{"source": "train.jsonl"}]}))
    census = out["manifest"]["sources"][0]["type_census"]["completion"]
    assert census == {"string": 1, "dict": 1, "json_string": 1, "number": 1}
    reasons = {q["row"]: q["reason"] for q in out["quarantine"]}
    assert reasons[1].startswith("'completion' is a JSON object, not text")
    assert reasons[2].startswith("'completion' is stringified JSON")
    assert reasons[3].startswith("'completion' is a number")
    assert reasons[4].startswith("not valid JSON") and reasons[5] == "not a JSON object (a JSON list)"
    assert out["train"] == [{"prompt": "a", "completion": "plain"}]
    assert out["manifest"]["rejected_rows"] == 5


def test_text_that_looks_like_dates_stays_text(tmp_path):
    """pyarrow would read a column of ISO dates as timestamps; the answers here are text as written."""
    write_jsonl(tmp_path / "train.jsonl", [{"prompt": "Moon landing?", "completion": "1969-07-20"},
                                           {"prompt": "Wall fell?", "completion": "1989-11-09 23:00:00"}])
    out = run(context(tmp_path, {"train": [{"source": "train.jsonl"}]}))
    assert sorted(r["completion"] for r in out["train"]) == ["1969-07-20", "1989-11-09 23:00:00"]


# --- formats ---------------------------------------------------------------------------------------


def test_formats_are_detected_mapped_and_written_canonically(tmp_path):
    write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": f"q{i}"},
                                                        {"role": "assistant", "content": f"a{i}", "weight": 1}]} for i in range(5)])
    write_jsonl(tmp_path / "pref.jsonl", [{"prompt": f"q{i}", "chosen": "good", "rejected": "bad"} for i in range(5)])
    write_jsonl(tmp_path / "gsm.jsonl", [{"question": f"{i}+1?", "final": i + 1} for i in range(5)])
    chat = run(context(tmp_path, {"train": [{"source": "chat.jsonl"}]}))
    assert chat["manifest"]["format"] == "messages"
    assert chat["train"][0]["messages"][-1].keys() == {"role", "content"}  # extra keys dropped
    pref = run(context(tmp_path, {"train": [{"source": "pref.jsonl"}]}))
    assert pref["manifest"]["format"] == "preference" and set(pref["train"][0]) == {"prompt", "chosen", "rejected"}
    gsm = run(context(tmp_path, {"train": [{"source": "gsm.jsonl", "format": "verifiable", "fields": {"prompt": "question", "answer": "final"}}]}))
    assert gsm["manifest"]["format"] == "verifiable"
    assert sorted(r["answer"] for r in gsm["train"]) == ["1", "2", "3", "4", "5"]  # a numeric reference answer is text
    assert gsm["manifest"]["type_census"] == {"prompt": {"string": 5}, "answer": {"number": 5}}


def test_invalid_rows_of_each_format_are_quarantined_with_their_reason(tmp_path):
    ok = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    write_jsonl(tmp_path / "chat.jsonl", [
        {"messages": ok},
        {"messages": []},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "x"}]},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}]},
        {"messages": [{"role": "user", "content": "hi"}]},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": '{"answer": 1}'}]},
        {"messages": None},
    ])
    out = run(context(tmp_path, {"train": [{"source": "chat.jsonl"}]}))
    assert [q["reason"] for q in out["quarantine"]] == [
        "'messages' is empty",
        "'messages' has a role outside system/user/assistant/tool",
        "'messages' has a turn whose content is empty or not text",
        "'messages' does not end with an assistant turn",
        "'messages' has a turn whose content is stringified JSON (standardize: true renders it)",
        "'messages' is null or missing",
    ]
    assert out["quarantine"][0]["data"] == {"messages": []} and out["train"] == [{"messages": ok}]

    write_jsonl(tmp_path / "pref.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}, {"prompt": "q", "chosen": "same", "rejected": "same"}])
    pref = run(context(tmp_path, {"train": [{"source": "pref.jsonl"}]}))
    assert [q["reason"] for q in pref["quarantine"]] == ["'chosen' and 'rejected' are identical"]


TEXT = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126) | st.sampled_from(" \n\t{}[]\""), max_size=12)
TURN = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "bot", None]),
                              "content": TEXT | st.none() | st.sampled_from(['{"a": 1}', "[1, 2]", '"quoted"', "[citation needed]"])})


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(TURN, max_size=4) | st.none(), min_size=1, max_size=8), st.booleans())
def test_columnar_and_python_checks_agree_on_conversations(conversations, standardize):
    """The columnar checks decide most rows, the reference Python check the rest; they must agree."""
    columnar = pl.Series("m", conversations, dtype=checks.MESSAGES)
    as_objects = pl.Series("m", conversations, dtype=pl.Object)  # forces every row through Python

    def verdicts(s):
        v = checks.check_messages(s, "messages", standardize)
        table = v.table.with_row_index("_i").update(v.redo, on="_i", include_nulls=True)
        return table.select("kind", "reason", pl.when(pl.col("reason").is_null()).then("value")).rows()

    assert verdicts(columnar) == verdicts(as_objects)


@settings(max_examples=150, deadline=None)
@given(st.lists(TEXT | st.none() | st.sampled_from(['{"a": 1}', " [1] ", '"x"', "{x}"]), min_size=1, max_size=8), st.booleans())
def test_columnar_and_python_checks_agree_on_text(values, standardize):
    def verdicts(s):
        v = checks.check_text(s, "completion", standardize)
        table = v.table.with_row_index("_i").update(v.redo, on="_i", include_nulls=True)
        return table.select("kind", "reason", pl.when(pl.col("reason").is_null()).then("value")).rows()

    assert verdicts(pl.Series(values, dtype=pl.String)) == verdicts(pl.Series(values, dtype=pl.Object))


# --- seed 002: stringified JSON among plain strings ------------------------------------------------


@pytest.fixture
def seed_002(tmp_path) -> Path:
    """Like alpaca_physics_5k_cleaned.jsonl: 4,044 plain-text outputs and 353 stringified-JSON ones."""
    rng = random.Random(2)
    json_rows = set(rng.sample(range(4397), 353))
    rows = []
    for i in range(4397):
        out = (json.dumps({"explanation": f"Force is mass times acceleration ({i}).", "answer": f"{i} N"}) if i in json_rows
               else f"Explanation: Force is mass times acceleration ({i}).\nAnswer: {i} N")
        rows.append({"instruction": f"Problem {i}: what force?", "input": "", "output": out})
    return write_jsonl(tmp_path / "data/alpaca_physics_5k_cleaned.jsonl", rows)


SEED_002_SOURCE = {"source": "data/alpaca_physics_5k_cleaned.jsonl", "fields": {"prompt": "instruction", "completion": "output"}}


def test_seed_002_stringified_json_is_counted_and_quarantined(tmp_path, seed_002):
    out = run(context(tmp_path, {"train": [SEED_002_SOURCE]}))
    m = out["manifest"]
    assert m["type_census"]["completion"] == {"string": 4044, "json_string": 353}
    assert m["sources"][0]["type_census"]["output"] == {"string": 4044, "json_string": 353}
    assert (m["train_rows"], m["rejected_rows"], len(out["quarantine"])) == (4044, 353, 353)
    assert {q["reason"] for q in out["quarantine"]} == {"'output' is stringified JSON, not text (standardize: true converts it)"}
    assert all(json.loads(q["data"]["output"]) for q in out["quarantine"])  # the original row, as it was


def test_seed_002_standardize_renders_the_json_as_the_plain_format(tmp_path, seed_002):
    out = run(context(tmp_path, {"train": [SEED_002_SOURCE], "standardize": True}))
    m = out["manifest"]
    assert (m["train_rows"], m["rejected_rows"], m["converted_rows"]) == (4397, 0, 353)
    assert m["type_census"]["completion"] == {"string": 4044, "json_string": 353}  # the census describes the input
    completions = {r["completion"] for r in out["train"]}
    assert all(c.startswith("Explanation: Force is mass times acceleration") and "\nAnswer: " in c for c in completions)
    assert len(completions) == 4397


def test_seed_002_fail_policy_stops_and_names_the_source(tmp_path, seed_002):
    [issue] = spec_error(lambda: run(context(tmp_path, {"train": [SEED_002_SOURCE], "on_invalid": "fail"})))
    assert (issue.file, issue.path) == (SPEC_FILE, "exp.data.train.0")
    assert issue.message.startswith("353 of 4397 rows are invalid: 'output' is stringified JSON")
    assert "on_invalid: quarantine" in issue.hint
    assert not (tmp_path / "data/exp").exists()


# --- seed 000: the sample ratio that silently ran on 100 % -----------------------------------------


def test_seed_000_sample_ratio_is_measured_not_copied(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", pc_rows(1075))
    m = run(context(tmp_path, {"train": [{"source": "train.jsonl"}], "sample_ratio": 0.25}))["manifest"]
    assert m["planned_sample_ratio"] == 0.25
    assert abs(m["actual_sample_ratio"] - 0.25) <= 1 / m["mixed_rows"]  # 269 / 1075 = 0.250233: rounding only
    assert m["planned_train_rows"] == m["train_rows"] == 269
    assert m["sources"][0]["rows_used"] == 269 and m["sources"][0]["rows_valid"] == 1075


def test_seed_000_a_sampling_bug_reaches_the_report_as_planned_vs_actual(tmp_path, monkeypatch):
    """If sampling silently kept everything again, the manifest would say 1.0 beside the planned 0.25,
    and that is what the report stage's record carries."""
    from tunebook.runtime.record import build_record

    write_jsonl(tmp_path / "train.jsonl", pc_rows(400))
    monkeypatch.setattr(data, "take", lambda rows, n, by: (rows, rows.clear()))  # the bug: n is ignored
    ctx = context(tmp_path, {"train": [{"source": "train.jsonl"}], "sample_ratio": 0.25})
    m = run(ctx)["manifest"]
    assert (m["planned_sample_ratio"], m["actual_sample_ratio"], m["planned_train_rows"], m["train_rows"]) == (0.25, 1.0, 100, 400)
    record = build_record(ctx)
    assert (record.data.planned_sample_ratio, record.data.actual_sample_ratio) == (0.25, 1.0)
    assert record.actual["data.sample_ratio"] == 1.0 and record.planned["data.sample_ratio"] == 0.25


# --- shaping ---------------------------------------------------------------------------------------


def test_mixture_weights_survive_sampling_and_the_smallest_source_sets_the_size(tmp_path):
    write_jsonl(tmp_path / "general.jsonl", pc_rows(5000))
    write_jsonl(tmp_path / "reasoning.jsonl", pc_rows(300, start=10_000))
    spec = {"train": [{"source": "general.jsonl", "weight": 0.8}, {"source": "reasoning.jsonl", "weight": 0.2}], "sample_ratio": 0.25}
    out = run(context(tmp_path, spec))
    general, reasoning = out["manifest"]["sources"]
    assert (general["rows_mixed"], reasoning["rows_mixed"]) == (1200, 300)  # 300 / 0.2 = 1500 rows in all
    assert (general["rows_used"], reasoning["rows_used"]) == (300, 75)
    assert (general["planned_weight"], general["actual_weight"], reasoning["actual_weight"]) == (0.8, 0.8, 0.2)
    assert sum(int(r["prompt"].split("-")[0]) >= 10_000 for r in out["train"]) == 75


def test_stratify_keeps_each_value_share(tmp_path):
    rng = random.Random(0)
    rows = [{**r, "category": rng.choice("aaaaabbbc")} for r in pc_rows(3000)]
    write_jsonl(tmp_path / "train.jsonl", rows)
    out = run(context(tmp_path, {"train": [{"source": "train.jsonl"}], "sample_ratio": 0.1, "stratify": "category"}))
    s = out["manifest"]["stratify"]
    assert s["column"] == "category" and sum(s["train"].values()) == 300
    for value, n in s["mixed"].items():
        assert abs(s["train"][value] - n * 0.1) < 1  # largest remainder: within one row of the exact share


def test_validation_split_is_held_out_before_sampling_and_samples_are_nested(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", pc_rows(1000))
    small = run(context(tmp_path, {"train": [{"source": "train.jsonl"}], "validation_split": 0.1, "sample_ratio": 0.2}))
    big = run(context(tmp_path, {"train": [{"source": "train.jsonl"}], "validation_split": 0.1, "sample_ratio": 0.5}))
    m = small["manifest"]
    assert (m["heldout_rows"], m["validation_rows"], m["train_rows"], m["actual_sample_ratio"]) == (100, 100, 180, 0.2)
    assert m["validation"] == {"validation_split": 0.1}
    prompts = lambda rows: {r["prompt"] for r in rows}  # noqa: E731
    assert not prompts(small["train"]) & prompts(small["validation"])
    assert prompts(small["validation"]) == prompts(big["validation"])  # the hold-out does not depend on the ratio
    assert prompts(small["train"]) < prompts(big["train"])  # a larger ratio keeps the smaller sample's rows
    assert m["contamination"]["validation"] == {"source": "validation_split", "n": 100, "exact": 0, "normalized": 0, "examples": []}


def test_limits_and_same_inputs_give_the_same_bytes(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", pc_rows(500))
    ctx = context(tmp_path, {"train": [{"source": "train.jsonl", "limit": 300}], "limit": 50, "seed": 7})
    first = run(ctx)
    second = run(ctx)
    m = first["manifest"]
    assert (m["sources"][0]["rows_in_source"], m["sources"][0]["rows_read"], m["train_rows"], m["planned_train_rows"]) == (500, 300, 50, 50)
    assert all(int(r["prompt"].split("-")[0]) < 300 for r in first["train"])
    assert first["manifest"]["files"] == second["manifest"]["files"]
    # the limit set the size: the plan is 50 of 300 rows, and the record says it was followed
    assert m["limited"] and m["planned_sample_ratio"] == m["actual_sample_ratio"] == round(50 / 300, 6)
    from tunebook.runtime.record import actual_params

    actual = actual_params(ctx, m, {})
    assert actual["data.sample_ratio"] == 1.0 and actual["data.limit"] == 50  # == planned: no false drift


def test_a_sample_ratio_that_is_not_followed_still_shows(tmp_path):
    from tunebook.runtime.record import actual_params

    write_jsonl(tmp_path / "train.jsonl", pc_rows(100))
    ctx = context(tmp_path, {"train": [{"source": "train.jsonl"}], "sample_ratio": 0.25, "seed": 7})
    m = run(ctx)["manifest"]
    assert not m["limited"] and m["planned_sample_ratio"] == 0.25
    # seed 000's bug: the run used every row although the spec asked for a quarter
    assert actual_params(ctx, {**m, "actual_sample_ratio": 1.0}, {})["data.sample_ratio"] == 1.0


def test_allocate_splits_by_largest_remainder_within_sizes():
    assert shaping.allocate([5, 3, 2], 5) == [3, 1, 1]
    assert shaping.allocate([1, 1, 1], 2) == [1, 1, 0]
    assert shaping.allocate([2, 0, 7], 20) == [2, 0, 7]
    assert shaping.allocate([4, 4], 0) == [0, 0]


# --- contamination ---------------------------------------------------------------------------------


def test_contamination_against_validation_and_every_target_task(tmp_path):
    train = pc_rows(100) + [{"prompt": "What is the capital of France?", "completion": "Paris"}]
    write_jsonl(tmp_path / "train.jsonl", train)
    write_jsonl(tmp_path / "val.jsonl", pc_rows(3) + pc_rows(2, start=500))
    write_jsonl(tmp_path / "capitals.jsonl", [{"question": "what is the capital of  france", "answer": "Paris"},
                                              {"question": "What is the capital of Peru?", "answer": "Lima"}])
    evals = {"target": [{"name": "capitals", "source": "capitals.jsonl", "prompt_field": "question", "split": "train"}]}
    m = run(context(tmp_path, {"train": [{"source": "train.jsonl"}], "validation": {"source": "val.jsonl"}}, evals))["manifest"]
    assert m["contamination"]["validation"] == {"source": "val.jsonl", "n": 5, "exact": 3, "normalized": 3,
                                                "examples": ["0-1=", "1-1=", "2-1="]}
    assert m["contamination"]["target:capitals"] == {"source": "capitals.jsonl", "n": 2, "exact": 0, "normalized": 1,
                                                     "examples": ["what is the capital of  france"]}


def test_a_validation_set_that_is_a_test_set_is_recorded(tmp_path):
    """Issue 12: the quickstart validated on its test file and nothing said so."""
    write_jsonl(tmp_path / "train.jsonl", pc_rows(50))
    write_jsonl(tmp_path / "test.jsonl", pc_rows(4, start=900))
    write_jsonl(tmp_path / "other.jsonl", pc_rows(3, start=700))
    evals = {"target": [{"name": "sub", "source": "test.jsonl", "answer_field": "completion"},
                        {"name": "other", "source": "./other.jsonl", "answer_field": "completion"}]}
    m = run(context(tmp_path, {"train": [{"source": "train.jsonl"}], "validation": {"source": "test.jsonl"}}, evals))["manifest"]
    same = m["contamination"]["validation vs target:sub"]
    assert same["same_file"] is True and same["n"] == 4 and same["exact"] == 4
    other = m["contamination"]["validation vs target:other"]
    assert other["same_file"] is False and other["exact"] == 0


def test_normalized_text_keeps_numbers_apart():
    frame = pl.DataFrame({"p": ["27-1=", "2-71=", "What is 2+2?"]}).select(shaping._normalized(pl.col("p")))
    assert frame.to_series().to_list() == ["27 1", "2 71", "what is 2 2"]


# --- bad input -------------------------------------------------------------------------------------


def test_missing_file_names_the_key_and_suggests(tmp_path):
    write_jsonl(tmp_path / "data/train.jsonl", pc_rows(3))
    [issue] = spec_error(lambda: run(context(tmp_path, {"train": [{"source": "data/trian.jsonl"}]})))
    assert (issue.file, issue.path, issue.message) == (SPEC_FILE, "exp.data.train.0.source", "'data/trian.jsonl' does not exist")
    assert issue.hint == "did you mean 'train.jsonl'?"


def test_unknown_column_suggests_the_closest(tmp_path):
    write_jsonl(tmp_path / "t.jsonl", [{"question": "q", "response": "r"}])
    [issue] = spec_error(lambda: run(context(tmp_path, {"train": [{"source": "t.jsonl", "fields": {"prompt": "questoin"}}]})))
    assert (issue.path, issue.message, issue.hint) == ("exp.data.train.0.fields.prompt", "no column 'questoin' in t.jsonl", "did you mean 'question'?")
    write_jsonl(tmp_path / "u.jsonl", [{"promt": "q", "completion": "r"}])
    [issue] = spec_error(lambda: run(context(tmp_path, {"train": [{"source": "u.jsonl"}]})))
    assert issue.path == "exp.data.train.0.format" and issue.hint == "map them with fields: {prompt: promt}"
    [issue] = spec_error(lambda: run(context(tmp_path, {"train": [{"source": "u.jsonl", "fields": {"prompt": "promt"}}], "stratify": "categroy"})))
    assert issue.path == "exp.data.stratify" and issue.message == "no column 'categroy' in u.jsonl"


def test_a_mixture_that_empties_after_checking_is_an_error(tmp_path):
    write_jsonl(tmp_path / "good.jsonl", pc_rows(10))
    write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "q", "completion": ""}] * 4)
    spec = {"train": [{"source": "good.jsonl", "weight": 0.5}, {"source": "bad.jsonl", "weight": 0.5}]}
    [issue] = spec_error(lambda: run(context(tmp_path, spec)))
    assert issue.path == "exp.data.train.1"
    assert issue.message == "no valid rows left in bad.jsonl: all 4 rejected, most for: 'completion' is empty"


def test_sources_of_different_formats_cannot_be_mixed(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", pc_rows(3))
    write_jsonl(tmp_path / "b.jsonl", [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}])
    [issue] = spec_error(lambda: run(context(tmp_path, {"train": [{"source": "a.jsonl", "weight": 0.5}, {"source": "b.jsonl", "weight": 0.5}]})))
    assert issue.path == "exp.data.train" and "a.jsonl: prompt_completion, b.jsonl: messages" in issue.message


@pytest.mark.parametrize("data_yaml, path, message", [
    ("train: [{source: a.jsonl, weight: 0.5}, {source: b.jsonl, weight: 0.4}]", "data", "train weights sum to 0.9, they must sum to 1"),
    ("train: [{source: a.jsonl}]\n  sample_ratio: 1.5", "data.sample_ratio", "less than or equal to 1"),
    ("train: [{source: a.jsonl}]\n  sample_ratio: 0", "data.sample_ratio", "greater than 0"),
    ("train: [{source: a.jsonl, revision: main}]", "data.train.0", "revision applies to hf: sources"),
    ("train: [{source: a.jsonl, fields: {promt: q}}]", "data.train.0.fields", "did you mean 'prompt'?"),
    ("train: [{source: a.jsonl}]\n  validation: {source: b.jsonl}\n  validation_split: 0.1", "data", "not both"),
    ("train: [{source: a.jsonl}]\n  on_invalid: skip", "data.on_invalid", "'quarantine' or 'fail'"),
])
def test_spec_level_data_errors_are_located(tmp_path, data_yaml, path, message):
    (tmp_path / "exp.yaml").write_text(f"name: exp\nmodel: {{base: builtin:tiny}}\ndata:\n  {data_yaml}\n")
    issues = spec_error(lambda: load_spec(tmp_path / "exp.yaml", tmp_path))
    assert any(i.path == path and message in i.message for i in issues), issues


# --- atomic writing --------------------------------------------------------------------------------


def test_a_failure_mid_write_leaves_the_previous_data_intact(tmp_path, monkeypatch):
    write_jsonl(tmp_path / "train.jsonl", pc_rows(30))
    ctx = context(tmp_path, {"train": [{"source": "train.jsonl"}]})
    before = run(ctx)
    files = {p.name: p.read_bytes() for p in ctx.data_dir.iterdir()}
    real = pl.DataFrame.write_ndjson

    def fail_on_validation(self, file=None, **kw):
        if file is not None and Path(file).name == "validation.jsonl":  # train.jsonl is already written
            raise OSError("disk full")
        return real(self, file, **kw)

    monkeypatch.setattr(pl.DataFrame, "write_ndjson", fail_on_validation)
    write_jsonl(tmp_path / "train.jsonl", pc_rows(40))
    with pytest.raises(OSError, match="disk full"):
        data.run(ctx)
    assert {p.name: p.read_bytes() for p in ctx.data_dir.iterdir()} == files
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["exp"]  # no temporary folder left
    assert before["manifest"]["train_rows"] == 30

    monkeypatch.undo()
    write_jsonl(tmp_path / "train.jsonl", [{"prompt": "", "completion": ""}])
    spec_error(lambda: data.run(ctx))  # a spec error happens before anything is written
    assert {p.name: p.read_bytes() for p in ctx.data_dir.iterdir()} == files
