"""Execute the book's chapters once, into the cache that the book build reads.

The chapters are executed by nbmake (its ``NotebookRun``, the executor of ``pytest --nbmake``),
one per pytest test (``tests/test_chapters.py``), two at a time with pytest-xdist and one torch
thread each, and the executed notebooks are stored in Jupyter Book's jupyter-cache
(``_build/.jupyter_cache``). ``jupyter-book build`` runs with ``execute_notebooks: cache``: it
renders the stored outputs and executes only what it cannot find.

When is a chapter executed again? A chapter is current when the cache holds a successful
execution of its code cells exactly as they are now (jupyter-cache hashes the code cells and the
kernel) *and* the cache was filled under the same dependencies: the package's source
(every file under ``precode/``), ``requirements.txt``, the profile (``$PRECODE_PROFILE``) and
the Fashion-MNIST the chapters would load (the full data or the embedded sample). A change to
one chapter re-executes that chapter; a change to any of the dependencies empties the cache, so
every chapter is executed again. Markdown-only edits re-execute nothing.

    python scripts/chapters.py status     # which chapters are current
    python scripts/chapters.py clear      # empty the cache
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "_build" / ".jupyter_cache"
STAMP_FILE = CACHE / "precode-dependencies.json"
LOCK_FILE = ROOT / "_build" / "chapters.lock"
TIMEOUT = 1800  # seconds per cell, as execute.timeout in _config.yml


def chapters() -> list[Path]:
    """The executable chapters (notebooks) listed in ``_toc.yml``, in order."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [entry["file"] for entry in part.get("chapters", [])]
    return [ROOT / f"{f}.ipynb" for f in files if (ROOT / f"{f}.ipynb").exists()]


def _hash_tree(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def dependency_stamp() -> dict[str, str]:
    """What every chapter's outputs depend on besides its own code (see the module docstring)."""
    from precode import package_fingerprint
    from precode.data import DEBIAN_FASHION_MNIST, data_root

    raw = data_root() / "FashionMNIST" / "raw"
    full = raw.joinpath("train-images-idx3-ubyte").exists() or DEBIAN_FASHION_MNIST.joinpath(
        "train-images-idx3-ubyte.gz").exists()
    return {
        "package": package_fingerprint(),
        "requirements": _hash_tree([ROOT / "requirements.txt"]),
        "profile": os.environ.get("PRECODE_PROFILE", "quick").strip().lower() or "quick",
        "fashion-mnist": f"full ({raw})" if full else "embedded sample",
    }


@contextlib.contextmanager
def _locked():
    """One process at a time reads or writes the cache (pytest-xdist runs two)."""
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def open_cache():
    """The jupyter-cache of the book, emptied first if it was filled under other dependencies."""
    from jupyter_cache import get_cache

    stamp = dependency_stamp()
    old = json.loads(STAMP_FILE.read_text()) if STAMP_FILE.exists() else None
    cache = get_cache(str(CACHE))
    if old != stamp:
        if CACHE.exists():
            cache.clear_cache()
            cache = get_cache(str(CACHE))
        cache.list_cache_records()  # creates the cache folder and its database
        STAMP_FILE.write_text(json.dumps(stamp, indent=1) + "\n")
    return cache


def is_current(path: Path) -> bool:
    """Whether the cache holds a successful execution of this chapter as it is now."""
    with _locked():
        cache = open_cache()
        try:
            cache.match_cache_notebook(nbformat.read(path, nbformat.NO_CONVERT))
        except KeyError:
            return False
        return True


def forget(path: Path) -> None:
    """Remove the chapter's current cache entry, so that it is executed again (a cold run)."""
    with _locked():
        cache = open_cache()
        try:
            record = cache.match_cache_notebook(nbformat.read(path, nbformat.NO_CONVERT))
        except KeyError:
            return
        cache.remove_cache(record.pk)


def execute(path: Path):
    """Execute one chapter with nbmake in its own folder; store it in the cache when it passes.

    Returns nbmake's ``NotebookResult`` (``.nb`` executed, ``.error`` None or the failing cell)
    and the seconds it took.
    """
    from jupyter_cache.base import CacheBundleIn
    from nbmake.nb_run import NotebookRun

    # What is executed, read before it runs: a chapter or package edited while it runs must not be
    # stored as current with outputs of the code that was there before.
    source = nbformat.read(path, nbformat.NO_CONVERT)
    stamp = dependency_stamp()
    start = time.perf_counter()
    result = NotebookRun(path, default_timeout=TIMEOUT).execute()
    seconds = time.perf_counter() - start
    if result.error is None:
        # Cache the chapter's own source with the executed outputs, so the build's hash matches.
        executed = [c for c in result.nb.cells if c.cell_type == "code"]
        code = [c for c in source.cells if c.cell_type == "code"]
        assert len(executed) == len(code), "nbmake returned a different number of code cells"
        changed = any(cell.source != ran.source for cell, ran in zip(code, executed)) or dependency_stamp() != stamp
        if changed:
            print(f"{path.name} or its dependencies changed while it ran: not stored in the cache", file=sys.stderr)
            return result, seconds
        for cell, ran in zip(code, executed):
            cell.outputs, cell.execution_count = ran.outputs, ran.execution_count
        with _locked():
            open_cache().cache_notebook_bundle(
                CacheBundleIn(source, str(path), data={"execution_seconds": seconds}),
                check_validity=False, overwrite=True,
            )
    return result, seconds


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "status"
    if command == "clear":
        with _locked():
            if CACHE.exists():
                open_cache().clear_cache()
            STAMP_FILE.unlink(missing_ok=True)
        print(f"emptied {CACHE.relative_to(ROOT)}")
        return 0
    if command == "status":
        print(json.dumps(dependency_stamp()))
        for path in chapters():
            print(f"{'current' if is_current(path) else 'stale  '}  {path.relative_to(ROOT)}")
        return 0
    print(f"unknown command {command!r}; use status or clear", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
