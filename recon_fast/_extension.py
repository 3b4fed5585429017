"""Loads the compiled extension ``recon_fast._C``, which registers ``torch.ops.recon_fast.*``."""

import contextlib
import importlib
import os

BUILD_HINT = (
    "recon_fast's compiled extension (recon_fast._C) is not built. From the repository root run\n"
    "    pip install -r requirements.txt && pip install --no-build-isolation -e .\n"
    "(set RECON_FAST_FORCE_CPU=1 to skip the CUDA kernels)."
)


class ExtensionNotBuiltError(ImportError):
    """The C++/CUDA extension is missing or was built against another torch."""


CPU_CAPABILITY_ENV = "RECON_FAST_CPU_CAPABILITY"


def load_extension():
    import torch  # noqa: F401  (the extension links against libtorch: load it first)

    try:
        module = importlib.import_module("recon_fast._C")
    except ImportError as err:
        detail = str(err)
        if "undefined symbol" in detail:
            raise ExtensionNotBuiltError(
                f"recon_fast._C was built against a different torch than the installed "
                f"{torch.__version__} ({detail}). Rebuild it:\n"
                "    pip install --no-build-isolation -e .") from err
        raise ExtensionNotBuiltError(f"{BUILD_HINT}\n(import error: {detail})") from err
    _apply_capability_from_environment(module)
    return module


def _apply_capability_from_environment(module):
    """Honours RECON_FAST_CPU_CAPABILITY, or says clearly why it cannot."""
    requested = os.environ.get(CPU_CAPABILITY_ENV, "").strip()
    if not requested:
        return
    try:
        module.set_cpu_capability(requested)
    except ValueError as err:
        raise ValueError(f"{CPU_CAPABILITY_ENV}={requested!r}: {err}") from None


def _module():
    return importlib.import_module("recon_fast._C")


def cpu_capability() -> str:
    """The SIMD path the CPU kernels use now: "baseline", "avx2" or "avx512"."""
    return _module().cpu_capability()


def set_cpu_capability(name: str) -> None:
    """Run the CPU kernels compiled for `name`: "auto" (the best this CPU supports), "baseline",
    "avx2" or "avx512". Every path returns the same values bit for bit; this exists for tests and
    benchmarks. Raises ValueError naming the capability if it is unknown or the CPU lacks it."""
    _module().set_cpu_capability(str(name))


@contextlib.contextmanager
def use_cpu_capability(name: str):
    """Context manager: the CPU kernels use `name` inside the block, the previous path after."""
    previous = cpu_capability()
    set_cpu_capability(name)
    try:
        yield
    finally:
        set_cpu_capability(previous)
