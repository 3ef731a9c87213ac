// Fused sampled-softmax loss and its gradients for XLA:CPU (an XLA FFI custom call).
//
// For token t with candidates ids[t, 0..K) (column 0 the positive) and weight w[t]:
//   s_k   = <u_t, E[ids[t, k]]> * inv_temperature    (-5e4 where a negative equals the positive)
//   loss += w_t * (logsumexp_k s_k - s_0)
//   ds_k  = w_t * (softmax_k(s) - [k == 0]) * inv_temperature     (0 where removed)
//   du_t  = sum_k ds_k E[ids[t, k]]        dE[ids[t, k]] += ds_k u_t
// i.e. the loss sum and its gradients for a unit cotangent. XLA:CPU executes the same math as
// a gather, a batched dot and a scatter-add through memory (recjax/losses.py, the reference);
// here the candidate rows are read once from the (cache-resident) table and never materialised.
//
// Tokens are split over threads. Each thread's table-gradient updates dE[row] += ds_k u_t go to
// whichever of two sinks takes less memory (so never a [V, D] copy per thread at a large V; that
// was ≈ 0.9 GB per thread at 4.4M items):
//   DenseSink: a private [V, D] accumulator per extra thread, summed at the end: the fastest
//     when V * D is small (e.g. ML-1M), as the update is fused into the token loop;
//   ListSink: one RowUpdate {row, t, ds} (12 bytes) per kept candidate, filed under the slice of
//     rows it lands in (contiguous id ranges, one per thread); a second pass has each thread apply
//     its slice's updates in token order, writing dE directly.
// Extra memory: ≈ min((threads - 1) * V * D * 4, 12 * T * K) bytes, never more than the lists.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr float kRemovedLogit = -5e4f;
constexpr int64_t kPrefetchAhead = 8;   // candidate rows are random: fetch a few ahead of use

struct RowUpdate {
  int32_t row;  // table row (item id)
  int32_t t;    // token whose user vector is added
  float ds;     // d loss / d logit (times weight and 1/temperature)
};

inline void PrefetchRow(const float* row, int64_t d) {
  for (int64_t i = 0; i < d; i += 16) __builtin_prefetch(row + i);
  __builtin_prefetch(row + d - 1);
}

inline float Dot(const float* a, const float* b, int64_t d) {
  float acc = 0.f;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < d; ++i) acc += a[i] * b[i];
  return acc;
}

inline void Axpy(float alpha, const float* x, float* y, int64_t d) {
#pragma omp simd
  for (int64_t i = 0; i < d; ++i) y[i] += alpha * x[i];
}

struct Problem {
  const float* u;      // [T, D]
  const float* table;  // [V, D]
  const int32_t* ids;  // [T, K]
  const float* w;      // [T]
  int64_t t, v, k, d;
  float inv_temp;
  int64_t slices;      // = threads
  uint64_t slice_mul;  // row -> slice: (row * slice_mul) >> 32, monotone, < slices
};

inline int64_t SliceOf(const Problem& p, int32_t row) { return int64_t((uint64_t(row) * p.slice_mul) >> 32); }

// Adds each update to a private dense [V, D] accumulator.
struct DenseSink {
  float* dtable;
  int64_t d;
  void Add(const Problem&, int32_t row, int32_t, const float* ut, float ds) {
    Axpy(ds, ut, dtable + int64_t(row) * d, d);
  }
  void Prefetch(int32_t row) const { PrefetchRow(dtable + int64_t(row) * d, d); }
};

// Files each update under its row's slice, for RowPass.
struct ListSink {
  std::vector<std::vector<RowUpdate>>* by_slice;
  void Add(const Problem& p, int32_t row, int32_t t, const float*, float ds) {
    (*by_slice)[SliceOf(p, row)].push_back({row, t, ds});
  }
  void Prefetch(int32_t) const {}
};

// Pass 1 over tokens [t0, t1): writes du rows and per-token losses, hands table updates to `sink`.
template <typename Sink>
void TokenPass(const Problem& p, int64_t t0, int64_t t1, float* du, double* loss_t, Sink sink) {
  const int64_t k = p.k, d = p.d;
  std::vector<float> s(k);
  for (int64_t t = t0; t < t1; ++t) {
    const float* ut = p.u + t * d;
    const int32_t* it = p.ids + t * k;
    float* dut = du + t * d;
    std::fill(dut, dut + d, 0.f);
    loss_t[t] = 0.0;
    const float wt = p.w[t];
    if (wt == 0.f) continue;  // padding rows of a packed batch: no loss, no gradient
    float m = -INFINITY;
    for (int64_t j = 0; j < k; ++j) {
      if (j + kPrefetchAhead < k) PrefetchRow(p.table + int64_t(it[j + kPrefetchAhead]) * d, d);
      s[j] = (j > 0 && it[j] == it[0]) ? kRemovedLogit : Dot(ut, p.table + int64_t(it[j]) * d, d) * p.inv_temp;
      m = std::max(m, s[j]);
    }
    // Keep the positive's raw logit: recovering it as log(exp(s0 - m)) + m underflows to -inf
    // (loss +inf) once m - s0 exceeds ≈ 104, e.g. at a small temperature.
    const float s0 = s[0];
    float z = 0.f;
    for (int64_t j = 0; j < k; ++j) {
      s[j] = std::exp(s[j] - m);  // s now holds the unnormalised probabilities
      z += s[j];
    }
    loss_t[t] = double(wt) * double(m + std::log(z) - s0);
    const float scale = wt * p.inv_temp;
    for (int64_t j = 0; j < k; ++j) {
      if (j + kPrefetchAhead < k) {
        PrefetchRow(p.table + int64_t(it[j + kPrefetchAhead]) * d, d);
        sink.Prefetch(it[j + kPrefetchAhead]);
      }
      if (j > 0 && it[j] == it[0]) continue;
      const float ds = (s[j] / z - (j == 0 ? 1.f : 0.f)) * scale;
      Axpy(ds, p.table + int64_t(it[j]) * d, dut, d);
      sink.Add(p, it[j], int32_t(t), ut, ds);
    }
  }
}

// Pass 2 of the ListSink for one slice of rows: the updates filed by each token range, ranges in
// token order.
void RowPass(const Problem& p, const std::vector<const std::vector<RowUpdate>*>& lists, float* dtable) {
  const int64_t d = p.d;
  for (const auto* list : lists) {
    const RowUpdate* e = list->data();
    const int64_t n = int64_t(list->size());
    for (int64_t i = 0; i < n; ++i) {
      if (i + kPrefetchAhead < n) PrefetchRow(dtable + int64_t(e[i + kPrefetchAhead].row) * d, d);
      Axpy(e[i].ds, p.u + int64_t(e[i].t) * d, dtable + int64_t(e[i].row) * d, d);
    }
  }
}

template <typename F>
void ParallelFor(int64_t n, const F& f) {
  std::vector<std::thread> threads;
  threads.reserve(n - 1);
  for (int64_t i = 1; i < n; ++i) threads.emplace_back(f, i);
  f(0);
  for (auto& th : threads) th.join();
}

ffi::Error SampledSoftmaxImpl(ffi::Buffer<ffi::F32> u, ffi::Buffer<ffi::F32> table, ffi::Buffer<ffi::S32> ids,
                              ffi::Buffer<ffi::F32> weights, float inv_temperature, int64_t num_threads,
                              ffi::ResultBuffer<ffi::F32> loss, ffi::ResultBuffer<ffi::F32> du,
                              ffi::ResultBuffer<ffi::F32> dtable) {
  const auto ud = u.dimensions(), td = table.dimensions(), id = ids.dimensions();
  if (ud.size() != 2 || td.size() != 2 || id.size() != 2 || id[0] != ud[0] || td[1] != ud[1] || id[1] < 1 ||
      weights.element_count() != size_t(ud[0])) {
    return ffi::Error::InvalidArgument(
        "sampled_softmax: expected u [T, D], table [V, D], ids [T, K >= 1], weights [T]");
  }
  const int64_t t = ud[0], d = ud[1], v = td[0], k = id[1];
  if (t > INT32_MAX) return ffi::Error::InvalidArgument("sampled_softmax: more than 2^31 - 1 tokens");
  const int32_t* ip = ids.typed_data();
  for (int64_t i = 0; i < t * k; ++i) {
    if (ip[i] < 0 || ip[i] >= v) {
      return ffi::Error(ffi::ErrorCode::kOutOfRange,
                        "sampled_softmax: item id " + std::to_string(ip[i]) + " at token " + std::to_string(i / k) +
                            ", candidate " + std::to_string(i % k) + " is outside the table [0, " +
                            std::to_string(v) + ")");
    }
  }
  // The caller picks the count (recjax.native.thread_count); at least one token per thread.
  const int64_t n = std::max<int64_t>(1, std::min<int64_t>(num_threads, t));
  // slice_mul = floor(n * 2^32 / v): rows [0, v) map onto slices [0, n), contiguous and balanced.
  const Problem p{u.typed_data(), table.typed_data(), ip, weights.typed_data(), t, v, k, d, inv_temperature,
                  n, v > 0 ? (uint64_t(n) << 32) / uint64_t(v) : 0};
  std::vector<double> loss_t(t);
  float* dt = dtable->typed_data();
  const auto token_range = [&](int64_t i) { return std::make_pair(t * i / n, t * (i + 1) / n); };
  if (uint64_t(n - 1) * uint64_t(v) * uint64_t(d) * sizeof(float) <= uint64_t(t) * uint64_t(k) * sizeof(RowUpdate)) {
    // Dense: thread 0 accumulates into the output, the others into private copies.
    std::vector<std::vector<float>> copies(n - 1);
    ParallelFor(n, [&](int64_t i) {
      float* acc = dt;
      if (i > 0) {
        copies[i - 1].assign(v * d, 0.f);
        acc = copies[i - 1].data();
      } else {
        std::fill(dt, dt + v * d, 0.f);
      }
      const auto [t0, t1] = token_range(i);
      TokenPass(p, t0, t1, du->typed_data(), loss_t.data(), DenseSink{acc, d});
    });
    // Summed on this thread: the copies are small here (at most the lists' size), and under a
    // loaded CPU every extra fork/join waits for a time slice.
    for (const auto& copy : copies) {
      const float* src = copy.data();
#pragma omp simd
      for (int64_t j = 0; j < v * d; ++j) dt[j] += src[j];
    }
  } else {
    // updates[i][s]: the updates of token range i to row slice s.
    std::vector<std::vector<std::vector<RowUpdate>>> updates(n, std::vector<std::vector<RowUpdate>>(n));
    ParallelFor(n, [&](int64_t i) {
      const auto [t0, t1] = token_range(i);
      for (auto& list : updates[i]) list.reserve(size_t((t1 - t0) * k / n + (t1 - t0) * k / (8 * n) + 16));
      TokenPass(p, t0, t1, du->typed_data(), loss_t.data(), ListSink{&updates[i]});
      std::fill(dt + v * d * i / n, dt + v * d * (i + 1) / n, 0.f);  // zero dE, in parallel
    });
    ParallelFor(n, [&](int64_t s) {
      std::vector<const std::vector<RowUpdate>*> lists(n);
      for (int64_t i = 0; i < n; ++i) lists[i] = &updates[i][s];
      RowPass(p, lists, dt);
    });
  }
  double total = 0.0;
  for (int64_t i = 0; i < t; ++i) total += loss_t[i];
  *loss->typed_data() = float(total);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(RecjaxSampledSoftmax, SampledSoftmaxImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()   // u [T, D]
                                  .Arg<ffi::Buffer<ffi::F32>>()   // table [V, D]
                                  .Arg<ffi::Buffer<ffi::S32>>()   // ids [T, K]
                                  .Arg<ffi::Buffer<ffi::F32>>()   // weights [T]
                                  .Attr<float>("inv_temperature")
                                  .Attr<int64_t>("num_threads")
                                  .Ret<ffi::Buffer<ffi::F32>>()   // loss sum []
                                  .Ret<ffi::Buffer<ffi::F32>>()   // du [T, D]
                                  .Ret<ffi::Buffer<ffi::F32>>()); // dtable [V, D]
