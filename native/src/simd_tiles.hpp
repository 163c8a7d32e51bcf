// ISA-generic register-tiled distance kernels (internal to native/src).
//
// Each SIMD translation unit (distance_avx2.cpp, distance_avx512.cpp, distance_neon.cpp) defines a
// traits struct S in an anonymous namespace and includes this header. Because S has internal
// linkage, every template instantiated here also has internal linkage, so code compiled with
// -mavx512f can never be merged by the linker with the AVX2 copy (the classic ODR trap of
// "same inline function, different -m flags").
//
// Traits contract (W = lanes per register):
//   using V = <register type>;  static constexpr std::size_t W;
//   V zero(); V load(const float*); V load_tail(const float*, std::size_t rem /* 0 < rem < W */);
//   V load(const std::uint16_t*); V load_tail(const std::uint16_t*, std::size_t)  (fp16 -> fp32);
//   V fma(V a, V b, V acc) /* acc + a*b */; V sub(V a, V b);
//   float reduce(V); void reduce4(V a, V b, V c, V d, float* out4);
// load_tail must not read past p[rem-1] (masked load or copy), and must zero the unused lanes.
#pragma once
#include <cstddef>
#include <cstdint>

namespace frameseek::detail::tiles {

struct DotOp {
  template <class S>
  static inline typename S::V step(typename S::V acc, typename S::V q, typename S::V x) {
    return S::fma(q, x, acc);
  }
};

struct L2Op {
  template <class S>
  static inline typename S::V step(typename S::V acc, typename S::V q, typename S::V x) {
    typename S::V t = S::sub(x, q);
    return S::fma(t, t, acc);
  }
};

// QR queries x XR vectors, fully unrolled (constant trip counts): QR*XR independent accumulator
// chains, XR vector loads and QR query loads per W dimensions.
template <class S, class Op, int QR, int XR, class TX>
inline void tile(const float* q, const TX* x, std::size_t d, float* out, std::size_t ldo) {
  using V = typename S::V;
  V acc[QR][XR];
  for (int i = 0; i < QR; ++i)
    for (int j = 0; j < XR; ++j) acc[i][j] = S::zero();
  std::size_t t = 0;
  for (; t + S::W <= d; t += S::W) {
    V xv[XR];
    for (int j = 0; j < XR; ++j) xv[j] = S::load(x + j * d + t);
    for (int i = 0; i < QR; ++i) {
      V qv = S::load(q + i * d + t);
      for (int j = 0; j < XR; ++j) acc[i][j] = Op::template step<S>(acc[i][j], qv, xv[j]);
    }
  }
  if (t < d) {  // tail shorter than one register: masked/zero-filled loads, zeros add nothing
    const std::size_t rem = d - t;
    V xv[XR];
    for (int j = 0; j < XR; ++j) xv[j] = S::load_tail(x + j * d + t, rem);
    for (int i = 0; i < QR; ++i) {
      V qv = S::load_tail(q + i * d + t, rem);
      for (int j = 0; j < XR; ++j) acc[i][j] = Op::template step<S>(acc[i][j], qv, xv[j]);
    }
  }
  // Horizontal sums, four registers at a time where possible (shares the shuffle work).
  constexpr int N = QR * XR;
  float r[N];
  const V* flat = &acc[0][0];
  int m = 0;
  for (; m + 4 <= N; m += 4) S::reduce4(flat[m], flat[m + 1], flat[m + 2], flat[m + 3], r + m);
  for (; m < N; ++m) r[m] = S::reduce(flat[m]);
  for (int i = 0; i < QR; ++i)
    for (int j = 0; j < XR; ++j) out[i * ldo + j] = r[i * XR + j];
}

// Runtime (qr, xr) <= (QR, XR) picks the matching fully unrolled instantiation for the edges.
template <class S, class Op, int QR, int XR, class TX>
inline void tile_edge(int qr, int xr, const float* q, const TX* x, std::size_t d, float* out, std::size_t ldo) {
  if constexpr (QR > 1) {
    if (qr < QR) return tile_edge<S, Op, QR - 1, XR, TX>(qr, xr, q, x, d, out, ldo);
  }
  if constexpr (XR > 1) {
    if (xr < XR) return tile_edge<S, Op, QR, XR - 1, TX>(qr, xr, q, x, d, out, ldo);
  }
  tile<S, Op, QR, XR, TX>(q, x, d, out, ldo);
}

// out[i*ldo + j] = op(q_i, x_j). Vectors are the outer loop: an XR-row strip of x is loaded from
// memory once and then reused from L1 against every query group, while the queries (the caller
// keeps their block small enough for L2) are re-read from cache.
template <class S, class Op, class TX>
float pair(const float* a, const TX* b, std::size_t d);

template <class S, class Op, int QR, int XR, class TX>
void block(const float* q, std::size_t nq, const TX* x, std::size_t n, std::size_t d, float* out, std::size_t ldo) {
  if (nq == 1) {
    // A single query is a pure memory stream: read x strictly row after row. Interleaving XR
    // rows (separate streams 4*d bytes apart) measured ~1.7x slower here than one sequential
    // stream, because the hardware prefetchers track a single stream far better.
    for (std::size_t j = 0; j < n; ++j) out[j] = pair<S, Op, TX>(q, x + j * d, d);
    return;
  }
  std::size_t j = 0;
  for (; j + XR <= n; j += XR) {
    std::size_t i = 0;
    for (; i + QR <= nq; i += QR) tile<S, Op, QR, XR, TX>(q + i * d, x + j * d, d, out + i * ldo + j, ldo);
    if (i < nq) tile_edge<S, Op, QR, XR, TX>(int(nq - i), XR, q + i * d, x + j * d, d, out + i * ldo + j, ldo);
  }
  if (j < n) {
    for (std::size_t i = 0; i < nq; i += QR) {
      const int qr = int(nq - i < std::size_t(QR) ? nq - i : QR);
      tile_edge<S, Op, QR, XR, TX>(qr, int(n - j), q + i * d, x + j * d, d, out + i * ldo + j, ldo);
    }
  }
}

// One pair (the HNSW hot path): four accumulator chains so the FMA latency is hidden even though
// there is only one vector to reuse nothing against.
template <class S, class Op, class TX>
float pair(const float* a, const TX* b, std::size_t d) {
  using V = typename S::V;
  constexpr std::size_t W = S::W;
  V a0 = S::zero(), a1 = S::zero(), a2 = S::zero(), a3 = S::zero();
  std::size_t t = 0;
  for (; t + 4 * W <= d; t += 4 * W) {
    a0 = Op::template step<S>(a0, S::load(a + t), S::load(b + t));
    a1 = Op::template step<S>(a1, S::load(a + t + W), S::load(b + t + W));
    a2 = Op::template step<S>(a2, S::load(a + t + 2 * W), S::load(b + t + 2 * W));
    a3 = Op::template step<S>(a3, S::load(a + t + 3 * W), S::load(b + t + 3 * W));
  }
  for (; t + W <= d; t += W) a0 = Op::template step<S>(a0, S::load(a + t), S::load(b + t));
  if (t < d) a1 = Op::template step<S>(a1, S::load_tail(a + t, d - t), S::load_tail(b + t, d - t));
  float r[4];
  S::reduce4(a0, a1, a2, a3, r);
  return (r[0] + r[1]) + (r[2] + r[3]);
}

// One query against many vectors: one sequential stream, row after row (see block()).
template <class S, class Op>
void many(const float* q, const float* x, std::size_t n, std::size_t d, float* out) {
  for (std::size_t j = 0; j < n; ++j) out[j] = pair<S, Op, float>(q, x + j * d, d);
}

}  // namespace frameseek::detail::tiles
