# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install run test clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

# Reinstall only when the project metadata changes; pip itself skips what is current.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -e '.[test,demo]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) -m pipeline.demo

test: install
	$(PY) -m pytest

clean:
	rm -rf out .pytest_cache
