"""The book's own tooling: the repository URL in one place, the build checks, the chapters' cache."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import chapters  # noqa: E402
import check_book  # noqa: E402
import sync_repository  # noqa: E402


def test_repository_url_is_written_everywhere_from_config():
    assert sync_repository.sync(check=True) == [], "run python scripts/sync_repository.py"
    url = sync_repository.repository_url()
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        assert f"git+{url}.git" in json.dumps(json.loads(path.read_text())["cells"][0]["source"]), path.name


def test_a_fork_changes_one_setting(tmp_path):
    for name in ("_config.yml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "book", tmp_path / "book", ignore=shutil.ignore_patterns("*.bib", "*.md"))
    config = tmp_path / "_config.yml"
    config.write_text(config.read_text().replace(sync_repository.repository_url(), "https://github.com/someone/fork"))
    stale = sync_repository.sync(tmp_path, check=True)
    assert "README.md" in stale and len(stale) == len(list((ROOT / "book").glob("*.ipynb"))) + 1
    sync_repository.sync(tmp_path)
    assert sync_repository.sync(tmp_path, check=True) == []
    readme = (tmp_path / "README.md").read_text()
    assert "colab.research.google.com/github/someone/fork/blob/main" in readme
    assert "git+https://github.com/someone/fork.git" in readme and "precode-book/precode-book" not in readme
    install = "".join(json.loads((tmp_path / "book" / "01_leakage.ipynb").read_text())["cells"][0]["source"])
    assert "git+https://github.com/someone/fork.git" in install


def _page(html_dir, name, script):
    (html_dir / "book").mkdir(parents=True, exist_ok=True)
    (html_dir / "book" / name).write_text(f'<html><head>{script}</head><body><span class="math">x</span></body></html>')


def test_mathjax_must_come_from_the_build(tmp_path):
    html = tmp_path / "html"
    _page(html, "a.html", '<script defer="defer" src="../_static/mathjax/tex-chtml.js"></script>')
    assert "not in the build" in check_book.mathjax_problems(html)[0]
    (html / "_static" / "mathjax").mkdir(parents=True)
    (html / "_static" / "mathjax" / "tex-chtml.js").write_text("//")
    assert check_book.mathjax_problems(html) == []
    _page(html, "b.html", '<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>')
    assert check_book.mathjax_problems(html) == ["book/b.html loads MathJax from the network: "
                                                 "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"]


def test_stray_outputs_are_found(tmp_path):
    def cell(outputs, tags=()):
        return {"cell_type": "code", "metadata": {"tags": list(tags)}, "outputs": outputs, "source": ""}

    bare = {"output_type": "execute_result", "data": {"text/plain": ["'0.953'"]}, "metadata": {}}
    figure = {"output_type": "display_data", "data": {"image/png": "", "text/plain": ["<Figure>"]}, "metadata": {}}
    printed = {"output_type": "stream", "name": "stdout", "text": ["hello\n"]}
    notebook = {"cells": [cell([printed, figure]), cell([bare]), cell([bare], ["remove-output"])]}
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "x.ipynb").write_text(json.dumps(notebook))
    assert check_book.stray_outputs(tmp_path) == ["x.ipynb cell 1 shows a bare value: '0.953'"]


def _executed_book(folder: Path, *cells: dict) -> Path:
    """A build folder holding one executed chapter ``x.ipynb`` made of ``cells``."""
    (folder / "book").mkdir(parents=True, exist_ok=True)
    (folder / "book" / "x.ipynb").write_text(json.dumps({"cells": list(cells)}))
    return folder


def _code(source="x = 1", outputs=(), tags=()):
    return {"cell_type": "code", "metadata": {"tags": list(tags)}, "outputs": list(outputs), "source": source}


def _stream(text, name="stdout"):
    return {"output_type": "stream", "name": name, "text": text}


def _data(mime, text, kind="display_data"):
    return {"output_type": kind, "data": {mime: text}, "metadata": {}}


def test_a_clean_chapter_passes_every_output_check(tmp_path):
    figure = {"output_type": "display_data", "data": {"image/png": "", "text/plain": ["<Figure>"]}, "metadata": {}}
    glued = {"output_type": "display_data", "metadata": {"scrapbook": {"name": "x"}},
             "data": {"application/papermill.record/text/plain": "'/tmp/x " + "y" * 100 + "'"}}
    book = _executed_book(
        tmp_path,
        _code("print('the victims: 8 test images')", [_stream("the victims: 8 test images\n"), figure, glued]),
        _code("see https://example.org/home/tmp/page", [_data("text/html", "<a href='https://example.org/home/'>")]),
        {"cell_type": "markdown", "metadata": {}, "source": "a /tmp/ path in prose is the author's business"},
        # what the page does not show is not checked
        _code("import warnings  # " + "x" * 100, [_stream("/tmp/x.py:1: UserWarning\n", "stderr")], ["remove-cell"]),
        _code("y = 2", [_stream("/root/file " + "x" * 100 + "\n", "stderr")], ["remove-output"]),
        _code("# " + "x" * 100, [], ["remove-input"]),
    )
    for check in (check_book.stray_outputs, check_book.stderr_outputs, check_book.path_outputs,
                  check_book.wide_lines):
        assert check(book) == [], check.__name__


def test_stderr_on_a_page_is_found(tmp_path):
    warning = _stream(["\n", "chapter.py:3: UserWarning: using the embedded sample\n", "  warnings.warn(\n"], "stderr")
    book = _executed_book(tmp_path, _code(outputs=[_stream("ok\n")]), _code(outputs=[warning], tags=["hide-input"]))
    assert check_book.stderr_outputs(book) == ["x.ipynb cell 1 shows stderr: chapter.py:3: UserWarning: using the "
                                               "embedded sample"]


def test_paths_of_the_build_machine_are_found(tmp_path):
    paths = check_book.machine_paths(Path("/work/book"), Path("/home/builder"))
    assert {"/work/book", "/home/builder", "/tmp/", "site-packages", "/usr/lib", "/root/"} <= set(paths)
    error = {"output_type": "error", "ename": "ValueError", "evalue": "bad",
             "traceback": ['\x1b[0;31mFile \x1b[0;32m"/usr/lib/python3/dist-packages/torch/nn.py"\x1b[0m, line 3']}
    book = _executed_book(
        tmp_path,
        _code(outputs=[_stream("experiment store: /work/book/results/experiments\n")]),
        _code(outputs=[_data("text/plain", "PosixPath('/home/builder/.cache/precode')", "execute_result")]),
        _code(outputs=[_data("text/html", "<td>/tmp/ipykernel_1/2.py:10:</td>"),
                       _data("text/markdown", "read from `/tmp/ipykernel_1/2.py`")]),
        _code(outputs=[error]),
        _code(outputs=[_stream("x\n/opt/venv/lib/python3.12/site-packages/flwr/a.py: deprecated\n", "stderr")]),
    )
    assert check_book.path_outputs(book, paths) == [
        "x.ipynb cell 0 shows a path of the build machine: /work/book/results/experiments",
        "x.ipynb cell 1 shows a path of the build machine: /home/builder/.cache/precode",
        "x.ipynb cell 2 shows a path of the build machine: /tmp/ipykernel_1/2.py:10",
        "x.ipynb cell 2 shows a path of the build machine: /tmp/ipykernel_1/2.py",
        "x.ipynb cell 3 shows a path of the build machine: /usr/lib/python3/dist-packages/torch/nn.py",
        "x.ipynb cell 4 shows a path of the build machine: /opt/venv/lib/python3.12/site-packages/flwr/a.py",
    ]


def test_lines_wider_than_the_page_are_found(tmp_path):
    from precode.notebook import PAGE_WIDTH

    fits, wide = "x" * PAGE_WIDTH, "y" * (PAGE_WIDTH + 1)
    book = _executed_book(
        tmp_path,
        _code(f"a = 1\n{fits}\n{wide}", [_stream(fits + "\n")]),
        _code(wide, [_stream(["ok\n", wide + "\n"])], ["hide-input"]),  # hidden code is one click away
        _code(wide, [_data("text/plain", wide, "execute_result")], ["remove-input"]),
        _code(outputs=[_data("text/html", f"<p>{wide}</p>")]),  # HTML wraps on the page
    )
    assert [p.split(" (page")[0] for p in check_book.wide_lines(book)] == [
        f"x.ipynb cell 0 code line 3 is {PAGE_WIDTH + 1} columns wide",
        f"x.ipynb cell 1 code line 1 is {PAGE_WIDTH + 1} columns wide",
        f"x.ipynb cell 1 prints a line {PAGE_WIDTH + 1} columns wide",
        f"x.ipynb cell 2 prints a line {PAGE_WIDTH + 1} columns wide",
    ]
    assert all(p.endswith("yyy...") for p in check_book.wide_lines(book))


def test_an_unbuilt_book_is_one_problem(tmp_path):
    for check in (check_book.stderr_outputs, check_book.path_outputs, check_book.wide_lines):
        assert check(tmp_path) == [f"no executed chapters in {tmp_path}; run make book first"]


def test_chapters_come_from_the_toc_and_the_cache_depends_on_the_package(monkeypatch):
    names = [p.name for p in chapters.chapters()]
    assert names[0] == "01_leakage.ipynb" and names == sorted(names)
    stamp = chapters.dependency_stamp()
    assert set(stamp) == {"package", "requirements", "profile", "fashion-mnist"}
    monkeypatch.setenv("PRECODE_PROFILE", "full")
    assert chapters.dependency_stamp()["profile"] == "full"
    monkeypatch.setattr("precode.package_fingerprint", lambda: "edited")
    assert chapters.dependency_stamp()["package"] != stamp["package"]


@pytest.mark.parametrize("page", ["06_precode.html"])
def test_built_book_if_present(page):
    """After make book: the real build passes the checks (skipped before a build)."""
    built = ROOT / "_build" / "html" / "book" / page
    if not built.exists():
        pytest.skip("no built book; run make book")
    assert check_book.mathjax_problems(ROOT / "_build" / "html") == []


def _code_cells(path: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("chapter", sorted(p.name for p in (ROOT / "book").glob("*.ipynb")))
def test_chapters_take_their_sizes_from_the_profile(chapter):
    # a size chosen by the profile's name in a chapter is a size the profile does not document
    code = "\n".join(_code_cells(ROOT / "book" / chapter))
    assert "profile.name" not in code, f"{chapter}: use a field of precode.profiles.Profile instead of profile.name"


def _tiny_chapter(path: Path, code: str) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_a_chapter_edited_while_it_runs_is_not_stored_as_current(tmp_path, monkeypatch):
    monkeypatch.setattr(chapters, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(chapters, "STAMP_FILE", tmp_path / "cache" / "stamp.json")
    monkeypatch.setattr(chapters, "LOCK_FILE", tmp_path / "lock")
    plain = tmp_path / "plain.ipynb"
    _tiny_chapter(plain, "print(1 + 1)")
    result, _ = chapters.execute(plain)
    assert result.error is None and chapters.is_current(plain)
    # a chapter whose code changes on disk while it executes (here: it edits itself)
    edited = tmp_path / "edited.ipynb"
    _tiny_chapter(edited, "import json, pathlib\n"
                          f"p = pathlib.Path({str(edited)!r})\n"
                          "nb = json.loads(p.read_text())\n"
                          "nb['cells'][0]['source'] = 'print(2)'\n"
                          "p.write_text(json.dumps(nb))")
    result, _ = chapters.execute(edited)
    assert result.error is None
    assert not chapters.is_current(edited), "outputs of the old code were stored as the new code's"


def test_glue_names_and_intervals_for_the_prose(monkeypatch):
    from precode import notebook
    from precode.metrics import mean_ci95

    glued = {}
    monkeypatch.setattr(notebook, "glue", lambda name, value, display=False: glued.update({name: value}))
    assert notebook.glue_key("rnd MLP", "ig-eot, 4x budget") == "rnd_MLP_ig_eot_4x_budget"
    assert notebook.glue_key("leak", "PRECODE after block1") == "leak_PRECODE_after_block1"
    m, h = notebook.glue_ci("ssim_x", [0.2, 0.4, 0.9])
    assert (m, h) == mean_ci95([0.2, 0.4, 0.9])
    assert glued == {"ssim_x": f"{m:.2f} ± {h:.2f}"}


def test_the_setup_cell_prints_lines_that_fit_the_page(capsys, monkeypatch):
    import matplotlib

    from precode.notebook import PAGE_WIDTH, setup_chapter

    monkeypatch.setenv("PRECODE_PROFILE", "full")  # the longest profile line
    with matplotlib.rc_context():  # setup_chapter sets the book's figure style
        setup_chapter(store=False)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("profile 'full'") and all(len(line) <= PAGE_WIDTH for line in lines)


def test_say_wraps_printed_lines_at_the_page_width(capsys):
    from precode.notebook import PAGE_WIDTH, say

    say("note:", "word " * 60, "https://example.org/a-long-address-that-is-not-broken-at-its-hyphens")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) > 3 and all(len(line) <= PAGE_WIDTH for line in lines)
    assert lines[0].startswith("note: word") and all(line.startswith("  ") for line in lines[1:])
    assert lines[-1].strip().endswith("hyphens") and "-not-broken-at-its-" in lines[-1]


def test_chapters_that_share_experiments_run_one_after_the_other_on_one_worker():
    # make test's schedule (tests/conftest.py): each chapter that follows another (chapters 3 and 6 after
    # chapter 2, 5 after 4, 8 after 7, 9 after 8) runs after it, in one run of chapters of the same chain, in the
    # block of chapters that starts one worker's half, so that it reads the other's experiments from the store
    import types

    import conftest

    names = sorted(p.stem for p in (ROOT / "book").glob("*.ipynb"))
    assert set(conftest.FOLLOWS) | set(conftest.FOLLOWS.values()) <= {n[:2] for n in names}
    chapters_ = [types.SimpleNamespace(path=Path("tests/test_chapters.py"), callspec=types.SimpleNamespace(id=n))
                 for n in names]
    others = [types.SimpleNamespace(path=Path(f"tests/test_{i}.py")) for i in range(40)]
    items = others[:20] + chapters_ + others[20:]
    conftest.pytest_collection_modifyitems(None, None, items)
    assert sorted(map(id, items)) == sorted(map(id, chapters_ + others))  # nothing lost or repeated
    order = [getattr(getattr(i, "callspec", None), "id", "unit") for i in items]
    for later, earlier in conftest.FOLLOWS.items():
        first = order.index(next(n for n in names if n.startswith(earlier)))
        second = order.index(next(n for n in names if n.startswith(later)))
        between = order[first + 1:second]
        assert first < second and all(n != "unit" and conftest._first(n[:2]) == conftest._first(earlier)
                                      for n in between), order
    blocks = "".join("c" if o != "unit" else "u" for o in order)
    assert blocks.startswith("c") and blocks.count("uc") == 1 and blocks.endswith("u")  # two blocks, two halves


def test_every_chapter_is_a_valid_notebook_with_cell_ids():
    # nbformat 4.5's schema: every cell has an id, markdown cells carry no outputs (nbformat warns
    # about a missing id today and says it will become an error)
    import warnings

    import nbformat

    for path in sorted((ROOT / "book").glob("*.ipynb")):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            nb = nbformat.read(str(path), as_version=4)
            nbformat.validate(nb)
        ids = [c["id"] for c in nb.cells]
        assert len(set(ids)) == len(ids), f"{path.name}: repeated cell ids"
