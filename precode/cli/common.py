"""What every command of the command line shares: :class:`UserError` and :func:`write_json`.

The command modules (``precode/cli/<command>.py``) import these from here, and
:mod:`precode.cli`, which dispatches to them, re-exports them, so imports flow one way:
``precode.cli`` -> ``precode.cli.<command>`` -> ``precode.cli.common``.
"""
from __future__ import annotations

import json
import sys
from typing import Any

__all__ = ["UserError", "format_or_na", "write_json"]


class UserError(Exception):
    """An error in what the user asked for; printed as one line, exit status 2."""


def format_or_na(value: Any, spec: str) -> str:
    """``value`` formatted with ``spec`` for a table, or ``n/a`` when it is ``None``."""
    return "n/a" if value is None else format(value, spec)


def write_json(payload: dict[str, Any], target: str | None) -> None:
    """Write ``payload`` as JSON to the path ``target``, or to stdout when ``target`` is ``-``."""
    if target is None:
        return
    text = json.dumps(payload, indent=2, allow_nan=False)
    if target == "-":
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
        return
    try:
        with open(target, "w") as f:
            f.write(text + "\n")
    except OSError as e:
        raise UserError(f"cannot write JSON to {target}: {e.strerror}") from None
