import os

import pytest
import torch

# Tests run on the CPU with few threads, whatever the machine.
torch.set_num_threads(min(2, torch.get_num_threads()))
os.environ.setdefault("PRECODE_PROFILE", "quick")


@pytest.fixture
def one_thread():
    """One torch thread for the test (the attacks are many small operations), restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def sample():
    """The embedded Fashion-MNIST sample's test split (needs nothing installed)."""
    from precode.data import load_data

    return load_data("fashion-mnist-sample", "test")
