# Two entry points for a new user: `make run` and `make test`. Both create the
# virtual environment .venv/ from requirements.lock when it is missing.
# `make bench` rewrites docs/PERFORMANCE.md (long; run it on an idle machine).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
BENCH_DIR := .venv-bench
RUN_DIR ?= /tmp/tff_kd_run

.PHONY: run test bench clean-venv

$(VENV)/installed: requirements.lock setup.py pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-deps -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation --use-pep517 -e .
	touch $@

# FedAvg beside the KD algorithms on digits, Dirichlet alpha=0.5 label skew.
run: $(VENV)/installed
	rm -rf $(RUN_DIR)
	$(PY) -m binaries.compare --task=digits --partition=dirichlet --alpha=0.5 \
	  --num_clients=20 --clients_per_round=10 --rounds=20 --seeds=0 \
	  --rounds_per_checkpoint=10 --target_accuracy=0.9 \
	  --algorithms=fedavg,fedntd,fedgkd,fedssd,fedgen,feddf,fedaux,fd,dsfl,fedad \
	  --root_output_dir=$(RUN_DIR)

test: $(VENV)/installed
	$(PY) -m pytest -q -n 2 --dist worksteal

# torch (requirements-bench.lock, for the benchmark's PyTorch reference) goes
# into $(BENCH_DIR), never into .venv: it needs typing_extensions >= 4.10,
# which breaks TF 2.14's tracing. The benchmark runs the reference in a
# process of its own with PYTHONPATH=$(BENCH_DIR); run and test don't need it.
$(BENCH_DIR)/installed: requirements-bench.lock | $(VENV)/installed
	rm -rf $(BENCH_DIR)
	$(PY) -m pip install --quiet --no-deps --target $(BENCH_DIR) -r requirements-bench.lock
	touch $@

bench: $(VENV)/installed $(BENCH_DIR)/installed
	@# An older `make bench` installed torch and typing_extensions 4.10 into
	@# .venv: take them out again (requirements.lock pins typing_extensions).
	$(PY) -m pip uninstall --quiet --yes torch sympy mpmath 2>/dev/null || true
	$(PY) -m pip install --quiet --no-deps -r requirements.lock
	$(PY) -m benchmarks.benchmark --output=docs/PERFORMANCE.md --torch_path=$(BENCH_DIR)

clean-venv:
	rm -rf $(VENV) $(BENCH_DIR)
