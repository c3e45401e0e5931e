import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """These tests use tiny inputs, where threads gain nothing and, on a busy machine, waiting for
    each other costs up to 10x; restore the setting afterwards for other projects' tests."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
