"""Check a built book: maths typeset with no network, and no stray outputs.

``make book`` runs it after ``jupyter-book build``; it reads ``_build/html`` and the executed
notebooks in ``_build/jupyter_execute``:

1. every chapter page loads MathJax from a local file that exists (``_static/mathjax``, shipped by
   ``sphinx-mathjax-offline``), never from a CDN;
2. no chapter shows a bare value as a cell's result (a cell whose only visible output is the
   text of its last expression, such as ``'0.953'``): cells that only glue numbers for the prose
   must show nothing.

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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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


def stray_outputs(executed_dir: Path) -> list[str]:
    """Visible cell results that are only the text of a value (e.g. a glued number)."""
    problems = []
    notebooks = sorted(executed_dir.glob("book/*.ipynb"))
    if not notebooks:
        return [f"no executed chapters in {executed_dir}; run make book first"]
    for path in notebooks:
        notebook = json.loads(path.read_text(encoding="utf-8"))
        for index, cell in enumerate(notebook["cells"]):
            tags = set(cell.get("metadata", {}).get("tags", []))
            if cell["cell_type"] != "code" or tags & {"remove-cell", "remove-output"}:
                continue
            for output in cell.get("outputs", []):
                data = output.get("data", {})
                if output["output_type"] == "execute_result" and set(data) == {"text/plain"}:
                    value = "".join(data["text/plain"])[:60]
                    problems.append(f"{path.name} cell {index} shows a bare value: {value}")
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
    problems = mathjax_problems(args.build / "html") + stray_outputs(args.build / "jupyter_execute")
    if args.browser:
        problems += browser_check(args.build / "html" / args.browser, args.screenshot)
    for problem in problems:
        print(f"check_book: {problem}", file=sys.stderr)
    if not problems:
        print("check_book: maths shipped with the build; no stray outputs")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
