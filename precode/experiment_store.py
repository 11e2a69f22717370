"""The experiment store: what an attack experiment found, kept on disk under its whole configuration.

Chapters repeat experiments: chapter 6 attacks the untrained MLP and CNN exactly as chapter 2 does,
chapter 8's grid attacks PRECODE with Inverting Gradients exactly as chapter 7's does. With a store
in use (:func:`use_store`; :func:`precode.notebook.setup_chapter` turns it on for every chapter),
:func:`precode.experiment.run_attack` and :func:`~precode.experiment.run_attack_cases` first look
the experiment up and compute it only when it is not there; what they compute is stored.

The key (:meth:`ExperimentStore.key`) is a SHA-256 of everything the numbers depend on:

* the package's code (:func:`precode.package_fingerprint`) and torch's version;
* the attack, its budget (iterations, restarts; ``None`` is the profile's, so the profile's name
  is in the key) and its keyword options;
* the threat model's server, labels (and the rule, when inferred), client batch size and seed;
* every client defense (specs; an experiment with a :class:`~precode.defenses.Defense` object is
  not stored, its state is not a spec);
* the model: its class, every module's settings (training mode, PRECODE's sampling mode ...) and
  every parameter and buffer, byte by byte (:func:`model_fingerprint`);
* the victims' images and labels, byte by byte, and the device.

So a changed configuration never reads an entry another one wrote. Entries are files
``<folder>/<key>.pt`` of tensors and plain values (read with ``torch.load(weights_only=True)``),
written atomically, so two chapters running at once can share a folder; an entry that cannot be
read is a miss (said once), computed again and replaced. Deleting the folder
clears the store; nothing else needs it. The chapters' folder is ``results/experiments`` at the
top of the repository (ignored by git), next to the evaluation grid's ``results/evaluation-*``.

No store is in use unless one is turned on: the command line and the tests compute every
experiment. Used by :mod:`precode.experiment`.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import package_fingerprint
from .files import atomic_write

__all__ = ["ExperimentStore", "use_store", "active_store", "model_fingerprint", "tensor_fingerprint"]

_PLAIN = (bool, int, float, str, type(None))


def tensor_fingerprint(*tensors: torch.Tensor) -> str:
    """A hash of the tensors' dtypes, shapes and values."""
    digest = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _settings(module: nn.Module) -> dict[str, Any]:
    return {k: v for k, v in sorted(vars(module).items()) if isinstance(v, _PLAIN)
            or (isinstance(v, tuple) and all(isinstance(e, _PLAIN) for e in v))}


def model_fingerprint(model: nn.Module) -> str:
    """A hash of the model: every module's class and plain settings, every parameter and buffer."""
    digest = hashlib.sha256()
    for name, module in model.named_modules():
        digest.update(f"{name}:{type(module).__qualname__}:{_settings(module)!r}".encode())
    for name, t in model.state_dict(keep_vars=False).items():
        digest.update(name.encode())
        digest.update(tensor_fingerprint(t).encode())
    return digest.hexdigest()


class ExperimentStore:
    """Experiments' results in ``folder``, one file per configuration (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.unreadable = 0  # entries found unreadable so far (get)

    def key(self, config: dict[str, Any]) -> str:
        """The entry's name for a configuration of plain, JSON-ready values (the package's code and
        torch's version are added here)."""
        full = {"package": package_fingerprint(), "torch": torch.__version__, **config}
        return hashlib.sha256(json.dumps(full, sort_keys=True).encode()).hexdigest()[:32]

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored entry, or ``None`` when there is none or it cannot be read.

        An unreadable entry (truncated, empty, not written by ``torch.save``: a disk that filled up,
        a copy cut short) is a miss: the experiment is computed again and :meth:`put` replaces the
        entry. The first one a store meets is named in a warning; the others are counted in
        :attr:`unreadable` without a warning each.
        """
        path = self.folder / f"{key}.pt"
        if not path.is_file():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(entry, dict):
                raise TypeError(f"a {type(entry).__name__}, not an entry")
            return entry
        except Exception as e:  # zip, pickle, EOF and OS errors alike
            self.unreadable += 1
            if self.unreadable == 1:
                warnings.warn(f"the experiment store in {self.folder} holds an unreadable entry {path.name} "
                              f"({type(e).__name__}); it and any other unreadable entry are computed again and "
                              "replaced", stacklevel=2)
            return None

    def put(self, key: str, entry: dict[str, Any]) -> None:
        """Store ``entry`` (tensors and plain values) under ``key``, atomically
        (``precode.files.atomic_write``).

        Raises:
            OSError: the folder cannot be written.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.folder / f"{key}.pt", "wb") as f:
            torch.save(entry, f)

    def __len__(self) -> int:
        return len(list(self.folder.glob("*.pt"))) if self.folder.is_dir() else 0

    def __repr__(self) -> str:
        return f"ExperimentStore({str(self.folder)!r})"


_ACTIVE: ExperimentStore | None = None


def use_store(folder: str | os.PathLike | None) -> ExperimentStore | None:
    """Use the store in ``folder`` for every experiment from now on (``None``: no store); returns it."""
    global _ACTIVE
    _ACTIVE = None if folder is None else ExperimentStore(folder)
    return _ACTIVE


def active_store() -> ExperimentStore | None:
    """The store in use, or ``None``."""
    return _ACTIVE
