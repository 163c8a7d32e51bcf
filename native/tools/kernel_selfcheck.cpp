// Stand-alone self-check of every kernel entry of every SIMD level this CPU supports against a
// double-precision reference (the int8 dot product exactly, against int64 sums), and of every
// popcount level against bit counting (no Python needed). Its job is the paths the pytest suite
// cannot reach on x86 CI: cross-compiled for aarch64 and run under qemu-user it exercises NEON
// (native/tools/check_neon_qemu.sh, make neon-check, part of make test).
// Exit status 0 = all entries within tolerance.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "frameseek/distance.hpp"
#include "frameseek/fingerprint.hpp"
#include "frameseek/half.hpp"

using namespace frameseek;

namespace {

int failures = 0;

void expect_close(double got, double want, double scale, std::size_t d, const char* what, const std::string& level) {
  const double tol = 4.0 * std::sqrt(double(d)) * 1.1920929e-7 * scale + 1e-30;
  if (!(std::fabs(got - want) <= tol)) {
    ++failures;
    if (failures < 20)
      std::printf("FAIL %s %s d=%zu got=%.9g want=%.9g tol=%.3g\n", level.c_str(), what, d, got, want, tol);
  }
}

// Every popcount level against bit-by-bit counting, at lengths around each path's vector width,
// past the 16-bit accumulator flushes of NEON and AVX2, and from odd word offsets.
void check_popcount(std::mt19937& rng) {
  std::uniform_int_distribution<std::uint32_t> word;
  const std::size_t lengths[] = {0, 1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 127, 128, 1000, 8193, 20000, 40000};
  for (SimdLevel level : fingerprint::popcount_supported_levels()) {
    const fingerprint::PopcountKernels& k = fingerprint::popcount_kernels_for(level);
    const std::string name = simd_level_name(level);
    for (std::size_t n : lengths) {
      std::vector<std::uint32_t> a(n + 1), b(n + 1), out(n);
      for (std::size_t i = 0; i <= n; ++i) {
        a[i] = word(rng);
        // every fifth word differs in all 32 bits; at the longest length every word does, the most
        // an accumulator can gain per step, so a late flush shows
        b[i] = (i % 5 && n < 40000) ? word(rng) : ~a[i];
      }
      k.xor_popcount(a.data() + 1, b.data() + 1, n, out.data());
      std::uint64_t want_total = 0;
      for (std::size_t i = 0; i < n; ++i) {
        std::uint32_t want = 0;
        for (std::uint32_t x = a[i + 1] ^ b[i + 1]; x; x >>= 1) want += x & 1u;
        want_total += want;
        if (out[i] != want && ++failures < 20)
          std::printf("FAIL %s xor_popcount n=%zu word %zu got=%u want=%u\n", name.c_str(), n, i, out[i], want);
      }
      const std::uint64_t got_total = k.hamming(a.data() + 1, b.data() + 1, n);
      if (got_total != want_total && ++failures < 20)
        std::printf("FAIL %s hamming n=%zu got=%llu want=%llu\n", name.c_str(), n,
                    static_cast<unsigned long long>(got_total), static_cast<unsigned long long>(want_total));
    }
    // hamming_blocks: partial last blocks, and words past the byte accumulators' flush (31)
    for (const std::size_t n_rows : {1, 15, 16, 17, 40}) {
      for (const std::size_t words : {1, 16, 31, 32, 70}) {
        std::vector<std::uint32_t> q(words), rows(n_rows * words), blocks(fingerprint::block_words(n_rows, words)),
            out(n_rows);
        for (auto& v : q) v = word(rng);
        for (std::size_t i = 0; i < rows.size(); ++i) rows[i] = i % 7 ? word(rng) : ~q[i % words];
        for (std::size_t r = 0; r < n_rows; ++r) fingerprint::set_block_row(blocks.data(), r, &rows[r * words], words);
        k.hamming_blocks(q.data(), blocks.data(), n_rows, words, out.data());
        for (std::size_t r = 0; r < n_rows; ++r) {
          std::uint32_t want = 0;
          for (std::size_t w = 0; w < words; ++w)
            for (std::uint32_t x = q[w] ^ rows[r * words + w]; x; x >>= 1) want += x & 1u;
          if (out[r] != want && ++failures < 20)
            std::printf("FAIL %s hamming_blocks rows=%zu words=%zu row %zu got=%u want=%u\n", name.c_str(), n_rows,
                        words, r, out[r], want);
        }
      }
    }
    std::printf("popcount %s: checked\n", name.c_str());
  }
}

// Every level's int8 dot product (the int8 walk's distances) exactly against int64 sums, with codes
// at the extremes of [-127, 127], at lengths around each path's width and from odd offsets.
void check_dot_i8(const Kernels& k, const std::string& name, std::mt19937& rng) {
  std::uniform_int_distribution<int> code(-127, 127);
  const std::size_t lengths[] = {1, 3, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 512, 513, 1000};
  for (const std::size_t d : lengths) {
    for (int trial = 0; trial < 4; ++trial) {
      std::vector<std::int8_t> buf(1 + 2 * d);
      for (auto& v : buf) v = static_cast<std::int8_t>(trial == 0 ? 127 : trial == 1 ? -127 : code(rng));
      const std::int8_t* a = buf.data() + 1;  // odd offsets: unaligned loads
      const std::int8_t* b = a + d;
      std::int64_t want = 0;
      for (std::size_t t = 0; t < d; ++t) want += std::int64_t{a[t]} * std::int64_t{b[t]};
      const std::int32_t got = k.dot_i8(a, b, d);
      if (got != want) {
        ++failures;
        if (failures < 20)
          std::printf("FAIL %s dot_i8 (%s) d=%zu got=%d want=%lld\n", name.c_str(), k.dot_i8_path, d, got,
                      static_cast<long long>(want));
      }
    }
  }
}

}  // namespace

int main() {
  std::mt19937 rng(1234);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const std::size_t dims[] = {1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 127, 128, 513, 1024};
  for (SimdLevel level : supported_levels()) {
    const Kernels& k = kernels_for(level);
    const std::string name = simd_level_name(level);
    for (std::size_t d : dims) {
      const std::size_t nq = 7, n = 11, off = 1;  // off: rows start at odd float offsets
      std::vector<float> qbuf(off + nq * d), xbuf(off + n * d);
      std::vector<std::uint16_t> hbuf(off + n * d);
      for (auto& v : qbuf) v = nd(rng);
      for (auto& v : xbuf) v = nd(rng) * 2.0f;
      for (std::size_t i = 0; i < hbuf.size(); ++i) hbuf[i] = float_to_half(xbuf[i]);
      const float* q = qbuf.data() + off;
      const float* x = xbuf.data() + off;
      const std::uint16_t* h = hbuf.data() + off;
      std::vector<float> blk(nq * n), blk_l2(nq * n), hblk(nq * n), hblk_l2(nq * n), many(n), many_l2(n);
      k.dot_block(q, nq, x, n, d, blk.data(), n);
      k.l2sq_block(q, nq, x, n, d, blk_l2.data(), n);
      k.dot_block_f16(q, nq, h, n, d, hblk.data(), n);
      k.l2sq_block_f16(q, nq, h, n, d, hblk_l2.data(), n);
      for (std::size_t i = 0; i < nq; ++i) {
        k.dot_many(q + i * d, x, n, d, many.data());
        k.l2sq_many(q + i * d, x, n, d, many_l2.data());
        for (std::size_t j = 0; j < n; ++j) {
          double dot = 0, absdot = 0, l2 = 0, hdot = 0, habs = 0, hl2 = 0;
          for (std::size_t t = 0; t < d; ++t) {
            const double a = q[i * d + t], b = x[j * d + t], hb = half_to_float(h[j * d + t]);
            dot += a * b;
            absdot += std::fabs(a * b);
            l2 += (a - b) * (a - b);
            hdot += a * hb;
            habs += std::fabs(a * hb);
            hl2 += (a - hb) * (a - hb);
          }
          const float* xr = x + j * d;
          expect_close(k.dot(q + i * d, xr, d), dot, absdot, d, "dot", name);
          expect_close(k.l2sq(q + i * d, xr, d), l2, l2, d, "l2sq", name);
          expect_close(many[j], dot, absdot, d, "dot_many", name);
          expect_close(many_l2[j], l2, l2, d, "l2sq_many", name);
          expect_close(blk[i * n + j], dot, absdot, d, "dot_block", name);
          expect_close(blk_l2[i * n + j], l2, l2, d, "l2sq_block", name);
          expect_close(k.dot_f16(q + i * d, h + j * d, d), hdot, habs, d, "dot_f16", name);
          expect_close(k.l2sq_f16(q + i * d, h + j * d, d), hl2, hl2, d, "l2sq_f16", name);
          expect_close(hblk[i * n + j], hdot, habs, d, "dot_block_f16", name);
          expect_close(hblk_l2[i * n + j], hl2, hl2, d, "l2sq_block_f16", name);
        }
      }
    }
    check_dot_i8(k, name, rng);
    std::printf("%s: checked (int8 dot: %s)\n", name.c_str(), k.dot_i8_path);
  }
  check_popcount(rng);
  std::printf("%s (%d failures)\n", failures ? "FAILED" : "OK", failures);
  return failures ? 1 : 0;
}
