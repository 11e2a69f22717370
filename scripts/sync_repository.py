"""Write the book's repository URL, set once in ``_config.yml``, wherever else it must appear.

The repository is one setting: ``repository.url`` in ``_config.yml`` (Jupyter Book's launch and
repository buttons read it). Colab opens a chapter straight from GitHub, so the URL must also be
written into every chapter's hidden install cell (``pip install git+URL.git``) and into the
README's Colab and pip lines. ``make book`` runs this script before building; a fork changes
``_config.yml`` and runs ``python scripts/sync_repository.py`` (or ``make book``) once.

    python scripts/sync_repository.py            # rewrite what differs, list the files changed
    python scripts/sync_repository.py --check    # exit 1, naming the files, if anything differs

The unit test ``tests/test_book.py`` runs the check.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# Only the two forms that name the book's repository are rewritten (other GitHub links are left
# alone): pip's git+https://github.com/OWNER/REPO.git ...
_GITHUB = re.compile(r"(git\+https://github\.com/)[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+?(?=\.git\b)")
# ... and Colab's colab.research.google.com/github/OWNER/REPO/blob/...
_COLAB = re.compile(r"(colab\.research\.google\.com/github/)[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(?=/blob/)")


def repository_url(root: Path = ROOT) -> str:
    """``repository.url`` from ``_config.yml``: ``https://github.com/OWNER/REPO``."""
    config = yaml.safe_load((root / "_config.yml").read_text())
    url = str((config.get("repository") or {}).get("url", "")).rstrip("/")
    if not re.fullmatch(r"https://github\.com/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", url):
        raise SystemExit(f"_config.yml: repository.url must be https://github.com/OWNER/REPO, got {url!r}")
    return url


def _rewrite(text: str, url: str) -> str:
    owner_repo = url.removeprefix("https://github.com/")
    text = _COLAB.sub(lambda m: m.group(1) + owner_repo, text)
    return _GITHUB.sub(lambda m: m.group(1) + owner_repo, text)


def _install_cell(notebook: dict) -> dict | None:
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code" and "pip" in "".join(cell["source"]):
            return cell
    return None


def sync(root: Path = ROOT, check: bool = False) -> list[str]:
    """Rewrite (or with ``check``, only find) the files whose repository URL differs; return them."""
    url = repository_url(root)
    stale = []
    for path in sorted((root / "book").glob("*.ipynb")):
        notebook = json.loads(path.read_text())
        cell = _install_cell(notebook)
        if cell is None:
            raise SystemExit(f"{path.relative_to(root)}: no hidden install cell (a code cell calling pip)")
        source = "".join(cell["source"])
        new = _rewrite(source, url)
        if new != source:
            stale.append(str(path.relative_to(root)))
            if not check:
                cell["source"] = new.splitlines(keepends=True)
                path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
    readme = root / "README.md"
    text = readme.read_text()
    new = _rewrite(text, url)
    if new != text:
        stale.append("README.md")
        if not check:
            readme.write_text(new)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file differs")
    args = parser.parse_args(argv)
    stale = sync(check=args.check)
    url = repository_url()
    if args.check and stale:
        print(f"repository URL differs from _config.yml ({url}) in: {', '.join(stale)}; "
              "run python scripts/sync_repository.py", file=sys.stderr)
        return 1
    for name in stale:
        print(f"wrote {url} into {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
