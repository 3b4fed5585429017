"""recon_fast: a fast, kernel-backed implementation of ReCon (Qi et al., ICML 2023).

Importing the package loads the compiled point ops, available as ``torch.ops.recon_fast.*``
and through the typed Python API in :mod:`recon_fast.ops`.
"""

from recon_fast._extension import ExtensionNotBuiltError, load_extension
from recon_fast.errors import ReconFastError

_C = load_extension()

from recon_fast import ops  # noqa: E402

__version__ = "0.1.0"


def build_info():
    """What the compiled extension contains: {'cuda': bool, 'cuda_archs': str, 'openmp': bool, ...}."""
    return dict(_C.build_info())


__all__ = ["ops", "build_info", "ReconFastError", "ExtensionNotBuiltError", "__version__"]
