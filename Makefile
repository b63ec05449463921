# Two entry points for a new user: `make run` and `make test`. Both create the
# virtual environment .venv/ from requirements.lock when it is missing.
# `make bench` rewrites docs/PERFORMANCE.md (long; run it on an idle machine).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
RUN_DIR ?= /tmp/tff_kd_run

.PHONY: run test bench clean-venv

$(VENV)/installed: requirements.lock setup.py
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

# Adds requirements-bench.lock (torch, CPU build, for the PyTorch reference;
# it moves typing_extensions to 4.10.0) to .venv; run and test don't need it.
bench: $(VENV)/installed
	$(PY) -m pip install --quiet --no-deps -r requirements-bench.lock
	$(PY) -m binaries.benchmark --output=docs/PERFORMANCE.md

clean-venv:
	rm -rf $(VENV)
