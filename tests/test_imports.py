"""The package's imports: they flow one way, nothing hides a cycle, and every dependency is declared.

The import graph is read from the source with ``ast``, so it sees every import a module can run:
at module level and inside functions (a function-local import of another ``precode`` module is
how a cycle hides until the function is called). An edge goes from a module to the module it
imports (``from .grid import Grid``: to ``precode.evaluation.grid``; ``from .. import metrics``:
to ``precode.metrics``, a submodule; ``from .. import __version__``: to the package ``precode``).
"""
from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "precode"

# Third-party packages a function may import where it needs them, and why. Anything else, and above
# all any precode module, is imported at the top of its module.
LOCAL_IMPORTS_ALLOWED = {  # (import times measured after torch, on a 2-core CPU)
    "opacus": "DP-SGD only; about 1.3 s to import",
    "torchvision": "the torchvision data sets only; about 1 s",
    "matplotlib": "figures only (about 0.6 s for pyplot); the commands choose the Agg backend first",
    "skimage": "SSIM and the bundled photos only; about 0.2 s, and it pulls in scipy",
    "scipy": "scipy.optimize, to match reconstructions to a batch's images (metrics.match_to_victims); about 0.2 s",
    "myst_nb": "optional: only where Jupyter Book is installed (precode.notebook.glue does nothing without it)",
    "flwr": "optional: the Flower simulation, only where Flower is installed",
}

# precode modules that import an optional heavy dependency at their top, so that the rest of the
# package imports them only where they are used.
LOCAL_PACKAGE_IMPORTS_ALLOWED = {
    "precode.fl.flower": "imports flwr at its top (the Flower apps); only the simulation needs it",
}

# Imported by the package but not a dependency of it: where the package uses it, it works without it.
OPTIONAL_IMPORTS = {"myst_nb", "flwr"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


class _Imports(ast.NodeVisitor):
    """Every import of one module: ``(line, target or top-level name, local, intra-package)``."""

    def __init__(self, module: str, is_package: bool):
        self.package = module if is_package else module.rpartition(".")[0]
        self.found: list[tuple[int, str, bool, bool]] = []
        self.depth = 0

    def _function(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def _add(self, line: int, name: str) -> None:
        intra = name == "precode" or name.startswith("precode.")
        if intra:
            while name not in MODULES:  # import precode.a.b.name: the deepest module named
                name = name.rpartition(".")[0]
        self.found.append((line, name if intra else name.split(".")[0], self.depth > 0, intra))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node.lineno, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")
            base = base[: len(base) - (node.level - 1)]
            base = ".".join(base + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        if base == "__future__":
            return
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            self._add(node.lineno, sub if sub in MODULES else base)


def _imports() -> dict[str, list[tuple[int, str, bool, bool]]]:
    out = {}
    for name, path in MODULES.items():
        visitor = _Imports(name, path.name == "__init__.py")
        visitor.visit(ast.parse(path.read_text(), str(path)))
        out[name] = visitor.found
    return out


IMPORTS = _imports()


def _graph() -> dict[str, set[str]]:
    return {m: {t for _, t, _, intra in found if intra and t != m} for m, found in IMPORTS.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as ``[a, b, ..., a]``, or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_sees_the_package():
    graph = _graph()
    assert {"precode", "precode.cli", "precode.evaluation.store", "precode.attacks.ig"} <= set(graph)
    assert "precode.evaluation.grid" in graph["precode.evaluation.store"]
    assert "precode.metrics" in graph["precode.evaluation.cells"]  # from .. import metrics: the submodule


def test_cycle_finder_reports_the_modules_of_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_package_imports_have_no_cycle():
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_functions_import_only_optional_heavy_dependencies():
    wrong = [
        f"{MODULES[m].relative_to(ROOT)}:{line}: {target}"
        for m, found in IMPORTS.items()
        for line, target, local, intra in dict.fromkeys(found)
        if local and (intra or target not in LOCAL_IMPORTS_ALLOWED) and target not in LOCAL_PACKAGE_IMPORTS_ALLOWED
    ]
    assert not wrong, ("import these at the top of the module (a function-local import of a precode module "
                       "hides a cycle; allowed inside functions: " + ", ".join(LOCAL_IMPORTS_ALLOWED) + "):\n"
                       + "\n".join(wrong))


# -- declarations --------------------------------------------------------------------------------


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(lines: list[str]) -> set[str]:
    names = set()
    for line in lines:
        line = line.split("#")[0].strip()
        if line:
            names.add(_normalise(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line).group(0)))
    return names


@functools.cache
def _providers() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _distributions(top_level: str) -> set[str]:
    """The installed distributions that provide the import name ``top_level``."""
    return {_normalise(d) for d in _providers().get(top_level, [])}


def _third_party(paths: list[Path]) -> dict[str, str]:
    """Top-level third-party import names of the files, each with the first place it is imported."""
    out: dict[str, str] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "precode" and top != "__future__":
                    out.setdefault(top, f"{path.relative_to(ROOT)}:{node.lineno}")
    return out


def test_every_third_party_import_of_the_package_is_a_declared_dependency():
    tomllib = pytest.importorskip("tomllib")
    declared = _requirement_names(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    missing = [f"{where}: {name}" for name, where in _third_party(list(MODULES.values())).items()
               if name not in OPTIONAL_IMPORTS and not _distributions(name) & declared]
    assert not missing, "declare these in pyproject.toml's dependencies (and requirements.txt):\n" + "\n".join(missing)


def test_every_third_party_import_of_the_tooling_is_in_requirements():
    declared = _requirement_names((ROOT / "requirements.txt").read_text().splitlines())
    files = [p for d in ("precode", "tests", "scripts", "benchmarks") for p in sorted((ROOT / d).rglob("*.py"))]
    local = {p.stem for p in files}  # scripts/ and tests/ import each other's modules by name
    missing = [f"{where}: {name}" for name, where in _third_party(files).items()
               if name not in local and name not in OPTIONAL_IMPORTS and not _distributions(name) & declared]
    assert not missing, "add these to requirements.txt:\n" + "\n".join(missing)


def test_the_declared_opacus_provides_what_dp_sgd_uses():
    import inspect

    from opacus import PrivacyEngine
    from opacus.grad_sample import GradSampleHooks  # new in opacus 1.6, hence opacus>=1.6

    assert "wrap_model" in inspect.signature(PrivacyEngine.make_private).parameters  # new in 1.6 as well
    assert callable(GradSampleHooks)
