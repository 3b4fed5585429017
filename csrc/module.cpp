// The Python module recon_fast._C. Importing it runs the TORCH_LIBRARY registrations of every
// source linked into it; the module itself only reports how it was built.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>

#include "common/cpu_dispatch.h"

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
  // The SIMD path the CPU kernels use now, and every path this CPU could use.
  info["cpu_capability"] = recon_fast::cpu_capability_name(recon_fast::active_cpu_capability());
  info["cpu_capabilities"] = recon_fast::supported_cpu_capabilities();
  info["cpu_native"] = recon_fast::built_for_native_cpu();
  return info;
}

static void set_cpu_capability(const std::string& name) {
  try {
    recon_fast::set_cpu_capability(name);
  } catch (const std::invalid_argument& err) {
    throw py::value_error(err.what());
  }
}

PYBIND11_MODULE(_C, m) {
  m.doc() = "recon_fast compiled point ops (registered as torch.ops.recon_fast.*)";
  m.def("build_info", &build_info, "How this extension was built.");
  m.def("cpu_capability", [] {
    return recon_fast::cpu_capability_name(recon_fast::active_cpu_capability());
  }, "The SIMD path the CPU kernels use now: baseline, avx2 or avx512.");
  m.def("set_cpu_capability", &set_cpu_capability, py::arg("name"),
        "Use the CPU kernels compiled for `name` (auto, baseline, avx2, avx512).");
}
