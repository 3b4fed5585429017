"""Benchmark fixtures: devices, thread settings, and the end-of-session summary table."""

import pytest
import torch

import harness
from recon_fast import ops

CUDA = torch.cuda.is_available()


def pytest_configure(config):
    # Timing loops skip the data-dependent input checks (they cost a host sync on CUDA); parity
    # checks before timing still guard correctness.
    ops.set_checks(False)


def pytest_collection_modifyitems(config, items):
    if CUDA:
        return
    skip = pytest.mark.skip(reason="GPU workload: no CUDA device present")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    harness.write_report(terminalreporter.write)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
