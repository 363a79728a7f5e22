"""Stages read params.yaml as the compiler and DVC write it: YAML 1.2 numbers."""

from __future__ import annotations

from tunebook.runtime.context import read_params


def test_a_dvc_written_exponent_is_a_number_not_text(tmp_path):
    # `dvc exp run -S 'exp.method.lr=1e-5'` writes this (ruamel, YAML 1.2); PyYAML alone reads "1e-05"
    (tmp_path / "params.yaml").write_text("exp:\n  method:\n    lr: 1e-05\n    on: general\n    flag: yes\n")
    params = read_params(tmp_path)
    assert params["exp"]["method"]["lr"] == 1e-5 and isinstance(params["exp"]["method"]["lr"], float)
    assert params["exp"]["method"]["on"] == "general" and params["exp"]["method"]["flag"] == "yes"
