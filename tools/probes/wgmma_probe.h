// What the wgmma probes (mma_rate.cu, wgmma_rows.cu) share: the planes kernel's wgmma pieces
// (kernels/wgmma.h: descriptor, B layout, m64n64k16, fence / commit / wait, pin), and the layout
// check, D = A (64 x 16) x B (16 x n) by a one-warpgroup kernel against a float GEMM on the host. A
// is row-major, B as b[k * n + col]; both hold small multiples of 1/8 and 1/4, exact in fp16, so the
// sums are exact in float too.
#pragma once

#include "../../kernels/wgmma.h"
#include "cuda_check.h"

#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <vector>

// kernel(a, b, d) writes d (64 x n, row-major). Returns how many of d's elements differ from the
// host GEMM; d and ref receive both (d is NaN-poisoned first, so an unwritten element counts).
template <typename Kernel>
int check_layout(Kernel kernel, int n, std::vector<float>& d, std::vector<float>& ref) {
  std::vector<__half> a(64 * 16), b(16 * n);
  std::vector<float> af(a.size()), bf(b.size());
  d.assign(64 * n, 0.f);
  ref.assign(64 * n, 0.f);
  srand(1);
  for (size_t i = 0; i < a.size(); ++i) af[i] = __half2float(a[i] = __float2half((rand() % 17 - 8) / 8.f));
  for (size_t i = 0; i < b.size(); ++i) bf[i] = __half2float(b[i] = __float2half((rand() % 13 - 6) / 4.f));
  for (int m = 0; m < 64; ++m)
    for (int col = 0; col < n; ++col)
      for (int k = 0; k < 16; ++k) ref[m * n + col] += af[m * 16 + k] * bf[k * n + col];
  __half *da, *db;
  float* dd;
  CHECK(cudaMalloc(&da, a.size() * 2));
  CHECK(cudaMalloc(&db, b.size() * 2));
  CHECK(cudaMalloc(&dd, d.size() * 4));
  CHECK(cudaMemcpy(da, a.data(), a.size() * 2, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(db, b.data(), b.size() * 2, cudaMemcpyHostToDevice));
  CHECK(cudaMemset(dd, 0xFF, d.size() * 4));  // NaN poison
  kernel<<<1, 128>>>(da, db, dd);
  CHECK(cudaGetLastError());
  CHECK(cudaMemcpy(d.data(), dd, d.size() * 4, cudaMemcpyDeviceToHost));
  CHECK(cudaFree(da));
  CHECK(cudaFree(db));
  CHECK(cudaFree(dd));
  int bad = 0;
  for (size_t i = 0; i < d.size(); ++i)
    if (!(std::fabs(d[i] - ref[i]) <= 1e-3f)) ++bad;
  return bad;
}
