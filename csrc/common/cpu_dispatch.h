// Run-time choice of the CPU kernels' instruction set.
//
// Every SIMD kernel is compiled once per capability into the same binary (see
// cpu_multiversion.h), so one build runs on any CPU of its architecture and still uses the widest
// vectors the machine has. The capability in use is the best one the CPU (and the OS) supports,
// unless RECON_FAST_CPU_CAPABILITY or set_cpu_capability() asks for another one. Every path
// computes the same values bit for bit: vectors change how many points are processed at once,
// never the order of the arithmetic on one point.
#pragma once

#include <string>
#include <vector>

// x86-64 builds with GCC carry AVX2 and AVX-512 copies of every SIMD kernel; other targets (ARM:
// NEON is its baseline) and compilers build the baseline path only.
#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__) && !defined(__clang__)
#define RECON_FAST_MULTIVERSION 1
#endif

namespace recon_fast {

enum class CpuCapability : int { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };

// The capability the kernels use now.
CpuCapability active_cpu_capability();
std::string cpu_capability_name(CpuCapability capability);
// Capabilities this CPU supports, narrowest first ("baseline" always).
std::vector<std::string> supported_cpu_capabilities();
// Chooses the kernels' capability by name ("baseline", "avx2", "avx512", or "auto" for the best
// supported one). Throws std::invalid_argument naming the capability when it is unknown or the
// CPU lacks it.
void set_cpu_capability(const std::string& name);
// Whether the build tuned every file for the build machine (-march=native, opt-in): then even the
// baseline path may use that machine's instructions.
bool built_for_native_cpu();

}  // namespace recon_fast

// Calls the kernel `fn` compiled for the active capability: recon_fast::<capability>::fn(...).
#if defined(RECON_FAST_MULTIVERSION)
#define RECON_FAST_CPU_DISPATCH(fn, ...)                                   \
  do {                                                                     \
    switch (::recon_fast::active_cpu_capability()) {                       \
      case ::recon_fast::CpuCapability::kAvx512:                           \
        ::recon_fast::avx512::fn(__VA_ARGS__);                             \
        break;                                                             \
      case ::recon_fast::CpuCapability::kAvx2:                             \
        ::recon_fast::avx2::fn(__VA_ARGS__);                               \
        break;                                                             \
      default:                                                             \
        ::recon_fast::baseline::fn(__VA_ARGS__);                           \
    }                                                                      \
  } while (0)
#else
#define RECON_FAST_CPU_DISPATCH(fn, ...) ::recon_fast::baseline::fn(__VA_ARGS__)
#endif
