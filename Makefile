# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install run run-video test test-faults clean
PYTEST_ARGS ?=

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

# Reinstall only when the project metadata changes; pip itself skips what is current.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -e '.[test,demo,video]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) -m pipeline.demo

# The clip demo: a panned sample photo, independent frames next to temporally coherent ones.
run-video: install
	$(PY) -m pipeline.video_demo

# Everything, tests/faults included; extra pytest options: make test PYTEST_ARGS="-x -k cache".
test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# The fault-injection and bad-input suite alone (docs/reliability.md).
test-faults: install
	$(PY) -m pytest tests/faults $(PYTEST_ARGS)

clean:
	rm -rf out .pytest_cache
