// The torch-facing CUDA kernel of golf::gptq_block_update: validation, device guard, stream, outputs, and
// the registration for the CUDA dispatch key. Host C++; the device code is in gptq_update.cu. The whole file
// is empty unless setup.py builds the CUDA sources (it then defines GOLF_WITH_CUDA).
#ifdef GOLF_WITH_CUDA

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "gptq_update.h"
#include "gptq_update_kernel.h"

namespace golf {
namespace {

std::tuple<at::Tensor, at::Tensor> gptq_block_update_cuda(const at::Tensor& W, const at::Tensor& Hinv,
                                                          const at::Tensor& scales, int64_t qmax) {
  check_gptq_block_update_args(W, Hinv, scales, qmax);
  TORCH_CHECK(W.is_cuda(), "gptq_block_update (CUDA kernel): tensors must be on a CUDA device, got ", W.device());
  const int64_t rows = W.size(0), B = W.size(1);
  TORCH_CHECK(B <= kGptqCudaMaxBlockCols, "gptq_block_update (CUDA kernel): the block has ", B,
              " columns, at most ", kGptqCudaMaxBlockCols, " are supported; use block_size <= ",
              kGptqCudaMaxBlockCols, " or impl='reference'");
  const c10::cuda::CUDAGuard guard(W.device());
  at::Tensor Q = at::empty({rows, B}, W.options().dtype(at::kChar));
  at::Tensor Err = at::empty({rows, B}, W.options());
  if (rows == 0 || B == 0) return {Q, Err};
  C10_CUDA_CHECK(gptq_block_update_cuda_launch(
      W.data_ptr<float>(), W.stride(0), Hinv.data_ptr<float>(), Hinv.stride(0), scales.data_ptr<float>(), rows,
      static_cast<int>(B), static_cast<float>(qmax), Q.data_ptr<int8_t>(), Err.data_ptr<float>(),
      c10::cuda::getCurrentCUDAStream(W.device().index()).stream()));
  return {Q, Err};
}

}  // namespace
}  // namespace golf

TORCH_LIBRARY_IMPL(golf, CUDA, m) { m.impl("gptq_block_update", &golf::gptq_block_update_cuda); }

#endif  // GOLF_WITH_CUDA
