// Compiles a SIMD kernel body once per CPU capability, in one translation unit.
//
//   #define RECON_FAST_SIMD_BODY "fps/fps_cpu_simd.h"
//   #include "common/cpu_multiversion.h"
//
// defines the body's functions in recon_fast::baseline, and on x86-64 also in recon_fast::avx2
// and recon_fast::avx512, each compiled for that instruction set (GCC's target pragma) with
// vectors of its width (RECON_FAST_SIMD_BYTES); RECON_FAST_CPU_DISPATCH calls the one in use.
//
// Why a pragma and not per-file -mavx2 flags: every header outside the body (the C++ library,
// ATen) is parsed before the pragma, so its inline functions and templates stay baseline code.
// With per-file flags the AVX-512 file's copy of, say, std::vector<float>::assign could be the
// one the linker keeps for the whole library, and the package would die with an illegal
// instruction on an AVX2 machine. Inside the body only namespaced code gets the wider target.
//
// Include every external header a body needs before this file; the body itself includes only
// common/cpu_simd.h and project headers made to be included once per capability.
// No include guard: a kernel file includes it once, and each expansion defines its own namespace.

#ifndef RECON_FAST_SIMD_BODY
#error "define RECON_FAST_SIMD_BODY (the kernel body to compile per capability) first"
#endif

#include "common/cpu_dispatch.h"

#if defined(RECON_FAST_MULTIVERSION)

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,bmi,bmi2,popcnt")
#define CPU_CAPABILITY avx512
#define RECON_FAST_SIMD_BYTES 64
#include RECON_FAST_SIMD_BODY
#undef CPU_CAPABILITY
#undef RECON_FAST_SIMD_BYTES
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,bmi,bmi2,popcnt")
#define CPU_CAPABILITY avx2
#define RECON_FAST_SIMD_BYTES 32
#include RECON_FAST_SIMD_BODY
#undef CPU_CAPABILITY
#undef RECON_FAST_SIMD_BYTES
#pragma GCC pop_options

#endif  // RECON_FAST_MULTIVERSION

// Baseline: SSE2 on x86-64, NEON on AArch64 (both 16-byte registers).
#define CPU_CAPABILITY baseline
#define RECON_FAST_SIMD_BYTES 16
#include RECON_FAST_SIMD_BODY
#undef CPU_CAPABILITY
#undef RECON_FAST_SIMD_BYTES

#undef RECON_FAST_SIMD_BODY
