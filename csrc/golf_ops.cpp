// golf._C: golf's C++ ops, registered as torch ops in the `golf` namespace (torch.ops.golf.*).
//
// Importing the module registers the schemas below and their CPU kernels; a CUDA build (setup.py defines
// GOLF_WITH_CUDA and compiles csrc/*.cu) adds CUDA kernels for the same schemas. Only the ATen headers in
// use and torch/library.h are included, never torch/extension.h: the build is ~5x faster (platform.md).
//
// Ops:
//   gptq_block_update(Tensor W, Tensor Hinv, Tensor scales, int qmax) -> (Tensor Q, Tensor Err)
//     GPTQ's serial column sweep over one block; contract in gptq_update.h, reference in golf/ops/gptq.py.
#include <Python.h>

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "gptq_update.h"

// The CPU kernel must round after every multiply and add, as the torch loop does, so a contracted
// multiply-add (GCC contracts by default on targets with FMA) would break bit-equality with the reference.
#if defined(__GNUC__) && !defined(__clang__)
#define GOLF_NO_FP_CONTRACT __attribute__((optimize("fp-contract=off")))
#else
#define GOLF_NO_FP_CONTRACT
#endif

namespace golf {
namespace {

// One row of the block: w is a scratch copy of the row (length B), h the Hinv block with row stride ldh.
GOLF_NO_FP_CONTRACT void gptq_row(float* w, const float* h, int64_t ldh, int64_t B, float s, float qmax,
                                  int8_t* q_out, float* e_out) {
#if defined(__clang__)
#pragma clang fp contract(off)
#endif
  for (int64_t j = 0; j < B; ++j) {
    const float* hj = h + j * ldh;
    const float q = std::min(std::max(std::nearbyint(w[j] / s), -qmax), qmax);  // round half to even
    const float e = (w[j] - q * s) / hj[j];
    q_out[j] = static_cast<int8_t>(q);
    e_out[j] = e;
    for (int64_t k = j + 1; k < B; ++k) {
      const float p = e * hj[k];
      w[k] = w[k] - p;
    }
  }
}

std::tuple<at::Tensor, at::Tensor> gptq_block_update_cpu(const at::Tensor& W, const at::Tensor& Hinv,
                                                         const at::Tensor& scales, int64_t qmax) {
  check_gptq_block_update_args(W, Hinv, scales, qmax);
  TORCH_CHECK(W.device().is_cpu(), "gptq_block_update (CPU kernel): tensors must be on the CPU, got ", W.device());
  const int64_t rows = W.size(0), B = W.size(1);
  at::Tensor Q = at::empty({rows, B}, W.options().dtype(at::kChar));
  at::Tensor Err = at::empty({rows, B}, W.options());
  if (rows == 0 || B == 0) return {Q, Err};

  const float* w_ptr = W.data_ptr<float>();
  const float* h_ptr = Hinv.data_ptr<float>();
  const float* s_ptr = scales.data_ptr<float>();
  int8_t* q_ptr = Q.data_ptr<int8_t>();
  float* e_ptr = Err.data_ptr<float>();
  const int64_t ldw = W.stride(0), ldh = Hinv.stride(0);
  const float fq = static_cast<float>(qmax);
  // Rows are independent; one row costs ~B^2/2 multiply-adds, so a handful of rows per task amortizes
  // the scheduling.
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, B * B / 2));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> w(B);
    for (int64_t r = begin; r < end; ++r) {
      std::memcpy(w.data(), w_ptr + r * ldw, B * sizeof(float));
      gptq_row(w.data(), h_ptr, ldh, B, s_ptr[r], fq, q_ptr + r * B, e_ptr + r * B);
    }
  });
  return {Q, Err};
}

}  // namespace
}  // namespace golf

TORCH_LIBRARY_FRAGMENT(golf, m) {
  // Contract: csrc/gptq_update.h. Functional (W is not modified), so no alias annotations are needed.
  m.def("gptq_block_update(Tensor W, Tensor Hinv, Tensor scales, int qmax) -> (Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
}

TORCH_LIBRARY_IMPL(golf, CPU, m) { m.impl("gptq_block_update", &golf::gptq_block_update_cpu); }

// `from golf import _C` needs a module object; the ops are registered by the static initializers above.
static struct PyModuleDef golf_c_module = {
    PyModuleDef_HEAD_INIT, "_C",
    "golf's compiled ops; importing registers torch.ops.golf.* (see csrc/golf_ops.cpp)", -1, nullptr,
    nullptr, nullptr, nullptr, nullptr,
};

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&golf_c_module); }
