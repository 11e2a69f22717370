"""The package source the chapters show: every ``literalinclude`` resolves, and is cut at names.

An excerpt is a whole object (``:pyobject:``) or the lines between two marker comments kept in the
source (``# [name]`` ... ``# [/name]``, given as ``:start-after: "# [name]"`` and
``:end-before: "# [/name]"``), never a line number or a string from a function body, so editing a
function cannot silently change what a chapter shows. The directives are parsed and read with
myst-parser's and Sphinx's own code, as the book build does.
"""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from myst_parser.parsers.directives import parse_directive_text
from sphinx.config import Config
from sphinx.directives.code import LiteralInclude, LiteralIncludeReader

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
CHAPTERS = sorted(BOOK.glob("*.ipynb"))
MARKER = re.compile(r"^# \[(/?)([a-z0-9-]+)\]$")
FORBIDDEN = ("lines", "start-at", "end-at")  # cuts at a line number or at raw code

_DIRECTIVE = re.compile(r"^(`{3,})\{literalinclude\}[ \t]*(.*)\n((?:.*\n)*?)\1[ \t]*$", re.MULTILINE)


def _excerpts() -> list[tuple[str, str, str]]:
    """``(where, first line, content)`` of every literalinclude in the chapters' markdown cells."""
    found = []
    for path in CHAPTERS:
        for i, cell in enumerate(json.loads(path.read_text())["cells"]):
            if cell["cell_type"] != "markdown":
                continue
            for m in _DIRECTIVE.finditer("".join(cell["source"]) + "\n"):
                found.append((f"{path.name} cell {i}", m.group(2).strip(), m.group(3)))
    return found


EXCERPTS = _excerpts()
IDS = [f"{where} {Path(first).name} " + re.findall(r":(?:pyobject|start-after): *(.+)", content + ":pyobject: ?")[0]
       for where, first, content in EXCERPTS]


def _parse(first_line: str, content: str) -> tuple[Path, dict]:
    result = parse_directive_text(LiteralInclude, first_line, content)
    assert not result.warnings, result.warnings
    return (BOOK / result.arguments[0]).resolve(), result.options


def _objects(tree: ast.AST, prefix: str = "") -> dict[str, tuple[int, int]]:
    """Dotted names of the functions and classes (and their methods) of a module, with their lines."""
    names = {}
    for node in getattr(tree, "body", []):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names[prefix + node.name] = (node.lineno, node.end_lineno)
            if isinstance(node, ast.ClassDef):
                names |= _objects(node, prefix + node.name + ".")
    return names


def test_the_chapters_have_excerpts():
    assert len(EXCERPTS) >= 20
    assert all(c.suffix == ".ipynb" for c in CHAPTERS)


@pytest.mark.parametrize(("where", "first_line", "content"), EXCERPTS, ids=IDS)
def test_excerpt_resolves_to_a_named_object_or_named_markers(where, first_line, content):
    path, options = _parse(first_line, content)
    assert path.is_file(), f"{where}: no file {path}"
    assert path.is_relative_to(ROOT / "precode"), f"{where}: the chapters show the package's source"
    used = sorted(set(FORBIDDEN) & set(options))
    assert not used, f"{where}: cut at a name (:pyobject: or marker comments), not with :{used[0]}:"
    text = path.read_text()
    objects = _objects(ast.parse(text))
    if "pyobject" in options:
        assert options["pyobject"] in objects, f"{where}: no {options['pyobject']} in {path.name}"
    cuts = [options[k] for k in ("start-after", "end-before") if k in options]
    if cuts:
        assert len(cuts) == 2, f"{where}: give both :start-after: and :end-before: markers"
        start, end = (MARKER.match(c) for c in cuts)
        assert start and end, f"{where}: the cuts {cuts} are not marker comments like '# [name]' and '# [/name]'"
        assert not start.group(1) and end.group(1) and start.group(2) == end.group(2), \
            f"{where}: the markers {cuts} do not open and close the same name"
        for marker in cuts:
            count = len(re.findall(rf"^[ \t]*{re.escape(marker)}[ \t]*$", text, re.MULTILINE))
            assert count == 1 and text.count(marker) == 1, \
                f"{where}: {marker!r} must stand alone on one line of {path.name}, found {text.count(marker)}"
        if "pyobject" in options:  # Sphinx cuts the object first: the markers must lie inside its statements
            first, last = objects[options["pyobject"]]
            rows = [text[: text.index(c)].count("\n") + 1 for c in cuts]
            assert first < rows[0] < rows[1] < last, f"{where}: the markers are not inside {options['pyobject']}"
    else:
        assert "pyobject" in options, f"{where}: an excerpt is a :pyobject: or the lines between two markers"


@pytest.mark.parametrize(("where", "first_line", "content"), EXCERPTS, ids=IDS)
def test_excerpt_reads_as_the_book_build_reads_it(where, first_line, content):
    path, options = _parse(first_line, content)
    config = Config({})  # the defaults, as the book's _config.yml sets no encoding
    undented = {k: v for k, v in options.items() if k != "dedent"}
    text, count = LiteralIncludeReader(str(path), undented, config).read()
    assert count > 0 and text.strip(), f"{where}: the excerpt is empty"
    assert not any(MARKER.match(line.strip()) for line in text.splitlines()), f"{where}: shows a marker"
    dedent = options.get("dedent")
    if dedent:  # Sphinx warns (an error with -W) when dedenting strips code
        short = [line for line in text.splitlines() if line.strip() and not line.startswith(" " * dedent)]
        assert not short, f"{where}: :dedent: {dedent} would strip code from {short[0]!r}"


def test_package_cites_only_files_in_the_repository():
    cited = re.compile(r"``((?:book|precode|scripts|tests|benchmarks|shared)/[^`\s<>*{}]+)``")
    missing = [f"{p.relative_to(ROOT)}: {m}" for p in sorted((ROOT / "precode").rglob("*.py"))
               for m in cited.findall(p.read_text()) if not (ROOT / m).exists()]
    assert not missing, "docstrings cite files that are not in the repository:\n" + "\n".join(missing)
