"""DP tests run many tiny tensor ops: one intra-op thread avoids oversubscription on the
shared CI box (restored afterwards, so other packages' tests are unaffected)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# Opacus tutorial-style scripts, exec'd by test_dp_opacus_dropin.py (they import opacus)
collect_ignore_glob = ["opacus_scripts/*"]
