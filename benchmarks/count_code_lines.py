"""Non-blank code lines per chapter (hidden cells included), the measure of a thin chapter.

    .venv/bin/python benchmarks/count_code_lines.py

Prints a Markdown table: code cells, non-blank code lines, and how many of them are in hidden cells.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def count(path: Path) -> tuple[int, int, int]:
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    lines = hidden = 0
    for cell in cells:
        n = sum(1 for line in "".join(cell["source"]).splitlines() if line.strip())
        lines += n
        if "remove-cell" in cell.get("metadata", {}).get("tags", []):
            hidden += n
    return len(cells), lines, hidden


def main() -> int:
    print("| chapter | code cells | code lines | of which hidden |\n|---|---|---|---|")
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        cells, lines, hidden = count(path)
        print(f"| {path.stem} | {cells} | {lines} | {hidden} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
