"""Check a built book: maths typeset with no network, and nothing on a page a reader must not see.

``make book`` runs it after ``jupyter-book build``; it reads ``_build/html`` and the executed
notebooks in ``_build/jupyter_execute``. Every problem is one line naming the chapter file, the
cell's index in the notebook and what is wrong. What it checks, and why:

1. every chapter page loads MathJax from a local file that exists (``_static/mathjax``, shipped by
   ``sphinx-mathjax-offline``), never from a CDN, so a book read offline shows typeset maths;
2. no chapter shows a bare value as a cell's result (a cell whose only visible output is the
   text of its last expression, such as ``'0.953'``): cells that only glue numbers for the prose
   must show nothing;
3. no visible cell shows ``stderr`` (warnings, log lines, progress bars): on the page they are
   noise a reader cannot act on, and they hide what the cell printed on purpose;
4. no rendered output (printed text, results, HTML, Markdown, tracebacks) holds a path of the
   machine that built the book (the repository, the home folder, ``/tmp/``, ``site-packages``,
   ``/usr/lib``, ...): it means nothing to a reader and tells the world where the builder's
   files live;
5. no visible code line and no printed line is wider than :data:`precode.notebook.PAGE_WIDTH`
   (88) columns, what the page shows without scrolling sideways. Code of a cell tagged
   ``remove-input`` or ``remove-cell`` is not on the page; ``hide-input`` code is (one click
   away), so it counts.

Cells tagged ``remove-cell`` are never checked, nor the outputs of cells tagged ``remove-output``.

With ``--browser`` it also opens a page in headless Chromium (Debian's ``chromium``) with every
network connection refused, counts the equations MathJax typeset in the page's DOM, fails when
some are left as raw TeX, and saves a screenshot::

    python scripts/check_book.py --browser book/06_precode.html --screenshot _build/math.png
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this repository's package, whatever the environment has installed
from precode.notebook import PAGE_WIDTH  # noqa: E402

BUILD = ROOT / "_build"
_SCRIPT_SRC = re.compile(r'<script[^>]*\bsrc="([^"]*mathjax[^"]*)"', re.IGNORECASE)
_CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # every connection goes to a closed local port: the page gets no network at all
    "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
]


def mathjax_problems(html_dir: Path) -> list[str]:
    """Chapter pages whose MathJax is remote, missing, or absent."""
    problems = []
    pages = sorted((html_dir / "book").glob("*.html"))
    if not pages:
        return [f"no built chapters in {html_dir / 'book'}; run make book first"]
    for page in pages:
        sources = _SCRIPT_SRC.findall(page.read_text(encoding="utf-8"))
        if not sources:
            continue  # a page without maths loads no MathJax
        for src in sources:
            if "://" in src or src.startswith("//"):
                problems.append(f"{page.relative_to(html_dir)} loads MathJax from the network: {src}")
            elif not (page.parent / src).resolve().exists():
                problems.append(f"{page.relative_to(html_dir)} loads MathJax from {src}, which is not in the build")
    return problems


def _chapters(executed_dir: Path) -> Iterator[tuple[str, int, dict, set[str]]]:
    """``(file name, cell index, cell, tags)`` of every code cell on a page (not ``remove-cell``)."""
    for path in sorted(executed_dir.glob("book/*.ipynb")):
        notebook = json.loads(path.read_text(encoding="utf-8"))
        for index, cell in enumerate(notebook["cells"]):
            tags = set(cell.get("metadata", {}).get("tags", []))
            if cell["cell_type"] == "code" and "remove-cell" not in tags:
                yield path.name, index, cell, tags


def _none_built(executed_dir: Path) -> list[str]:
    if not any(executed_dir.glob("book/*.ipynb")):
        return [f"no executed chapters in {executed_dir}; run make book first"]
    return []


def _text(value) -> str:
    return value if isinstance(value, str) else "".join(value)


def _shown(line: str, limit: int = 60) -> str:
    line = line.strip()
    return line if len(line) <= limit else line[:limit - 3] + "..."


# What the HTML page shows of a result, first match wins (myst-nb's render priority for html);
# the papermill records of glue(..., display=False) are none of these, so they show nothing.
_RENDER_PRIORITY = (
    "application/vnd.jupyter.widget-view+json", "application/javascript", "text/html", "image/svg+xml",
    "image/png", "image/jpeg", "text/markdown", "text/latex", "text/plain",
)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _rendered(cell: dict, tags: set[str]) -> Iterator[tuple[str, str]]:
    """``(kind, text)`` of each output the page shows as text: ``stdout``/``stderr`` (streams),
    ``text/plain``, ``text/html``, ``text/markdown``, ``text/latex`` or ``error`` (the traceback)."""
    if "remove-output" in tags:
        return
    for output in cell.get("outputs", []):
        kind = output["output_type"]
        if kind == "stream":
            yield output["name"], _text(output["text"])
        elif kind == "error":
            yield "error", _ANSI.sub("", "\n".join([*output.get("traceback", []),
                                                    f"{output['ename']}: {output['evalue']}"]))
        else:
            data = output.get("data", {})
            mime = next((m for m in _RENDER_PRIORITY if m in data), None)
            if mime is not None and mime.startswith("text/"):
                yield mime, _text(data[mime])


def stray_outputs(executed_dir: Path) -> list[str]:
    """Visible cell results that are only the text of a value (e.g. a glued number)."""
    problems = _none_built(executed_dir)
    for name, index, cell, tags in _chapters(executed_dir):
        if "remove-output" in tags:
            continue
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if output["output_type"] == "execute_result" and set(data) == {"text/plain"}:
                value = "".join(data["text/plain"])[:60]
                problems.append(f"{name} cell {index} shows a bare value: {value}")
    return problems


def stderr_outputs(executed_dir: Path) -> list[str]:
    """Visible cells that show text written to ``stderr`` (a warning, a log line, a progress bar)."""
    problems = _none_built(executed_dir)
    for name, index, cell, tags in _chapters(executed_dir):
        for kind, text in _rendered(cell, tags):
            if kind == "stderr":
                first = next((line for line in text.splitlines() if line.strip()), "")
                problems.append(f"{name} cell {index} shows stderr: {_shown(first, 80)}")
    return problems


def machine_paths(root: Path = ROOT, home: Path | None = None) -> list[str]:
    """The beginnings of paths that only exist on the machine that built the book."""
    home = Path.home() if home is None else home
    paths = [str(root), str(home) if len(home.parts) > 1 else "", "/tmp/", "/root/", "/home/", "/usr/lib",
             "/usr/local/", "/usr/share/", "/var/", "/opt/", "site-packages", "dist-packages"]
    return sorted({p for p in paths if p}, key=len, reverse=True)


_PATH_START = re.compile(r"[^\s'\"`<>()=,;:]*\Z")  # back from a marker to where its path begins
_PATH_END = re.compile(r"[\s'\"`<>(),;]")


def path_outputs(executed_dir: Path, paths: list[str] | None = None) -> list[str]:
    """Visible outputs that hold a path of the build machine (:func:`machine_paths`), each path once
    per cell. A path must start a word (``https://example.org/home/`` is an address, not a path)."""
    markers = machine_paths() if paths is None else paths
    pattern = re.compile("|".join(
        (r"(?<![\w./-])" if m.startswith("/") else "") + re.escape(m) for m in markers))
    problems = _none_built(executed_dir)
    for name, index, cell, tags in _chapters(executed_dir):
        found: dict[str, None] = {}
        for _kind, text in _rendered(cell, tags):
            for match in pattern.finditer(text):
                start = _PATH_START.search(text, 0, match.start()).start()
                path = _PATH_END.split(text[start:], maxsplit=1)[0]
                found.setdefault(_shown(path.rstrip(":."), 80))
        problems += [f"{name} cell {index} shows a path of the build machine: {path}" for path in found]
    return problems


def wide_lines(executed_dir: Path, width: int = PAGE_WIDTH) -> list[str]:
    """Visible code lines and printed lines (``stdout``, ``text/plain``) wider than ``width`` columns.

    A cell tagged ``remove-input`` shows no code; ``hide-input`` code is one click away, so it counts.
    """
    problems = _none_built(executed_dir)
    for name, index, cell, tags in _chapters(executed_dir):
        if "remove-input" not in tags:
            for number, line in enumerate(_text(cell["source"]).splitlines(), 1):
                if len(line) > width:
                    problems.append(f"{name} cell {index} code line {number} is {len(line)} columns wide "
                                    f"(page: {width}): {_shown(line)}")
        for kind, text in _rendered(cell, tags):
            if kind in ("stdout", "text/plain"):
                for line in text.splitlines():
                    if len(line) > width:
                        problems.append(f"{name} cell {index} prints a line {len(line)} columns wide "
                                        f"(page: {width}): {_shown(line)}")
    return problems


def browser_check(page: Path, screenshot: Path | None) -> list[str]:
    """Typeset-equation count of ``page`` in headless Chromium with no network."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        return ["--browser needs Chromium: apt-get install chromium"]
    html = page.read_text(encoding="utf-8")
    expected = len(re.findall(r'class="math[ "]', html))
    with tempfile.TemporaryDirectory() as profile:
        base = [chromium, *_CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=20000"]
        dom = subprocess.run(base + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
        if screenshot is not None:
            subprocess.run(base + ["--window-size=1200,2400", f"--screenshot={screenshot}", page.as_uri()],
                           capture_output=True, timeout=120, check=True)
    typeset = dom.count("<mjx-container")
    print(f"{page.name}: {typeset} equations typeset by MathJax with no network "
          f"({expected} maths elements in the page)")
    if expected == 0:
        return [f"{page.name} has no maths to check"]
    if typeset < expected:
        return [f"{page.name}: only {typeset} of {expected} maths elements were typeset offline"]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", type=Path, default=BUILD, help="the build folder (default _build)")
    parser.add_argument("--browser", metavar="PAGE", help="also typeset PAGE (relative to html/) in headless Chromium")
    parser.add_argument("--screenshot", type=Path, help="with --browser: save a screenshot here")
    args = parser.parse_args(argv)
    executed = args.build / "jupyter_execute"
    problems = mathjax_problems(args.build / "html")
    for check in (stray_outputs, stderr_outputs, path_outputs, wide_lines):
        problems += check(executed)
    problems = list(dict.fromkeys(problems))  # "no executed chapters" once, not once per check
    if args.browser:
        problems += browser_check(args.build / "html" / args.browser, args.screenshot)
    for problem in problems:
        print(f"check_book: {problem}", file=sys.stderr)
    if not problems:
        print("check_book: maths shipped with the build; no stray outputs, stderr, machine paths or wide lines")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
