# The README's commands. `make test` works on a fresh machine: it creates .venv, installs the
# CPU build of torch 2.13.0 first (so pip never pulls a CUDA build), then the project with its
# dev extra, and runs pytest.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION ?= 2.13.0
PYTEST_ARGS ?=
# The suite runs on every core (pytest-xdist; `auto`: one worker per CPU), each test file on one worker so that
# its module fixtures are made once. TEST_WORKERS=0 runs it in one process (as a debugger or `-s` wants).
TEST_WORKERS ?= auto

# The demo runs the bundled default model (mn-live --list-models: mn-realtime, or mn-fast where the CPU would run
# mn-realtime in float32) on the built-in phantom, with a window when a display is present, headless otherwise;
# a second run replaces the first's files (--overwrite). Override: make demo DEMO_MODEL=runs/x/best.pt
DEMO_MODEL ?=
DEMO_FRAMES ?= 120
DEMO_OUT ?= demo-output

.PHONY: venv install test demo mutation clean

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet torch==$(TORCH_VERSION)
	$(PIP) install --quiet -e '.[dev]'
	touch $@

venv install: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

demo: $(VENV)/.installed
	$(VENV)/bin/mn-live --source synthetic $(if $(DEMO_MODEL),--model $(DEMO_MODEL)) --frames $(DEMO_FRAMES) --out $(DEMO_OUT) --overwrite

# Mutation testing of the measuring core (pyproject.toml [tool.mutmut]; docs/mutation-testing.md):
# slow (minutes to an hour on two cores), so not part of `make test`. Prints every mutant that no
# test killed; docs/mutation-testing.md lists the survivors reviewed and why each is equivalent.
MUTMUT_VERSION ?= 3.8.1
mutation: $(VENV)/.installed
	$(PIP) install --quiet mutmut==$(MUTMUT_VERSION)
	rm -rf mutants
	$(VENV)/bin/mutmut run --max-children 2 > mutmut.log 2>&1 || (tail -c 2000 mutmut.log; exit 1)
	$(VENV)/bin/mutmut results

clean:
	rm -rf $(VENV) *.egg-info build dist .pytest_cache mutants mutmut.log
