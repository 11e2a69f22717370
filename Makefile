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

.PHONY: book test unit chapters status venv clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# make book: write the repository URL from _config.yml into the chapters (scripts/sync_repository.py),
# execute the chapters that are not current in the cache (the same tests as make test), render the
# book from the cache, then check the build (maths shipped, no stray outputs: scripts/check_book.py).
book: $(STAMP)
	$(PY) scripts/sync_repository.py
	$(PY) -m pytest tests/test_chapters.py -p no:cacheprovider -n $(JOBS) $(PYTEST_ARGS)
	rm -rf _build/html _build/.doctrees
	$(VENV)/bin/jupyter-book build . -W -n --keep-going
	$(PY) scripts/check_book.py

# make test: the unit tests and every chapter (tests/test_chapters.py runs each through nbmake and
# stores it in the book's cache; a chapter that is current there is not executed again).
test: $(STAMP)
	$(VENV)/bin/ruff check precode tests benchmarks scripts
	$(PY) -m pytest tests -p no:cacheprovider -n $(JOBS) --dist worksteal $(PYTEST_ARGS)

unit: $(STAMP)
	$(PY) -m pytest tests -p no:cacheprovider --ignore tests/test_chapters.py $(PYTEST_ARGS)

chapters: $(STAMP)
	$(PY) -m pytest tests/test_chapters.py -p no:cacheprovider -n $(JOBS) $(PYTEST_ARGS)

# The chapters' cache: which chapters are current, and how to empty it.
status: $(STAMP)
	$(PY) scripts/chapters.py status

clean:
	rm -rf _build
