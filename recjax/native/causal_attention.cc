// HSTU's causal pointwise attention, forward and backward, for XLA:CPU (XLA FFI custom calls).
//
// Rows n = 0..N-1 (batch and heads folded, n = b * H + h), each right-padded to width L with
// len_n = lengths[n] real tokens. For i, j < len_n, j <= i:
//   s_ij = alpha * <q_i, k_j> + pos_w[clip(P - 1 + j - i, 0, 2P - 2)] + ts_w[bucket[b, j, i]]
//   o_i  = scale * sum_j silu(s_ij) v_j                      (o = 0 at padding queries)
// With T = num_targets > 0 the last T real tokens of a row (h = len_n - T on) are targets: a target
// query sees keys j < h and itself, no other target (HSTU's ranking mask, pallas_kernels/mask.py).
// The backward, for the cotangent do (recomputing s, nothing of size L x L is kept):
//   ds_ij = scale * <do_i, v_j> * silu'(s_ij)
//   dq_i = alpha sum_j ds_ij k_j,  dk_j = alpha sum_i ds_ij q_i,  dv_j = scale sum_i silu(s_ij) do_i
//   dpos[P - 1 + j - i] += ds_ij,  dts[bucket[b, j, i]] += ds_ij
// The pure-JAX paths (recjax/layers/attention.py: dense, and tiled_attention.py) are the
// reference; tests check values and gradients against them.
//
// Why: XLA:CPU computes this as padded [rows, tile, keys] score blocks: a batched matmul, then the
// bias, SiLU and mask as separate passes through memory, and the same again in the backward. Here a
// block of W queries is one vector: its scores against each key are accumulated in registers, the
// bias, SiLU and mask applied in place, and only the causal prefix of the real tokens is touched
// (scripts/bench_train.py, rows hstu vs hstu_xla_attention: 145 -> 102 ms per ML-1M step).
//
// Rows are spread over threads longest first (a row costs ~len^2). The bias gradients are summed
// per row (the position bias by query-key distance, [N, 2 lp + W + 1]; the time bias [N, nb]) and
// then over rows in row order, so every output is bit-identical for any thread count.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// exp(x) for x <= 0 after clamping: 2^k * p(r), r = x - k ln2 in [-ln2/2, ln2/2], p the degree-7
// Taylor polynomial (relative error < 1e-8, below float's rounding). Plain arithmetic, so the
// loops that call it vectorise (glibc's expf would not).
inline float ExpNeg(float x) {
  x = std::max(x, -87.0f);
  const float k = std::nearbyint(x * 1.44269504088896341f);
  const float r = (x - k * 0.693145751953125f) - k * 1.42860682030941723e-6f;
  float p = 1.f / 5040.f;
  p = p * r + 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  int32_t bits;
  std::memcpy(&bits, &p, sizeof bits);
  bits += int32_t(k) << 23;
  float out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}

// sigmoid(s) = 1 / (1 + exp(-s)), from exp(-|s|) so that it never overflows.
inline float Sigmoid(float s) {
  const float e = ExpNeg(-std::fabs(s));
  const float inv = 1.f / (1.f + e);
  return s >= 0.f ? inv : e * inv;
}

// Vectors of W floats (GCC/Clang vector extensions: AVX-512, AVX2 or SSE as the CPU has).
#if defined(__AVX512F__)
constexpr int64_t W = 16;
#else
constexpr int64_t W = 8;
#endif
typedef float vf __attribute__((vector_size(W * sizeof(float))));

inline vf Load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void Store(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
inline vf Splat(float x) { return vf{} + x; }
inline int64_t RoundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

struct Problem {
  const float* q;           // [N, L, Dqk]
  const float* k;           // [N, L, Dqk]
  const float* v;           // [N, L, Dv]
  const int32_t* lengths;   // [N]
  const float* pos_w;       // [2P - 1] or null
  const float* ts_w;        // [nb] or null
  const uint8_t* buckets;   // [N / H, L, L] (key-major: buckets[b, j, i]) or null
  int64_t n, l, dqk, dv, heads, pos_n, nb;
  float alpha, scale;
  int64_t targets;   // the last `targets` real tokens of a row see the others' history and themselves only
  // Derived: padded sizes and the position bias by query-key distance.
  int64_t lp = 0, dqp = 0, dvp = 0;
  std::vector<float> pos_by_delta;   // [2 lp + 1]: pos_w[clip(P - 1 - delta)] at delta + lp, delta = i - j
};

void Derive(Problem& p) {
  p.lp = RoundUp(p.l, W);
  p.dqp = RoundUp(p.dqk, W);
  p.dvp = RoundUp(p.dv, W);
  if (p.pos_w != nullptr) {
    const int64_t center = (p.pos_n + 1) / 2 - 1, last = p.pos_n - 1;
    p.pos_by_delta.resize(2 * p.lp + W + 1);
    for (int64_t m = 0; m < int64_t(p.pos_by_delta.size()); ++m) {
      p.pos_by_delta[m] = p.pos_w[std::clamp<int64_t>(center - (m - p.lp), 0, last)];
    }
  }
}

int64_t LengthOf(const Problem& p, int64_t row) {
  return std::clamp<int64_t>(p.lengths[row], 0, p.l);
}

// Rows longest first, so the dynamic queue ends on short rows.
std::vector<int64_t> RowOrder(const Problem& p) {
  std::vector<int64_t> order(p.n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return LengthOf(p, a) > LengthOf(p, b); });
  return order;
}

template <typename F>
void ForEachRow(const Problem& p, int64_t num_threads, const F& row_fn) {
  const std::vector<int64_t> order = RowOrder(p);
  std::atomic<int64_t> next{0};
  const auto worker = [&](int64_t thread) {
    for (int64_t i = next.fetch_add(1); i < p.n; i = next.fetch_add(1)) row_fn(thread, order[i]);
  };
  const int64_t threads = std::max<int64_t>(1, std::min(num_threads, p.n));
  std::vector<std::thread> pool;
  pool.reserve(threads - 1);
  for (int64_t t = 1; t < threads; ++t) pool.emplace_back(worker, t);
  worker(0);
  for (auto& th : pool) th.join();
}

// One thread's buffers, sized for the widest row. Layouts (lp = L rounded up to W):
//   qt [Dqk, lp], dot [Dv, lp]: queries / output cotangents transposed (a vector = W queries)
//   kp [L, dqp], vp [L, dvp], qp [L, dqp], dop [L, dvp]: rows zero-padded to whole vectors
//   w, ds [lp, W]: one query block's weights and score gradients, key-major
//   dkp [L, dqp], dvpad [L, dvp]: key gradients accumulated over query blocks
struct Scratch {
  std::vector<float> qt, dot, kp, vp, qp, dop, w, ds, dkp, dvpad;
  void Size(const Problem& p, bool backward) {
    qt.assign(p.dqk * p.lp, 0.f);
    kp.assign(p.l * p.dqp, 0.f);
    vp.assign(p.l * p.dvp, 0.f);
    w.assign(p.lp * W, 0.f);
    if (backward) {
      dot.assign(p.dv * p.lp, 0.f);
      qp.assign(p.l * p.dqp, 0.f);
      dop.assign(p.l * p.dvp, 0.f);
      ds.assign(p.lp * W, 0.f);
      dkp.assign(p.l * p.dqp, 0.f);
      dvpad.assign(p.l * p.dvp, 0.f);
    }
  }
};

// x [len, d] rows -> xt [d, lp] (columns >= len zero).
void TransposeIn(const float* x, int64_t len, int64_t d, int64_t lp, float* xt) {
  for (int64_t c = 0; c < d; ++c) {
    float* dst = xt + c * lp;
    for (int64_t j = 0; j < len; ++j) dst[j] = x[j * d + c];
    std::fill(dst + len, dst + lp, 0.f);
  }
}

// x [len, d] rows -> xp [len, dp] rows (padding columns zero).
void PadRows(const float* x, int64_t len, int64_t d, int64_t dp, float* xp) {
  for (int64_t j = 0; j < len; ++j) {
    std::memcpy(xp + j * dp, x + j * d, d * sizeof(float));
    std::fill(xp + j * dp + d, xp + (j + 1) * dp, 0.f);
  }
}

// Scores of keys j0 .. j0 + JB - 1 against the W queries of block i0 (a vector per key):
//   acc[jb] = <q_{i0..i0+W}, k_{j0+jb}> (and, with Dot2, <do_i, v_j> in acc2).
template <int JB, bool Dot2>
inline void ScoreBlock(const float* qt, const float* dot, const float* k, const float* v, int64_t j0, int64_t i0,
                       int64_t lp, int64_t dqk, int64_t dv, vf* acc, vf* acc2) {
  for (int jb = 0; jb < JB; ++jb) acc[jb] = vf{};
  for (int64_t d = 0; d < dqk; ++d) {
    const vf qv = Load(qt + d * lp + i0);
    for (int jb = 0; jb < JB; ++jb) acc[jb] += k[(j0 + jb) * dqk + d] * qv;
  }
  if constexpr (Dot2) {
    for (int jb = 0; jb < JB; ++jb) acc2[jb] = vf{};
    for (int64_t c = 0; c < dv; ++c) {
      const vf dov = Load(dot + c * lp + i0);
      for (int jb = 0; jb < JB; ++jb) acc2[jb] += v[(j0 + jb) * dv + c] * dov;
    }
  }
}

// Bias, activation and mask of key j for the W queries i0 + t: writes the weight (and, backward,
// the score gradient from dw = <do_i, v_j>) into w_j / ds_j [W].
template <bool Backward>
inline void Elementwise(const Problem& p, const uint8_t* bucket_col, int64_t row_len, int64_t i0, int64_t j,
                        vf s_acc, vf dw_acc, float* w_j, float* ds_j) {
  alignas(64) float s[W], dw[W];
  Store(s, s_acc * p.alpha);
  if (Backward) Store(dw, dw_acc);
  if (!p.pos_by_delta.empty()) {
    const vf pos = Load(p.pos_by_delta.data() + (i0 - j) + p.lp);
    Store(s, Load(s) + pos);
  }
  if (bucket_col != nullptr) {
    for (int64_t t = 0; t < W; ++t) {
      const int64_t i = i0 + t;
      if (i >= j && i < row_len) s[t] += p.ts_w[bucket_col[i]];
    }
  }
  const float scale = p.scale;
  // Keys at or after `hist_end` are targets: visible only to themselves (a history query never
  // reaches one causally).
  const int64_t hist_end = row_len - std::min(p.targets, row_len);
  // Bitwise, not short-circuit, logic: with `&&` / `||` GCC does not vectorise this loop (measured:
  // HSTU-large's step 451 ms instead of 328). Built without AVX-512 it stays scalar either way.
#pragma omp simd
  for (int64_t t = 0; t < W; ++t) {
    const int64_t i = i0 + t;
    const bool visible = (i >= j) & (i < row_len) & ((j < hist_end) | (j == i));
    const float sig = Sigmoid(s[t]);
    w_j[t] = visible ? s[t] * sig * scale : 0.f;
    if (Backward) ds_j[t] = visible ? dw[t] * scale * sig * (1.f + s[t] * (1.f - sig)) : 0.f;
  }
}

// out[i0 + t, c] for t < W (rows below row_len): sum over keys j < kend of w[j, t] * x[j, c],
// x padded rows [kend, xp]; out row-major [.., d], times `mul`.
inline void WeightedSum(const float* w, const float* x, int64_t kend, int64_t d, int64_t xp, int64_t i0,
                        int64_t row_len, float mul, float* out) {
  constexpr int CB = 8;
  alignas(64) float tmp[CB][W];
  for (int64_t c0 = 0; c0 < d; c0 += CB) {
    vf acc[CB];
    for (int cb = 0; cb < CB; ++cb) acc[cb] = vf{};
    for (int64_t j = 0; j < kend; ++j) {
      const vf wv = Load(w + j * W);
      const float* xj = x + j * xp + c0;
      for (int cb = 0; cb < CB; ++cb) acc[cb] += xj[cb] * wv;
    }
    for (int cb = 0; cb < CB; ++cb) Store(tmp[cb], acc[cb] * mul);
    const int64_t cend = std::min<int64_t>(CB, d - c0);
    for (int64_t t = 0; t < W && i0 + t < row_len; ++t)
      for (int64_t cb = 0; cb < cend; ++cb) out[(i0 + t) * d + c0 + cb] = tmp[cb][t];
  }
}

// acc_rows[j, :] += mul * sum_t g[j, t] * x[i0 + t, :] for keys j < kend; x, acc_rows padded [.., xp].
inline void KeyGradients(const float* g, const float* x, int64_t kend, int64_t xp, int64_t i0, int64_t row_len,
                         float mul, float* acc_rows) {
  constexpr int JB = 4;
  const int64_t tend = std::min<int64_t>(W, row_len - i0);
  int64_t j = 0;
  for (; j + JB <= kend; j += JB) {
    for (int64_t f = 0; f < xp; f += W) {
      vf acc[JB];
      for (int jb = 0; jb < JB; ++jb) acc[jb] = vf{};
      for (int64_t t = 0; t < tend; ++t) {
        const vf xv = Load(x + (i0 + t) * xp + f);
        for (int jb = 0; jb < JB; ++jb) acc[jb] += g[(j + jb) * W + t] * xv;
      }
      for (int jb = 0; jb < JB; ++jb) {
        float* dst = acc_rows + (j + jb) * xp + f;
        Store(dst, Load(dst) + acc[jb] * mul);
      }
    }
  }
  for (; j < kend; ++j) {
    for (int64_t f = 0; f < xp; f += W) {
      vf acc = vf{};
      for (int64_t t = 0; t < tend; ++t) acc += g[j * W + t] * Load(x + (i0 + t) * xp + f);
      float* dst = acc_rows + j * xp + f;
      Store(dst, Load(dst) + acc * mul);
    }
  }
}

const uint8_t* BucketCol(const Problem& p, int64_t row, int64_t j) {
  if (p.buckets == nullptr) return nullptr;
  return p.buckets + ((row / p.heads) * p.l + j) * p.l;
}

// Scores, weights (and score gradients) of one query block against its causal keys [0, kend).
template <bool Backward>
void BlockWeights(const Problem& p, int64_t row, int64_t len, int64_t i0, int64_t kend, const float* k,
                  const float* v, Scratch& sc) {
  constexpr int JB = 4;
  vf acc[JB], acc2[JB];
  int64_t j = 0;
  for (; j + JB <= kend; j += JB) {
    ScoreBlock<JB, Backward>(sc.qt.data(), sc.dot.data(), k, v, j, i0, p.lp, p.dqk, p.dv, acc, acc2);
    for (int jb = 0; jb < JB; ++jb)
      Elementwise<Backward>(p, BucketCol(p, row, j + jb), len, i0, j + jb, acc[jb], acc2[jb],
                            sc.w.data() + (j + jb) * W, Backward ? sc.ds.data() + (j + jb) * W : nullptr);
  }
  for (; j < kend; ++j) {
    ScoreBlock<1, Backward>(sc.qt.data(), sc.dot.data(), k, v, j, i0, p.lp, p.dqk, p.dv, acc, acc2);
    Elementwise<Backward>(p, BucketCol(p, row, j), len, i0, j, acc[0], acc2[0], sc.w.data() + j * W,
                          Backward ? sc.ds.data() + j * W : nullptr);
  }
}

void ForwardRow(const Problem& p, int64_t row, float* out, Scratch& sc) {
  const int64_t len = LengthOf(p, row), l = p.l, dqk = p.dqk, dv = p.dv;
  float* o = out + row * l * dv;
  std::fill(o, o + l * dv, 0.f);
  if (len == 0) return;
  const float* k = p.k + row * l * dqk;
  const float* v = p.v + row * l * dv;
  TransposeIn(p.q + row * l * dqk, len, dqk, p.lp, sc.qt.data());
  PadRows(v, len, dv, p.dvp, sc.vp.data());
  for (int64_t i0 = 0; i0 < len; i0 += W) {
    const int64_t kend = std::min(i0 + W, len);
    BlockWeights<false>(p, row, len, i0, kend, k, v, sc);
    WeightedSum(sc.w.data(), sc.vp.data(), kend, dv, p.dvp, i0, len, 1.f, o);
  }
}

// Gradients of one row; the bias gradients go to this row's dpos_delta [2 lp + W + 1] (by distance
// i - j) and dts [nb] slots.
void BackwardRow(const Problem& p, int64_t row, const float* d_out, float* dq_all, float* dk_all, float* dv_all,
                 float* dpos_delta, float* dts, Scratch& sc) {
  const int64_t len = LengthOf(p, row), l = p.l, dqk = p.dqk, dv = p.dv;
  float* dq = dq_all + row * l * dqk;
  float* dk = dk_all + row * l * dqk;
  float* dvv = dv_all + row * l * dv;
  std::fill(dq, dq + l * dqk, 0.f);
  std::fill(dk, dk + l * dqk, 0.f);
  std::fill(dvv, dvv + l * dv, 0.f);
  if (len == 0) return;
  const float* q = p.q + row * l * dqk;
  const float* k = p.k + row * l * dqk;
  const float* v = p.v + row * l * dv;
  const float* dout = d_out + row * l * dv;
  TransposeIn(q, len, dqk, p.lp, sc.qt.data());
  TransposeIn(dout, len, dv, p.lp, sc.dot.data());
  PadRows(k, len, dqk, p.dqp, sc.kp.data());
  PadRows(q, len, dqk, p.dqp, sc.qp.data());
  PadRows(dout, len, dv, p.dvp, sc.dop.data());
  std::fill(sc.dkp.begin(), sc.dkp.begin() + len * p.dqp, 0.f);
  std::fill(sc.dvpad.begin(), sc.dvpad.begin() + len * p.dvp, 0.f);
  for (int64_t i0 = 0; i0 < len; i0 += W) {
    const int64_t kend = std::min(i0 + W, len);
    BlockWeights<true>(p, row, len, i0, kend, k, v, sc);
    const float* ds = sc.ds.data();
    if (dpos_delta != nullptr) {
      for (int64_t j = 0; j < kend; ++j) {
        float* dst = dpos_delta + (i0 - j) + p.lp;
        Store(dst, Load(dst) + Load(ds + j * W));
      }
    }
    if (dts != nullptr) {
      for (int64_t j = 0; j < kend; ++j) {
        const uint8_t* col = BucketCol(p, row, j);
        for (int64_t t = 0; t < W; ++t) {
          const int64_t i = i0 + t;
          if (i >= j && i < len) dts[col[i]] += ds[j * W + t];
        }
      }
    }
    WeightedSum(ds, sc.kp.data(), kend, dqk, p.dqp, i0, len, p.alpha, dq);
    KeyGradients(ds, sc.qp.data(), kend, p.dqp, i0, len, p.alpha, sc.dkp.data());
    KeyGradients(sc.w.data(), sc.dop.data(), kend, p.dvp, i0, len, 1.f, sc.dvpad.data());
  }
  for (int64_t j = 0; j < len; ++j) {
    std::memcpy(dk + j * dqk, sc.dkp.data() + j * p.dqp, dqk * sizeof(float));
    std::memcpy(dvv + j * dv, sc.dvpad.data() + j * p.dvp, dv * sizeof(float));
  }
}

// Validates shapes (the same for both passes) and fills the problem; an error names the operand.
ffi::Error MakeProblem(ffi::Buffer<ffi::F32>& q, ffi::Buffer<ffi::F32>& k, ffi::Buffer<ffi::F32>& v,
                       ffi::Buffer<ffi::S32>& lengths, ffi::Buffer<ffi::F32>& pos_w, ffi::Buffer<ffi::F32>& ts_w,
                       ffi::Buffer<ffi::U8>& buckets, int64_t heads, float alpha, float scale, int64_t targets,
                       Problem* p) {
  const auto qd = q.dimensions(), kd = k.dimensions(), vd = v.dimensions();
  if (qd.size() != 3 || kd.size() != 3 || vd.size() != 3 || kd[0] != qd[0] || kd[1] != qd[1] ||
      kd[2] != qd[2] || vd[0] != qd[0] || vd[1] != qd[1] || lengths.element_count() != size_t(qd[0])) {
    return ffi::Error::InvalidArgument("causal_attention: expected q, k [N, L, Dqk], v [N, L, Dv], lengths [N]");
  }
  if (heads < 1 || qd[0] % heads != 0) {
    return ffi::Error::InvalidArgument("causal_attention: heads must divide the row count N");
  }
  const bool has_ts = ts_w.element_count() > 0;
  if (has_ts) {
    const auto bd = buckets.dimensions();
    if (bd.size() != 3 || bd[0] != qd[0] / heads || bd[1] != qd[1] || bd[2] != qd[1] || ts_w.element_count() > 256) {
      return ffi::Error::InvalidArgument(
          "causal_attention: time bias needs buckets [N / heads, L, L] (uint8) and at most 256 buckets");
    }
  }
  *p = Problem{q.typed_data(), k.typed_data(), v.typed_data(), lengths.typed_data(),
               pos_w.element_count() > 0 ? pos_w.typed_data() : nullptr,
               has_ts ? ts_w.typed_data() : nullptr, has_ts ? buckets.typed_data() : nullptr,
               qd[0], qd[1], qd[2], vd[2], heads, int64_t(pos_w.element_count()), int64_t(ts_w.element_count()),
               alpha, scale, std::max<int64_t>(targets, 0), 0, 0, 0, {}};
  if (has_ts) {   // an out-of-table bucket would read past ts_w: check the real pairs once
    for (int64_t b = 0; b < p->n / heads; ++b) {
      int64_t len = 0;
      for (int64_t h = 0; h < heads; ++h) len = std::max(len, LengthOf(*p, b * heads + h));
      for (int64_t j = 0; j < len; ++j) {
        const uint8_t* col = p->buckets + (b * p->l + j) * p->l;
        for (int64_t i = j; i < len; ++i) {
          if (col[i] >= p->nb) {
            return ffi::Error(ffi::ErrorCode::kOutOfRange,
                              "causal_attention: time bucket " + std::to_string(int(col[i])) + " at (batch " +
                                  std::to_string(b) + ", query " + std::to_string(i) + ", key " + std::to_string(j) +
                                  ") is outside the table of " + std::to_string(p->nb));
          }
        }
      }
    }
  }
  Derive(*p);
  return ffi::Error::Success();
}

ffi::Error ForwardImpl(ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> v,
                       ffi::Buffer<ffi::S32> lengths, ffi::Buffer<ffi::F32> pos_w, ffi::Buffer<ffi::F32> ts_w,
                       ffi::Buffer<ffi::U8> buckets, int64_t heads, float alpha, float scale, int64_t num_targets,
                       int64_t num_threads, ffi::ResultBuffer<ffi::F32> out) {
  Problem p;
  if (auto err = MakeProblem(q, k, v, lengths, pos_w, ts_w, buckets, heads, alpha, scale, num_targets, &p);
      err.failure()) {
    return err;
  }
  const int64_t threads = std::max<int64_t>(1, std::min(num_threads, p.n));
  std::vector<Scratch> scratch(threads);
  for (auto& sc : scratch) sc.Size(p, false);
  ForEachRow(p, threads, [&](int64_t t, int64_t row) { ForwardRow(p, row, out->typed_data(), scratch[t]); });
  return ffi::Error::Success();
}

ffi::Error BackwardImpl(ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> v,
                        ffi::Buffer<ffi::S32> lengths, ffi::Buffer<ffi::F32> pos_w, ffi::Buffer<ffi::F32> ts_w,
                        ffi::Buffer<ffi::U8> buckets, ffi::Buffer<ffi::F32> d_out, int64_t heads, float alpha,
                        float scale, int64_t num_targets, int64_t num_threads, ffi::ResultBuffer<ffi::F32> dq,
                        ffi::ResultBuffer<ffi::F32> dk, ffi::ResultBuffer<ffi::F32> dv,
                        ffi::ResultBuffer<ffi::F32> dpos, ffi::ResultBuffer<ffi::F32> dts) {
  Problem p;
  if (auto err = MakeProblem(q, k, v, lengths, pos_w, ts_w, buckets, heads, alpha, scale, num_targets, &p);
      err.failure()) {
    return err;
  }
  if (d_out.element_count() != size_t(p.n * p.l * p.dv)) {
    return ffi::Error::InvalidArgument("causal_attention: d_out must be [N, L, Dv]");
  }
  const int64_t threads = std::max<int64_t>(1, std::min(num_threads, p.n));
  const int64_t pn = 2 * p.lp + W + 1, nb = std::max<int64_t>(p.nb, 1);
  std::vector<float> dpos_rows(p.pos_n > 0 ? p.n * pn : 0, 0.f), dts_rows(p.nb > 0 ? p.n * nb : 0, 0.f);
  std::vector<Scratch> scratch(threads);
  for (auto& sc : scratch) sc.Size(p, true);
  ForEachRow(p, threads, [&](int64_t t, int64_t row) {
    BackwardRow(p, row, d_out.typed_data(), dq->typed_data(), dk->typed_data(), dv->typed_data(),
                p.pos_n > 0 ? dpos_rows.data() + row * pn : nullptr, p.nb > 0 ? dts_rows.data() + row * nb : nullptr,
                scratch[t]);
  });
  // Row order, whatever thread computed the row: the sums do not depend on the thread count.
  float* dp = dpos->typed_data();
  std::fill(dp, dp + dpos->element_count(), 0.f);
  if (p.pos_n > 0) {
    std::vector<float> by_delta(pn, 0.f);
    for (int64_t r = 0; r < p.n; ++r) {
      const float* src = dpos_rows.data() + r * pn;
#pragma omp simd
      for (int64_t m = 0; m < pn; ++m) by_delta[m] += src[m];
    }
    // Distance i - j = m - lp reads pos_w[clip(P - 1 - (i - j))] (Derive): send each sum there.
    const int64_t center = (p.pos_n + 1) / 2 - 1, last = p.pos_n - 1;
    for (int64_t m = 0; m < pn; ++m) dp[std::clamp<int64_t>(center - (m - p.lp), 0, last)] += by_delta[m];
  }
  float* dt = dts->typed_data();
  std::fill(dt, dt + dts->element_count(), 0.f);
  for (int64_t r = 0; r < p.n && p.nb > 0; ++r) {
    const float* src = dts_rows.data() + r * nb;
    for (int64_t j = 0; j < p.nb; ++j) dt[j] += src[j];
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(RecjaxCausalAttentionFwd, ForwardImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()   // q [N, L, Dqk]
                                  .Arg<ffi::Buffer<ffi::F32>>()   // k [N, L, Dqk]
                                  .Arg<ffi::Buffer<ffi::F32>>()   // v [N, L, Dv]
                                  .Arg<ffi::Buffer<ffi::S32>>()   // lengths [N]
                                  .Arg<ffi::Buffer<ffi::F32>>()   // pos_w [2P - 1] or [0]
                                  .Arg<ffi::Buffer<ffi::F32>>()   // ts_w [nb] or [0]
                                  .Arg<ffi::Buffer<ffi::U8>>()    // buckets [N / H, Lk, Lq] or [0, 0, 0]
                                  .Attr<int64_t>("heads")
                                  .Attr<float>("alpha")
                                  .Attr<float>("scale")
                                  .Attr<int64_t>("num_targets")
                                  .Attr<int64_t>("num_threads")
                                  .Ret<ffi::Buffer<ffi::F32>>());  // out [N, L, Dv]

XLA_FFI_DEFINE_HANDLER_SYMBOL(RecjaxCausalAttentionBwd, BackwardImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()   // q
                                  .Arg<ffi::Buffer<ffi::F32>>()   // k
                                  .Arg<ffi::Buffer<ffi::F32>>()   // v
                                  .Arg<ffi::Buffer<ffi::S32>>()   // lengths
                                  .Arg<ffi::Buffer<ffi::F32>>()   // pos_w
                                  .Arg<ffi::Buffer<ffi::F32>>()   // ts_w
                                  .Arg<ffi::Buffer<ffi::U8>>()    // buckets
                                  .Arg<ffi::Buffer<ffi::F32>>()   // d_out [N, L, Dv]
                                  .Attr<int64_t>("heads")
                                  .Attr<float>("alpha")
                                  .Attr<float>("scale")
                                  .Attr<int64_t>("num_targets")
                                  .Attr<int64_t>("num_threads")
                                  .Ret<ffi::Buffer<ffi::F32>>()   // dq
                                  .Ret<ffi::Buffer<ffi::F32>>()   // dk
                                  .Ret<ffi::Buffer<ffi::F32>>()   // dv
                                  .Ret<ffi::Buffer<ffi::F32>>()   // dpos [2P - 1] or [0]
                                  .Ret<ffi::Buffer<ffi::F32>>());  // dts [nb] or [0]
