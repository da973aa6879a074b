// CUDA kernel of golf::gptq_block_update (schema in golf_ops.cpp, contract in gptq_update.h, reference
// golf/ops/gptq.py::gptq_block_update_ref, torch wrapper in gptq_update_cuda.cpp). Compiled only in CUDA
// builds; tests/test_csrc_compile.py compile-checks it for sm_90 on GPU-less machines.
//
// Rows are independent inside a block, columns are serial. One warp owns one row: lane l holds columns
// l, l+32, l+64, l+96 of the working row in registers (NS = ceil(B/32) slots, indexed statically so they
// stay in registers). For column j the owner's value is broadcast with a shuffle; every lane computes the
// same code q_j and error e_j and updates its own columns k > j with Hinv[j, k] from shared memory, where
// the block's Hinv (B x B fp32, 64 KiB at B = 128) is staged once per CTA. Consecutive lanes read
// consecutive Hinv entries, so the shared loads are conflict-free.
//
// Numerics: setup.py compiles with --use_fast_math, so the arithmetic uses explicitly rounded intrinsics
// (__fdiv_rn, __fmul_rn, __fsub_rn: IEEE division, no FMA contraction) and rintf (round half to even, as
// torch.round); the result then equals the CPU kernel and the torch loop bit for bit. (Fast math also
// flushes fp32 denormals; GPTQ's values are far above 1e-38.)
#include <cuda_runtime.h>

#include <cstdint>

#include "gptq_update_kernel.h"

namespace golf {
namespace {

constexpr int kWarpsPerCta = 4;  // rows per CTA: small, so even a 256-row matrix spreads over 64 SMs

template <int NS>
__global__ void __launch_bounds__(32 * kWarpsPerCta)
    gptq_block_update_kernel(const float* __restrict__ W, int64_t ldw, const float* __restrict__ Hinv, int64_t ldh,
                             const float* __restrict__ scales, int64_t rows, int B, float qmax,
                             int8_t* __restrict__ Q, float* __restrict__ Err) {
  extern __shared__ float hs[];  // [B, B], row-major
  for (int i = threadIdx.x; i < B * B; i += blockDim.x) {
    const int r = i / B, c = i - r * B;
    hs[i] = Hinv[r * ldh + c];
  }
  __syncthreads();

  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerCta + (threadIdx.x >> 5);
  if (row >= rows) return;  // whole warps leave together, after the only barrier

  const float* wrow = W + row * ldw;
  float w[NS], qv[NS], ev[NS];
#pragma unroll
  for (int t = 0; t < NS; ++t) {
    const int c = t * 32 + lane;
    w[t] = c < B ? wrow[c] : 0.f;
    qv[t] = 0.f;
    ev[t] = 0.f;
  }
  const float s = scales[row];

#pragma unroll
  for (int t = 0; t < NS; ++t) {
    for (int l = 0; l < 32; ++l) {
      const int j = t * 32 + l;
      if (j >= B) break;  // uniform across the warp
      const float wj = __shfl_sync(0xffffffffu, w[t], l);
      const float q = fminf(fmaxf(rintf(__fdiv_rn(wj, s)), -qmax), qmax);
      const float e = __fdiv_rn(__fsub_rn(wj, __fmul_rn(q, s)), hs[j * B + j]);
      if (lane == l) {
        qv[t] = q;
        ev[t] = e;
      }
      const float* hj = hs + j * B;
#pragma unroll
      for (int u = t; u < NS; ++u) {
        const int c = u * 32 + lane;
        if (c > j && c < B) w[u] = __fsub_rn(w[u], __fmul_rn(e, hj[c]));
      }
    }
  }

  int8_t* qrow = Q + row * B;
  float* erow = Err + row * B;
#pragma unroll
  for (int t = 0; t < NS; ++t) {
    const int c = t * 32 + lane;
    if (c < B) {
      qrow[c] = static_cast<int8_t>(qv[t]);
      erow[c] = ev[t];
    }
  }
}

template <int NS>
cudaError_t launch(const float* W, int64_t ldw, const float* Hinv, int64_t ldh, const float* scales, int64_t rows,
                   int B, float qmax, int8_t* Q, float* Err, cudaStream_t stream) {
  const int smem = B * B * static_cast<int>(sizeof(float));
  // Above 48 KiB of dynamic shared memory a kernel must opt in.
  cudaError_t err =
      cudaFuncSetAttribute(gptq_block_update_kernel<NS>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (err != cudaSuccess) return err;
  const int64_t grid = (rows + kWarpsPerCta - 1) / kWarpsPerCta;
  gptq_block_update_kernel<NS><<<static_cast<unsigned>(grid), 32 * kWarpsPerCta, smem, stream>>>(
      W, ldw, Hinv, ldh, scales, rows, B, qmax, Q, Err);
  return cudaGetLastError();
}

}  // namespace

cudaError_t gptq_block_update_cuda_launch(const float* W, int64_t ldw, const float* Hinv, int64_t ldh,
                                          const float* scales, int64_t rows, int B, float qmax, int8_t* Q,
                                          float* Err, cudaStream_t stream) {
  if (B < 1 || B > kGptqCudaMaxBlockCols || rows < 1 || (rows + kWarpsPerCta - 1) / kWarpsPerCta > 0x7fffffff)
    return cudaErrorInvalidValue;
  switch ((B + 31) / 32) {
    case 1: return launch<1>(W, ldw, Hinv, ldh, scales, rows, B, qmax, Q, Err, stream);
    case 2: return launch<2>(W, ldw, Hinv, ldh, scales, rows, B, qmax, Q, Err, stream);
    case 3: return launch<3>(W, ldw, Hinv, ldh, scales, rows, B, qmax, Q, Err, stream);
    default: return launch<4>(W, ldw, Hinv, ldh, scales, rows, B, qmax, Q, Err, stream);
  }
}

}  // namespace golf
