// The Python module recon_fast._C. Importing it runs the TORCH_LIBRARY registrations of every
// source linked into it; the module itself only reports how it was built.
#include <pybind11/pybind11.h>

#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace py = pybind11;

static py::dict build_info() {
  py::dict info;
#ifdef RECON_FAST_WITH_CUDA
  info["cuda"] = true;
#else
  info["cuda"] = false;
#endif
#ifdef _OPENMP
  info["openmp"] = true;
#else
  info["openmp"] = false;
#endif
#if defined(__AVX512F__)
  info["cpu_simd"] = "avx512";
#elif defined(__AVX2__)
  info["cpu_simd"] = "avx2";
#else
  info["cpu_simd"] = "baseline";
#endif
  return info;
}

PYBIND11_MODULE(_C, m) {
  m.doc() = "recon_fast compiled point ops (registered as torch.ops.recon_fast.*)";
  m.def("build_info", &build_info, "How this extension was built.");
}
