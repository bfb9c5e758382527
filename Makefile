# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create the virtual environment .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint venv clean

venv: $(STAMP)

$(STAMP): requirements.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(PY) recipes/CNCeleb/run_demo.py --output_folder results/demo

test: $(STAMP) lint
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check speechbrain_ext recipes tests bench
	$(VENV)/bin/ruff format --check speechbrain_ext recipes tests bench
	$(VENV)/bin/yamllint -s hparams recipes/CNCeleb/hparams

clean:
	rm -rf results
