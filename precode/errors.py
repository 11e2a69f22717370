"""The package's error for bad input: what a user asked for is wrong, and the message says how.

:class:`InputError` is a ``ValueError`` (so ``except ValueError`` and ``pytest.raises(ValueError)``
keep working) raised wherever the package rejects its input: unknown names, wrong shapes, empty
data, non-finite gradients, impossible settings. The command line (``python -m precode``) prints
it, like its own ``precode.cli.common.UserError``, as one line with exit status 2; any other
exception, a ``ValueError`` from a bug included, keeps its traceback.
"""
from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """Bad input to the package (a ``ValueError``): the message names the problem and the fix."""
