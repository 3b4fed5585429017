"""Loads the compiled extension ``recon_fast._C``, which registers ``torch.ops.recon_fast.*``."""

import importlib

BUILD_HINT = (
    "recon_fast's compiled extension (recon_fast._C) is not built. From the repository root run\n"
    "    pip install -r requirements.txt && pip install --no-build-isolation -e .\n"
    "(set RECON_FAST_FORCE_CPU=1 to skip the CUDA kernels)."
)


class ExtensionNotBuiltError(ImportError):
    """The C++/CUDA extension is missing or was built against another torch."""


def load_extension():
    import torch  # noqa: F401  (the extension links against libtorch: load it first)

    try:
        return importlib.import_module("recon_fast._C")
    except ImportError as err:
        detail = str(err)
        if "undefined symbol" in detail:
            raise ExtensionNotBuiltError(
                f"recon_fast._C was built against a different torch than the installed "
                f"{torch.__version__} ({detail}). Rebuild it:\n"
                "    pip install --no-build-isolation -e .") from err
        raise ExtensionNotBuiltError(f"{BUILD_HINT}\n(import error: {detail})") from err
