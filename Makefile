# The two commands that do everything on a fresh machine (see README.md):
#   make book   build the book into _build/html, executing every chapter, warnings as errors
#   make test   run the unit tests and every chapter (through nbmake)
# Both create (or reuse) the virtual environment .venv from requirements.txt.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
# Tests and chapters run two at a time (pytest-xdist), one torch thread each: the small models of
# the attacks are overhead-bound, so two single-threaded processes beat one two-threaded one.
JOBS   ?= 2
export OMP_NUM_THREADS ?= 1

.PHONY: book test unit chapters venv clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

book: $(STAMP)
	rm -rf _build/html _build/.doctrees
	$(VENV)/bin/jupyter-book build . -W -n --keep-going

test: $(STAMP)
	$(PY) -m pytest tests --nbmake book --nbmake-timeout=1800 -p no:cacheprovider -n $(JOBS) $(PYTEST_ARGS)

unit: $(STAMP)
	$(PY) -m pytest tests -p no:cacheprovider $(PYTEST_ARGS)

chapters: $(STAMP)
	$(PY) -m pytest --nbmake book --nbmake-timeout=1800 -p no:cacheprovider $(PYTEST_ARGS)

clean:
	rm -rf _build
