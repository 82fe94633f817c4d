"""Fixtures shared by the app's tests."""

import pytest
import torch


@pytest.fixture
def one_torch_thread():
    """One torch thread: tiny tensors gain nothing from threads, and OpenMP threads on a busy CPU stall (seconds per call)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
