// Detection and selection of the CPU capability (see cpu_dispatch.h).
#include "common/cpu_dispatch.h"

#include <atomic>
#include <cstdlib>
#include <stdexcept>

namespace recon_fast {
namespace {

CpuCapability best_supported() {
#if defined(RECON_FAST_MULTIVERSION)
  // __builtin_cpu_supports also checks that the OS saves the wide registers (XCR0), so a CPU
  // whose kernel or hypervisor disabled AVX-512 state reports it as missing.
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2") &&
                    __builtin_cpu_supports("popcnt");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
                      __builtin_cpu_supports("avx512vl");
  if (avx512) return CpuCapability::kAvx512;
  if (avx2) return CpuCapability::kAvx2;
#endif
  return CpuCapability::kBaseline;
}

bool parse(const std::string& name, CpuCapability* out) {
  if (name == "baseline" || name == "default") {
    *out = CpuCapability::kBaseline;
  } else if (name == "avx2") {
    *out = CpuCapability::kAvx2;
  } else if (name == "avx512") {
    *out = CpuCapability::kAvx512;
  } else if (name == "auto" || name.empty()) {
    *out = best_supported();
  } else {
    return false;
  }
  return true;
}

std::string supported_list() {
  std::string s;
  for (const auto& name : supported_cpu_capabilities()) s += (s.empty() ? "" : ", ") + name;
  return s;
}

CpuCapability checked(const std::string& name, const char* source) {
  CpuCapability requested;
  if (!parse(name, &requested)) {
    throw std::invalid_argument(std::string(source) + ": unknown CPU capability '" + name +
                                "' (expected auto, baseline, avx2 or avx512)");
  }
  if (static_cast<int>(requested) > static_cast<int>(best_supported())) {
    throw std::invalid_argument(std::string(source) + ": this CPU does not support '" + name +
                                "' (supported: " + supported_list() + ")");
  }
  return requested;
}

// The environment is read once, at the first kernel call or query. A bad value must not abort
// the process from a static initialiser: it falls back to the best path here, and the Python
// package checks the variable itself at import and raises a ValueError naming it.
std::atomic<int>& active() {
  static std::atomic<int> capability([] {
    const char* env = std::getenv("RECON_FAST_CPU_CAPABILITY");
    try {
      return static_cast<int>(checked(env ? env : "auto", "RECON_FAST_CPU_CAPABILITY"));
    } catch (const std::invalid_argument&) {
      return static_cast<int>(best_supported());
    }
  }());
  return capability;
}

}  // namespace

CpuCapability active_cpu_capability() {
  return static_cast<CpuCapability>(active().load(std::memory_order_relaxed));
}

std::string cpu_capability_name(CpuCapability capability) {
  switch (capability) {
    case CpuCapability::kAvx512:
      return "avx512";
    case CpuCapability::kAvx2:
      return "avx2";
    default:
      return "baseline";
  }
}

std::vector<std::string> supported_cpu_capabilities() {
  std::vector<std::string> names;
  for (int c = 0; c <= static_cast<int>(best_supported()); ++c) {
    names.push_back(cpu_capability_name(static_cast<CpuCapability>(c)));
  }
  return names;
}

void set_cpu_capability(const std::string& name) {
  active().store(static_cast<int>(checked(name, "cpu capability")), std::memory_order_relaxed);
}

bool built_for_native_cpu() {
#if defined(RECON_FAST_NATIVE)
  return true;
#else
  return false;
#endif
}

}  // namespace recon_fast
