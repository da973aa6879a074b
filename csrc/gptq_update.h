// Shared by the CPU (golf_ops.cpp) and CUDA (gptq_update.cu) kernels of golf::gptq_block_update:
// argument validation and the per-element arithmetic, so both devices check and compute the same way.
//
// Op contract (the reference is golf/ops/gptq.py::gptq_block_update_ref):
//   gptq_block_update(Tensor W, Tensor Hinv, Tensor scales, int qmax) -> (Tensor Q, Tensor Err)
//   W      fp32 [rows, B]  one block of GPTQ's working weights; unit stride along columns, any row stride
//                          (so W[:, i1:i2] of the full matrix is passed without a copy); not modified.
//   Hinv   fp32 [B, B]     the block's diagonal block of the upper Cholesky factor of H^-1; unit column
//                          stride, any row stride; only the upper triangle is read.
//   scales fp32 [rows]     per-row quantization step (fp16-rounded by golf.quant.scheme), contiguous.
//   qmax   int in [1, 127] codes are clamped to [-qmax, qmax].
//   Q      int8 [rows, B]  contiguous codes.
//   Err    fp32 [rows, B]  contiguous, Err[:, j] = (w_j - q_j * s) / Hinv[j, j].
// For each row independently, columns j = 0..B-1 in order:
//   q_j = clamp(round_half_even(w_j / s), -qmax, qmax);  e_j = (w_j - q_j * s) / Hinv[j, j]
//   w_k -= e_j * Hinv[j, k]   for k > j
// Every step is one IEEE-rounded fp32 operation (no fused multiply-add), which is what makes the CPU, CUDA
// and torch-loop results agree bit for bit.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>

namespace golf {

inline void check_gptq_block_update_args(const at::Tensor& W, const at::Tensor& Hinv, const at::Tensor& scales,
                                         int64_t qmax) {
  TORCH_CHECK(W.dim() == 2, "gptq_block_update: W must be 2-D [rows, B], got ", W.dim(), "-D ", W.sizes());
  TORCH_CHECK(W.scalar_type() == at::kFloat, "gptq_block_update: W must be float32, got ", W.scalar_type());
  TORCH_CHECK(Hinv.scalar_type() == at::kFloat, "gptq_block_update: Hinv must be float32, got ",
              Hinv.scalar_type());
  TORCH_CHECK(scales.scalar_type() == at::kFloat, "gptq_block_update: scales must be float32, got ",
              scales.scalar_type());
  const int64_t rows = W.size(0), B = W.size(1);
  TORCH_CHECK(Hinv.dim() == 2 && Hinv.size(0) == B && Hinv.size(1) == B, "gptq_block_update: Hinv must be [B, B] = [",
              B, ", ", B, "] to match W ", W.sizes(), ", got ", Hinv.sizes());
  TORCH_CHECK(scales.dim() == 1 && scales.size(0) == rows, "gptq_block_update: scales must be [rows] = [", rows,
              "], got ", scales.sizes());
  TORCH_CHECK(B == 0 || W.stride(1) == 1, "gptq_block_update: W needs unit stride along columns (a row-major "
              "matrix or a column slice of one); got strides ", W.strides(), ". Pass W.contiguous()");
  TORCH_CHECK(B == 0 || Hinv.stride(1) == 1, "gptq_block_update: Hinv needs unit stride along columns; got "
              "strides ", Hinv.strides(), ". Pass Hinv.contiguous()");
  TORCH_CHECK(scales.is_contiguous(), "gptq_block_update: scales must be contiguous");
  TORCH_CHECK(W.device() == Hinv.device() && W.device() == scales.device(),
              "gptq_block_update: W, Hinv and scales must be on one device, got ", W.device(), ", ",
              Hinv.device(), ", ", scales.device());
  TORCH_CHECK(qmax >= 1 && qmax <= 127, "gptq_block_update: qmax must be in [1, 127] (int8 codes), got ", qmax);
}

}  // namespace golf
