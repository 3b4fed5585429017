"""Build recon_fast and its compiled extension ``recon_fast._C``.

The extension is built against the torch that is already installed (install with
``pip install --no-build-isolation``), so no second multi-GB torch is pulled into an
isolated build environment.

Environment switches
--------------------
RECON_FAST_FORCE_CPU=1     build the C++ CPU kernels only, even if nvcc is present.
RECON_FAST_FORCE_CUDA=1    fail the build if the CUDA kernels cannot be built.
CUDA_HOME / CUDA_PATH      the CUDA toolkit to use (default: found from nvcc, /usr/local/cuda).
TORCH_CUDA_ARCH_LIST       GPU architectures (default "8.0;8.6;9.0+PTX": Ampere and Hopper,
                           PTX so newer GPUs JIT-compile instead of failing).
NVCC_FLAGS                 extra flags appended to every nvcc call.
RECON_FAST_NATIVE=1        tune every CPU file for the build machine (-march=native). Off by
                           default: the CPU kernels carry baseline, AVX2 and AVX-512 copies and
                           pick one at run time, so a default build runs on any CPU of its
                           architecture (a native build may die with an illegal instruction on
                           another machine).
MAX_JOBS                   parallel compile jobs (default: the number of CPU cores).
"""

import glob
import os
import shutil
import subprocess
import sys

from setuptools import find_packages, setup

DEFAULT_CUDA_ARCHS = "8.0;8.6;9.0+PTX"
HERE = os.path.dirname(os.path.abspath(__file__))


def _fail(message):
    sys.stderr.write(f"\nrecon_fast build error: {message}\n\n")
    sys.exit(1)


def _flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _is_toolkit(root):
    return bool(root) and os.path.isfile(os.path.join(root, "bin", "nvcc")) and os.path.isfile(
        os.path.join(root, "include", "cuda_runtime.h"))


def _toolkit_from_nvcc_on_path():
    """The toolkit behind `nvcc` on PATH, also when `nvcc` is a wrapper script.

    A wrapper such as /usr/local/bin/nvcc makes torch guess CUDA_HOME=/usr/local, which has
    no libcudart; asking nvcc itself where it lives (`nvcc -v` prints TOP=...) is reliable.
    """
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    candidate = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    if _is_toolkit(candidate):
        return candidate
    try:
        out = subprocess.run([nvcc, "-v", "--version"], capture_output=True, text=True, timeout=60)
        for line in (out.stdout + out.stderr).splitlines():
            if line.startswith("#$ TOP="):
                top = os.path.realpath(line.split("=", 1)[1].strip())
                top = os.path.dirname(top) if os.path.basename(top) == "bin" else top
                if _is_toolkit(top):
                    return top
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def find_cuda_toolkit():
    for var in ("CUDA_HOME", "CUDA_PATH"):
        root = os.environ.get(var)
        if root:
            if not _is_toolkit(root):
                _fail(f"{var}={root} is not a CUDA toolkit (no bin/nvcc or include/cuda_runtime.h).")
            return root
    found = _toolkit_from_nvcc_on_path()
    if found:
        return found
    for root in ["/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*"), reverse=True):
        if _is_toolkit(root):
            return root
    return None


def _import_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        _fail("PyTorch is not installed. Install it first (pip install -r requirements.txt), then "
              "build with `pip install --no-build-isolation -e .` so the extension is compiled "
              "against that torch.")
    return torch


def _check_compiler():
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        _fail(f"no C++ compiler found ({cxx!r} is not on PATH). Install g++ (e.g. apt-get install g++).")


def _cuda_plan(torch):
    """Return the toolkit root to build CUDA with, or None for a CPU-only build."""
    if _flag("RECON_FAST_FORCE_CPU"):
        print("recon_fast: RECON_FAST_FORCE_CPU=1, building the CPU kernels only")
        return None
    reason = None
    root = None
    if torch.version.cuda is None:
        reason = "the installed torch is a CPU-only build"
    else:
        root = find_cuda_toolkit()
        if root is None:
            reason = "no CUDA toolkit found (set CUDA_HOME, or put nvcc on PATH)"
    if reason:
        if _flag("RECON_FAST_FORCE_CUDA"):
            _fail(f"RECON_FAST_FORCE_CUDA=1 but {reason}.")
        print(f"recon_fast: building without CUDA kernels: {reason}")
        return None
    return root


def _cxx_flags():
    flags = ["-O3", "-fopenmp", "-ffp-contract=off", "-fno-math-errno"]
    # -ffp-contract=off keeps every multiply and add separately rounded, so distances are bitwise
    # the same as the plain-PyTorch reference and index ties resolve the same way.
    if _flag("RECON_FAST_NATIVE"):
        flags += ["-march=native", "-DRECON_FAST_NATIVE=1"]
    return flags


def _nvcc_flags():
    flags = ["-O3", "-fmad=false", "-lineinfo",
             "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
             "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
             "--expt-relaxed-constexpr"]
    # -fmad=false for the same reason as -ffp-contract=off on the host: identical rounding to the
    # reference, so FPS/kNN indices agree even on near-ties.
    flags += os.environ.get("NVCC_FLAGS", "").split()
    return flags


def build_extensions():
    if _flag("RECON_FAST_NO_EXTENSION"):
        return [], {}
    torch = _import_torch()
    _check_compiler()
    cuda_root = _cuda_plan(torch)
    if cuda_root:
        # torch.utils.cpp_extension reads CUDA_HOME when it is imported: set it first.
        os.environ["CUDA_HOME"] = cuda_root
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCHS)
        print(f"recon_fast: CUDA kernels for archs {os.environ['TORCH_CUDA_ARCH_LIST']} "
              f"with the toolkit at {cuda_root}")
    from torch.utils import cpp_extension

    os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 1))
    cpp_sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/*/*.cpp"))
    cuda_sources = sorted(glob.glob("csrc/*/*.cu")) if cuda_root else []
    include_dirs = [os.path.join(HERE, "csrc")]
    define_macros = [("RECON_FAST_WITH_CUDA", "1")] if cuda_root else []
    if cuda_root:
        # Headers such as cuBLAS that some toolkits lack come with torch's CUDA wheels.
        include_dirs += glob.glob(os.path.join(os.path.dirname(torch.__file__), "..", "nvidia", "cu*",
                                               "include"))
    extension_cls = cpp_extension.CUDAExtension if cuda_root else cpp_extension.CppExtension
    ext = extension_cls(
        name="recon_fast._C",
        sources=cpp_sources + cuda_sources,
        include_dirs=include_dirs,
        define_macros=define_macros,
        extra_compile_args={"cxx": _cxx_flags(), "nvcc": _nvcc_flags()},
        extra_link_args=["-fopenmp"],
    )
    build_ext = cpp_extension.BuildExtension.with_options(use_ninja=True)
    return [ext], {"build_ext": build_ext}


ext_modules, cmdclass = build_extensions()

setup(
    packages=find_packages(include=["recon_fast", "recon_fast.*"]),
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
