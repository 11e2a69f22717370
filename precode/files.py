"""Writing files that survive a kill, and a lock that keeps a second run out of a folder.

Hours of computation end up in a few files (an evaluation's CSV files, a trained model's weights,
the experiment store's entries). Two rules keep them whole, whatever moment a run is killed at:

* :func:`atomic_write`: a file is written under a temporary name in its own folder, flushed to
  disk, then renamed over its final name (``os.replace``, atomic on POSIX and Windows). A reader,
  or the next run, finds the old file or the new one, never half of one. A kill leaves at most a
  temporary file behind, named ``.NAME.*.precode-part`` (:data:`PART_SUFFIX`), which
  :func:`remove_parts` clears.
* :class:`FolderLock`: one run at a time per folder. The lock is the kernel's (``fcntl.flock`` on
  ``FOLDER/.lock``), so it goes away with its process however that process ends (a kill, a
  crash, a power cut: no stale lock to remove by hand); the file holds the holder's PID and host
  so that a second run can say who holds it.

Used by ``precode.evaluation.store`` (the evaluation's result folder), by
:mod:`precode.experiment_store` and by the command line's JSON and figure outputs.
"""
from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .errors import InputError

try:  # POSIX; on Windows a folder is not locked (see FolderLock)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["atomic_write", "remove_parts", "FolderLock", "PART_SUFFIX", "LOCK_NAME"]

PART_SUFFIX = ".precode-part"
"""The suffix of a file being written (:func:`atomic_write`); one left behind was cut off by a kill."""

LOCK_NAME = ".lock"
"""The lock file of a folder (:class:`FolderLock`)."""


def _commit(temporary: str | os.PathLike, target: str | os.PathLike) -> None:
    """Put the fully written ``temporary`` file in the place of ``target`` in one step.

    The one place where a written file becomes visible: the fault-injection tests
    (``tests/test_faults.py``) kill a run here.
    """
    os.replace(temporary, target)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_args) -> Iterator[IO]:
    """Open ``path`` for writing such that it is replaced in one step when the block ends.

    Yields a file object of the temporary file (``mode``: ``"w"`` for text, ``"wb"`` for bytes;
    ``open_args`` as for :func:`open`, e.g. ``newline=""`` for CSV). When the block ends without an
    exception the file is flushed, synced to disk and renamed to ``path``; on an exception it is
    removed and ``path`` is left as it was. The folder must exist.
    """
    if mode not in ("w", "wb"):
        raise InputError(f"atomic_write writes whole files: mode 'w' or 'wb', got {mode!r}")
    path = Path(path)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=PART_SUFFIX)
    try:
        with os.fdopen(fd, mode, **open_args) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        _commit(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def remove_parts(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that kills left in ``folder`` (not in its subfolders); returns them."""
    folder = Path(folder)
    parts = sorted(folder.glob(f".*{PART_SUFFIX}")) if folder.is_dir() else []
    for part in parts:
        part.unlink(missing_ok=True)
    return parts


class FolderLock:
    """An exclusive lock on ``folder`` held by this process until :meth:`release` (or its end).

    Args:
        folder: an existing folder; its lock file is ``folder/.lock``.
        what: what the folder holds, for the message (``"evaluation"``).

    Raises:
        InputError: another process holds the lock; the message names it (PID and host, from the
            lock file) and says what to do. Within one process, a second lock on the same folder is
            refused too (the kernel's lock belongs to an open file, not to a process).

    Without ``fcntl`` (Windows) nothing is locked: the lock file is written, never checked.
    """

    def __init__(self, folder: str | os.PathLike, what: str = "run"):
        self.path = Path(folder) / LOCK_NAME
        self._file: IO | None = open(self.path, "a+")  # never truncated before the lock is ours
        if fcntl is not None:
            try:
                fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                self._file.seek(0)
                holder = self._file.read().strip() or "another process"
                self._file.close()
                self._file = None
                raise InputError(
                    f"{Path(folder)} is in use by another {what} ({holder}); wait for it to finish or stop it, "
                    f"or choose another folder"
                ) from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"PID {os.getpid()} on {socket.gethostname()}\n")
        self._file.flush()

    @property
    def held(self) -> bool:
        return self._file is not None

    def release(self) -> None:
        """Give the lock up (the lock file stays: removing it would let a third run lock another file)."""
        if self._file is not None:
            self._file.close()  # closing the file releases the kernel's lock
            self._file = None

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
