# tunebook — the two commands that matter:
#   make demo    set up, then run the quickstart (`dvc repro`): the log is logs/quickstart.md
#   make test    set up, then the test suite (fast tier; CI also runs `make test-slow`)
# On a GPU machine, install the torch build for your CUDA first (see README), then `make demo`.

PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
TORCH   ?= torch==2.13.0
export DVC_NO_ANALYTICS := 1
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup demo test test-slow test-studies test-cluster bench bench-gpu compile smoke clean

# The venv is made once; the stamp file is rebuilt when pyproject.toml or constraints.txt changes.
# constraints.txt pins every package to the versions the README's figures were produced with.
$(VENV)/.stamp: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
	# torch first, pinned: an unpinned torch would pull GBs of CUDA packages on a CPU machine
	set -o pipefail; $(BIN)/pip install -q $(TORCH) -c constraints.txt 2>&1 | { grep -v "is ignored" || true; }
	set -o pipefail; $(BIN)/pip install -q -c constraints.txt -e ".[runtime,dev]" 2>&1 | { grep -v "is ignored" || true; }
	touch $@

setup: $(VENV)/.stamp

SHELL := /bin/bash

demo: setup
	@test -d .dvc || $(BIN)/dvc init -q
	$(BIN)/tunebook compile --check
	$(BIN)/dvc repro
	@echo ""
	@$(BIN)/python -m bench.figures --check || echo "(the pretrain-tiny line above says whether the model is the reference build; other libraries or code give other figures too)"
	@echo "Done. The experiment log is logs/quickstart.md"
	@echo "Next: dvc exp run -S 'quickstart.method.lr=1e-2' && tunebook review   (see README)"

test: setup
	$(BIN)/python -m pytest -q -m "not slow and not studies and not slurm"

# The slow tier: the quickstart end to end through real dvc, kill-and-resume of real runs, the
# secrets and reproducibility checks. CI runs it after `make test` (.ci/run).
test-slow: setup
	$(BIN)/python -m pytest -q -m "slow and not studies and not slurm"

# The five seed studies end to end in smoke mode on the tiny model (~8-10 min here); CI runs it last.
test-studies: setup
	$(BIN)/python -m pytest -q -m studies tests/e2e/test_studies_smoke.py

# Heavy stages as jobs on a real one-node SLURM (tests/cluster/, ~6 min here): installs Debian's
# slurm-wlm and munge when missing (needs root, as in CI), then runs the `slurm` marker.
test-cluster: setup
	@command -v sbatch >/dev/null && command -v slurmctld >/dev/null && command -v munged >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null; }
	$(BIN)/python -m pytest -q -m slurm tests/cluster

bench: setup
	$(BIN)/python -m bench

# GPU figures beside bare loops on a random-init ~370M Llama in bf16 (docs/performance.md); on a
# machine without CUDA it runs the --small size on CPU. `python -m bench --gpu --small` anywhere.
bench-gpu: setup
	$(BIN)/python -m bench --gpu

compile: setup
	$(BIN)/tunebook compile

# The five seed studies (studies/*/) as miniatures on the tiny model, one after the other, sharing one
# DVC cache so the tiny model is pre-trained once. Logs: studies/*/.smoke/logs/ (see docs/studies.md).
smoke: setup
	@for s in studies/*/; do $(BIN)/tunebook -C $$s smoke --cache $(CURDIR)/.tunebook/smoke-cache || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache
