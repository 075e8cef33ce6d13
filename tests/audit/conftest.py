import pytest
import torch


@pytest.fixture(scope="package", autouse=True)
def _one_thread():
    """Small models run fastest on one thread; on a loaded 2-core machine, many times faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
