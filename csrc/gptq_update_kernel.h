// The launcher of the CUDA kernel of golf::gptq_block_update, in plain CUDA types so gptq_update.cu needs
// no torch headers (it compile-checks in seconds on a GPU-less machine) and the torch-facing wrapper
// (gptq_update_cuda.cpp) stays host C++. Contract: gptq_update.h.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace golf {

// The kernel keeps a row's block in registers (4 columns per lane) and stages Hinv in shared memory.
constexpr int kGptqCudaMaxBlockCols = 128;

// W [rows, B] (row stride ldw), Hinv [B, B] (row stride ldh), scales [rows]; Q [rows, B] and Err [rows, B]
// contiguous. 1 <= B <= kGptqCudaMaxBlockCols. Enqueues on `stream`; returns the first CUDA error.
cudaError_t gptq_block_update_cuda_launch(const float* W, int64_t ldw, const float* Hinv, int64_t ldh,
                                          const float* scales, int64_t rows, int B, float qmax, int8_t* Q,
                                          float* Err, cudaStream_t stream);

}  // namespace golf
