"""precode: gradient leakage attacks, defenses and PRECODE, for the executable book.

Modules: :mod:`precode.data`, :mod:`precode.models`, :mod:`precode.bottleneck` (PRECODE),
:mod:`precode.training`, :mod:`precode.federated`, :mod:`precode.metrics`,
:mod:`precode.profiles`, :mod:`precode.seeds` and :mod:`precode.threat` (an experiment's random
streams and threat model), :mod:`precode.attacks`, :mod:`precode.defenses`,
:mod:`precode.evaluation` (the paper's grid), :mod:`precode.notebook` (chapter helpers),
:mod:`precode.fl` (federated learning in Flower, chapter 7; needs ``flwr[simulation]``).
Command line: ``python -m precode {attack,train,evaluate,federate}``.
"""
from .bottleneck import VariationalBottleneck, add_precode, bottleneck_loss, bottlenecks
from .data import ImageData, load_data
from .federated import compute_shared_gradients, compute_victim_gradients
from .models import build_model
from .profiles import get_profile
from .training import evaluate, loss_fn, train

__version__ = "0.1.0"

__all__ = [
    "VariationalBottleneck", "add_precode", "bottleneck_loss", "bottlenecks", "ImageData", "load_data",
    "compute_shared_gradients", "compute_victim_gradients", "build_model", "get_profile", "evaluate",
    "loss_fn", "train", "__version__",
]
