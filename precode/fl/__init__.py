"""Federated learning in a real framework: Flower clients, a curious server, and what it sees.

* ``precode.fl.streams``: the separate random streams of clients and attacker;
* ``precode.fl.client``: a client's images and its ``E`` local SGD steps (plain PyTorch);
* ``precode.fl.server``: the honest-but-curious server's reconstruction of each update;
* ``precode.fl.flower``: the Flower apps (``ClientApp``, ``ServerApp``, the curious
  ``FedAvg`` strategy, SecAgg+); the only modules that import ``flwr``, with
* :mod:`~precode.fl.simulation`: one experiment in Flower's simulation engine, scored.

``flwr[simulation]`` (Python 3.11 or newer) is needed only by the last two.

Used in chapter 10 (``book/10_federated.ipynb``) and by ``python -m precode federate``.
"""
from .client import client_batch, client_update, images_needed
from .server import THREAT_MODEL, CuriousServer, Reconstruction
from .streams import STREAMS, derive_seed, generator

__all__ = [
    "STREAMS", "THREAT_MODEL", "CuriousServer", "Reconstruction", "client_batch", "client_update", "derive_seed",
    "generator", "images_needed",
]
