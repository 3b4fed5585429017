"""Shared pytest fixtures: seeded RNGs, the devices to test on, tolerances per dtype."""

import os
import random
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))  # tests/reference.py for every test module

CUDA = torch.cuda.is_available()


def _import_triton_interpreted_if_no_gpu():
    """Triton fixes interpreter vs compiler when triton.language is first imported (its reductions
    are jitted functions themselves), and importing torch._dynamo (torch.library, torch.compile)
    imports triton. So on a machine without a GPU the interpreter is requested here, before
    recon_fast.attention is imported. The variable is restored afterwards so that other test
    modules' "auto" backend keeps choosing SDPA on the CPU; Triton tests set it where they need it."""
    if torch.cuda.is_available():
        return
    previous = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        import triton.language  # noqa: F401
    except ImportError:
        pass
    finally:
        if previous is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = previous


# Before any test module imports recon_fast (whose torch.library use imports triton).
_import_triton_interpreted_if_no_gpu()

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def pytest_collection_modifyitems(config, items):
    if CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none present); the same test runs on one")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _data_checks_on():
    """Every test starts with the ops' data checks on, whatever an earlier test did."""
    from recon_fast import ops

    with ops.checks(data=True):
        yield


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


# (dtype, atol, rtol) for values that the kernels and the reference compute in the same
# accumulation dtype; halves only differ by the final rounding to the half type.
TOLERANCES = {
    torch.float64: (1e-12, 1e-12),
    torch.float32: (1e-6, 1e-5),
    torch.float16: (1e-3, 1e-3),
    torch.bfloat16: (1e-2, 1e-2),
}
ALL_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def assert_close(actual, expected, dtype=None, msg=""):
    """torch.testing.assert_close with the per-dtype tolerances above; reports max error and where."""
    atol, rtol = TOLERANCES[dtype or expected.dtype]
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol, msg=lambda m: f"{msg}\n{m}")
