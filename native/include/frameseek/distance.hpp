// Distance kernels and their runtime dispatch.
//
// Every SIMD path lives in its own translation unit compiled with its own -m flags; dispatch.cpp
// asks the CPU once (and honours FRAMESEEK_SIMD to force a lower path for testing) and hands out a
// table of function pointers. Code outside the kernels only ever calls through kernels().
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace frameseek {

enum class Metric { L2 = 0, IP = 1 };  // L2 = squared Euclidean; IP = inner product (cosine on unit vectors)

enum class SimdLevel { Scalar = 0, Neon = 1, Avx2 = 2, Avx512 = 3 };

struct Kernels {
  SimdLevel level;
  // one pair of vectors
  float (*l2sq)(const float* a, const float* b, std::size_t d);
  float (*dot)(const float* a, const float* b, std::size_t d);
  // one query against n row-major vectors: out[i] = dist(q, x + i*d)
  void (*l2sq_many)(const float* q, const float* x, std::size_t n, std::size_t d, float* out);
  void (*dot_many)(const float* q, const float* x, std::size_t n, std::size_t d, float* out);
  // nq row-major queries against n row-major vectors (both with row stride d):
  //   out[i * ldo + j] = dist(q + i*d, x + j*d)   for i < nq, j < n.
  // Register-tiled: a few vectors are held in registers and reused across a group of queries, so
  // a caller that keeps a block of queries in cache streams every vector from memory only once
  // per query block (the "many queries x many vectors" path; see FlatIndex for the cache blocking).
  // dot_block returns raw inner products; l2sq_block squared distances computed directly from the
  // differences (not via |q|^2 - 2 q.x + |x|^2, which cancels badly for near-duplicate frames).
  void (*l2sq_block)(const float* q, std::size_t nq, const float* x, std::size_t n, std::size_t d, float* out,
                     std::size_t ldo);
  void (*dot_block)(const float* q, std::size_t nq, const float* x, std::size_t n, std::size_t d, float* out,
                    std::size_t ldo);
  // The same with stored vectors in IEEE fp16 (raw binary16 bits): float32 queries, float32
  // accumulation, half the bytes per stored vector, so memory-bound scans run about twice as
  // fast; the stored values carry fp16 rounding (relative ~5e-4), the arithmetic does not add any.
  float (*l2sq_f16)(const float* q, const std::uint16_t* x, std::size_t d);
  float (*dot_f16)(const float* q, const std::uint16_t* x, std::size_t d);
  void (*l2sq_block_f16)(const float* q, std::size_t nq, const std::uint16_t* x, std::size_t n, std::size_t d,
                         float* out, std::size_t ldo);
  void (*dot_block_f16)(const float* q, std::size_t nq, const std::uint16_t* x, std::size_t n, std::size_t d,
                        float* out, std::size_t ldo);
  // Inner product of two int8 code vectors, exact in int32 (HnswIndex's int8 walk). Codes must lie
  // in [-127, 127]: the x86 paths multiply |a| (as u8) by sign(a)*b, in 16-bit pairs without VNNI,
  // which cannot saturate then (2 * 127 * 127 < 2^15) but could with -128 (and -(-128) is -128).
  std::int32_t (*dot_i8)(const std::int8_t* a, const std::int8_t* b, std::size_t d);
  // The instructions dot_i8 runs on ("avx512 vnni", "avx2 maddubs", ...): within one level it is
  // chosen by CPU feature (kernel_simd_levels reports it).
  const char* dot_i8_path;
};

// Table for the selected level (chosen at first call, then fixed for the process).
const Kernels& kernels();
// Table for one specific level; throws std::runtime_error if not compiled in or CPU lacks it.
const Kernels& kernels_for(SimdLevel level);

SimdLevel simd_level();
// Table for the one-query-against-many-rows scan (FlatIndex with a single query). That scan is
// bound by memory bandwidth, not arithmetic, and which stream keeps up with DRAM depends on the
// core: on AMD Zen 4 (512-bit ops double-pumped) the AVX-512 stream took 1.14x the pure-read time
// against AVX2's 1.00x, while on Intel Sapphire Rapids the AVX-512 stream reached 1.03x single-
// thread BLAS sgemv against AVX2's 0.89x. So when the selected level is AVX-512 the rule is by
// CPU vendor (stream_choice_for): GenuineIntel scans with AVX-512, every other vendor with AVX2;
// below AVX-512 it is kernels(). FRAMESEEK_SIMD caps it like every other table;
// FRAMESEEK_SCAN_SIMD=<level> (at most the selected level) overrides it for A/B runs and tests.
struct StreamChoice {
  SimdLevel level;
  std::string why;  // for reports: the rule that chose it
};
StreamChoice stream_choice_for(SimdLevel selected, const std::string& cpu_vendor);  // the rule alone
const StreamChoice& stream_choice();  // this process's (the rule, or FRAMESEEK_SCAN_SIMD)
std::string cpu_vendor();             // CPUID's vendor string ("GenuineIntel", "AuthenticAMD"); "" off x86
const Kernels& stream_kernels();
SimdLevel stream_simd_level();
std::string simd_level_name(SimdLevel level);
SimdLevel parse_simd_level(const std::string& name);  // throws std::invalid_argument
std::vector<SimdLevel> compiled_levels();             // built into this binary
std::vector<SimdLevel> supported_levels();            // compiled and supported by this CPU

namespace detail {
// Per-translation-unit tables; the ones not built for this architecture are absent.
const Kernels& scalar_kernels();
#if defined(FRAMESEEK_HAVE_X86)
const Kernels& avx2_kernels();
const Kernels& avx512_kernels();
#endif
#if defined(FRAMESEEK_HAVE_NEON)
const Kernels& neon_kernels();
#endif
}  // namespace detail

}  // namespace frameseek
