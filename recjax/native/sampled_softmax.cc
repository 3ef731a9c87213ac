// Fused sampled-softmax loss and its gradients for XLA:CPU (an XLA FFI custom call).
//
// One pass over the tokens computes, for token t with candidates ids[t, 0..K) (column 0 the
// positive) and weight w[t]:
//   s_k   = <u_t, E[ids[t, k]]> * inv_temperature    (-5e4 where a negative equals the positive)
//   loss += w_t * (logsumexp_k s_k - s_0)
//   ds_k  = w_t * (softmax_k(s) - [k == 0]) * inv_temperature     (0 where removed)
//   du_t  = sum_k ds_k E[ids[t, k]]        dE[ids[t, k]] += ds_k u_t
// i.e. the loss sum and its gradients for a unit cotangent. XLA:CPU executes the same math as
// a gather, a batched dot and a scatter-add through memory (recjax/losses.py, the reference);
// here the candidate rows are read once from the (cache-resident) table and never materialised.
// Tokens are split over threads, each with its own dE accumulator, summed at the end.
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

// Tokens [t0, t1): adds to *loss and dtable, writes du rows.
void Range(const float* u, const float* table, const int32_t* ids, const float* w, int64_t t0, int64_t t1,
           int64_t k, int64_t d, float inv_temp, float* du, float* dtable, double* loss) {
  std::vector<float> s(k);
  double total = 0.0;
  for (int64_t t = t0; t < t1; ++t) {
    const float* ut = u + t * d;
    const int32_t* it = ids + t * k;
    float* dut = du + t * d;
    std::fill(dut, dut + d, 0.f);
    const float wt = w[t];
    if (wt == 0.f) continue;  // padding rows of a packed batch: no loss, no gradient
    float m = -INFINITY;
    for (int64_t j = 0; j < k; ++j) {
      if (j + kPrefetchAhead < k) PrefetchRow(table + int64_t(it[j + kPrefetchAhead]) * d, d);
      s[j] = (j > 0 && it[j] == it[0]) ? kRemovedLogit : Dot(ut, table + int64_t(it[j]) * d, d) * inv_temp;
      m = std::max(m, s[j]);
    }
    float z = 0.f;
    for (int64_t j = 0; j < k; ++j) {
      s[j] = std::exp(s[j] - m);  // s now holds the unnormalised probabilities
      z += s[j];
    }
    const float lse = m + std::log(z);
    const float s0 = std::log(s[0]) + m;  // the positive's logit, recovered
    total += double(wt) * double(lse - s0);
    const float scale = wt * inv_temp;
    for (int64_t j = 0; j < k; ++j) {
      if (j + kPrefetchAhead < k) {
        PrefetchRow(table + int64_t(it[j + kPrefetchAhead]) * d, d);
        PrefetchRow(dtable + int64_t(it[j + kPrefetchAhead]) * d, d);
      }
      if (j > 0 && it[j] == it[0]) continue;
      const float ds = (s[j] / z - (j == 0 ? 1.f : 0.f)) * scale;
      const float* row = table + int64_t(it[j]) * d;
      Axpy(ds, row, dut, d);
      Axpy(ds, ut, dtable + int64_t(it[j]) * d, d);
    }
  }
  *loss += total;
}

ffi::Error SampledSoftmaxImpl(ffi::Buffer<ffi::F32> u, ffi::Buffer<ffi::F32> table, ffi::Buffer<ffi::S32> ids,
                              ffi::Buffer<ffi::F32> weights, float inv_temperature, int64_t num_threads,
                              ffi::ResultBuffer<ffi::F32> loss, ffi::ResultBuffer<ffi::F32> du,
                              ffi::ResultBuffer<ffi::F32> dtable) {
  const auto ud = u.dimensions(), td = table.dimensions(), id = ids.dimensions();
  if (ud.size() != 2 || td.size() != 2 || id.size() != 2 || id[0] != ud[0] || td[1] != ud[1] ||
      weights.element_count() != size_t(ud[0])) {
    return ffi::Error::InvalidArgument("sampled_softmax: expected u [T, D], table [V, D], ids [T, K], weights [T]");
  }
  const int64_t t = ud[0], d = ud[1], v = td[0], k = id[1];
  const int32_t* ip = ids.typed_data();
  for (int64_t i = 0; i < t * k; ++i) {
    if (ip[i] < 0 || ip[i] >= v) {
      return ffi::Error(ffi::ErrorCode::kOutOfRange,
                        "sampled_softmax: item id " + std::to_string(ip[i]) + " at token " + std::to_string(i / k) +
                            ", candidate " + std::to_string(i % k) + " is outside the table [0, " +
                            std::to_string(v) + ")");
    }
  }
  int64_t n = std::max<int64_t>(1, std::min<int64_t>(num_threads, t / 512));
  std::vector<std::vector<float>> dtables(n - 1, std::vector<float>(v * d, 0.f));
  std::vector<double> losses(n, 0.0);
  float* dt0 = dtable->typed_data();
  std::fill(dt0, dt0 + v * d, 0.f);
  auto work = [&](int64_t i) {
    const int64_t t0 = t * i / n, t1 = t * (i + 1) / n;
    Range(u.typed_data(), table.typed_data(), ip, weights.typed_data(), t0, t1, k, d, inv_temperature,
          du->typed_data(), i == 0 ? dt0 : dtables[i - 1].data(), &losses[i]);
  };
  std::vector<std::thread> threads;
  for (int64_t i = 1; i < n; ++i) threads.emplace_back(work, i);
  work(0);
  for (auto& th : threads) th.join();
  double total = losses[0];
  for (int64_t i = 1; i < n; ++i) {
    total += losses[i];
    const float* src = dtables[i - 1].data();
#pragma omp simd
    for (int64_t j = 0; j < v * d; ++j) dt0[j] += src[j];
  }
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
