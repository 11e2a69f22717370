"""precode: gradient leakage attacks, defenses and PRECODE, for the executable book.

Modules: :mod:`precode.data`, :mod:`precode.models`, :mod:`precode.bottleneck` (PRECODE),
:mod:`precode.training`, :mod:`precode.federated`, :mod:`precode.metrics`,
:mod:`precode.profiles`, :mod:`precode.seeds` and :mod:`precode.threat` (an experiment's random
streams and threat model), :mod:`precode.attacks`, :mod:`precode.defenses`, :mod:`precode.experiment`
(one attack experiment under a threat model, scored), :mod:`precode.experiment_store` (experiments
kept under their whole configuration, the chapters' store), :mod:`precode.plotting` (the chapters' figures),
:mod:`precode.evaluation` (the paper's grid), :mod:`precode.notebook` (chapter helpers),
:mod:`precode.fl` (federated learning in Flower, chapter 10; needs ``flwr[simulation]``).
Command line: ``python -m precode {attack,train,evaluate,federate}``.
"""
import hashlib
from pathlib import Path

from .bottleneck import VariationalBottleneck, add_precode, bottleneck_loss, bottlenecks
from .data import ImageData, load_data
from .federated import compute_shared_gradients, compute_victim_gradients
from .models import build_model
from .profiles import get_profile
from .training import evaluate, loss_fn, train

__version__ = "0.1.0"


def package_fingerprint() -> str:
    """A hash of the package's files (code and bundled data) as they are on disk now: any edit changes it.

    What results depend on besides their own settings: the evaluation store records it in each run's
    ``config.json`` (a chapter never reads cells computed by other code), and the book's chapter cache
    in its dependency stamp (``scripts/chapters.py``). Not cached, so an edit made while a process
    runs is seen (about 20 ms for the package's 8.5 MB).
    """
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


__all__ = [
    "VariationalBottleneck", "add_precode", "bottleneck_loss", "bottlenecks", "ImageData", "load_data",
    "compute_shared_gradients", "compute_victim_gradients", "build_model", "get_profile", "evaluate",
    "loss_fn", "train", "__version__", "package_fingerprint",
]
