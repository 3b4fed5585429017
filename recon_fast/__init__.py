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
    """What the compiled extension contains and which CPU kernels it runs.

    Keys: ``cuda`` (CUDA kernels built), ``openmp``, ``cpu_capability`` (the SIMD path in use:
    ``baseline``, ``avx2`` or ``avx512``), ``cpu_capabilities`` (every path this CPU supports),
    ``cpu_native`` (built with ``RECON_FAST_NATIVE=1``). ``cpu_simd`` is the former name of
    ``cpu_capability``, kept for code that reads it.
    """
    info = dict(_C.build_info())
    info["cpu_simd"] = info["cpu_capability"]
    return info


from recon_fast._extension import (  # noqa: E402
    cpu_capability, set_cpu_capability, use_cpu_capability)

__all__ = ["ops", "build_info", "cpu_capability", "set_cpu_capability", "use_cpu_capability",
           "ReconFastError", "ExtensionNotBuiltError", "__version__"]
