"""The command line: ``python -m precode COMMAND ...``.

The package ``precode/cli/``: each command lives in its own module (``precode/cli/<command>.py``:
``attack``, ``train``, ``evaluate``, ``federate``) that provides ``add_parser(subparsers)`` and
``run(args) -> int``, and imports :class:`UserError` and :func:`write_json` from
:mod:`precode.cli.common` (re-exported here). User errors (unknown
names, bad numbers, missing data) are raised as :class:`UserError`, or by the package as
:class:`precode.errors.InputError`, and printed as one line on stderr with exit status 2, without a
traceback; any other exception (a plain ``ValueError`` from a bug included) keeps its traceback.
Ctrl-C and SIGTERM end a command with one line and the exit status ``128 + signal`` (130, 143):
they unwind it (:class:`Interrupted`), so its locks and temporary files are cleaned up and what it
finished stays (``evaluate``: its finished cells; ``federate`` stops Ray and ends at once).
"""
from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from ..data import DataUnavailableError
from ..errors import InputError
from .common import Interrupted, UserError, write_json

__all__ = ["main", "UserError", "Interrupted", "write_json"]

COMMANDS = ("attack", "train", "evaluate", "federate")


def _available_commands() -> dict[str, Any]:
    modules = {}
    for name in COMMANDS:
        try:
            modules[name] = importlib.import_module(f"precode.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"precode.cli.{name}":
                raise
    return modules


def main(argv: Sequence[str] | None = None) -> int:
    commands = _available_commands()
    parser = argparse.ArgumentParser(
        prog="python -m precode",
        description="Gradient leakage attacks, defenses and PRECODE, from the executable book.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in commands.values():
        module.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    # Warnings (for example "using the embedded sample") go to stderr as one line each.
    warnings.formatwarning = lambda message, category, *a, **k: f"warning: {message}\n"
    threads = torch.get_num_threads()  # commands may choose their own; the caller gets its own back
    previous = None
    if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return int(commands[args.command].run(args) or 0)
    except (UserError, InputError, FileNotFoundError, DataUnavailableError) as e:
        # what the user asked for is wrong or missing: one line, exit status 2; anything else (a
        # plain ValueError from a bug included) keeps its traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"error: {Interrupted(signal.SIGINT)}", file=sys.stderr)
        return 128 + signal.SIGINT
    except Interrupted as e:
        print(f"error: {e}", file=sys.stderr)
        return e.status
    finally:
        torch.set_num_threads(threads)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, _frame) -> None:
    """SIGTERM: unwind the command as Ctrl-C does (its ``finally`` blocks run), then one line and 143."""
    raise Interrupted(signum)
