"""Fused LeakyReLU(slope)^2 MLP kernels for Hopper (sm_90, TMA descriptors), persistent grid.

Math (reference: golf.ops.mlp.leaky_relu2_mlp_ref):
    u    = x @ w_up^T                       x [M, D], w_up [F, D]          -> u [M, F]
    a    = leaky_relu(u, slope) = u (u > 0), slope*u (u <= 0)
    h    = a^2                              the down projection's input   -> h [M, F]
    y    = h @ w_down^T                     w_down [D, F]                  -> y [M, D]   (cuBLAS, in golf.ops)
    phi'(u) = d h / d u = 2u (u > 0), 2 slope^2 u (u <= 0)
    dpre = (dy @ w_down) * phi'(u)          dy [M, D]                      -> dpre [M, F]

Two kernels:
    _leaky_relu2_mlp_fwd_kernel  h = encode(leaky_relu(x @ w_up^T)^2): the up GEMM with the activation in its epilogue.
    _leaky_relu2_mlp_bwd_kernel  dpre = (dy @ w_down) * phi'(decode(h)): the backward GEMM with phi' in its epilogue.
Both read the weights in their stored layout (w_up as the K-major B operand through a transposed tile, w_down
[D, F] directly as [K, N]), so no weight is transposed or copied per call.

What backward keeps, and why (the tradeoff): the records' kernel writes the bf16 pre-activation u *and* h and
re-reads u in backward. Here only h is written. phi' is recovered from h and the sign of u:
    u > 0:  phi' = 2 sqrt(h)          u <= 0:  phi' = -2 |slope| sqrt(h)      (no division, so slope = 0 works)
and the sign of u is stored in the lowest mantissa bit of h itself (1: u > 0): h is rounded to the nearest
value whose last bit is the sign instead of to the nearest value. So h keeps 7 of bf16's 8 significand bits
(at most 1 ulp of error instead of 1/2 ulp) and saved activations are exactly one [M, F] tensor, with no mask
tensor, no extra store and an h that cuBLAS consumes as is (down projection, dW2). The reference rounds u to
bf16 and squares it (about 1 ulp of error in h before h is rounded again), so the kernel's h is no less
accurate than the reference's; sqrt halves the relative error that reaches phi'. Under fp32 (the CPU
interpreter) the bit is the last of fp32's 24 and the error is negligible.
A separate 1-bit mask would keep h's full precision at 1/16 more bytes, a second output and a bit-packing
epilogue; the tests' 2x error rule is what decided it is not needed.

Performance (one H200, M = 98,304, D = 512, F = 1536; benchmarks/RESULTS.md): the forward kernel takes 0.27 ms
(cuBLAS's plain x @ w_up^T: 0.25 ms), the backward kernel 0.36 ms (plain dy @ w_down: 0.25 ms). Triton 3.6 does
not warp-specialize this loop on Hopper, so each tile's epilogue, and in backward its TMA loads of h that wait
a memory round trip, runs after the tile's main loop instead of under the next tile's; that is the backward
kernel's gap to a plain GEMM. Two epilogue measures narrow it: both h loads issued before either store (one
round trip instead of two) and, as an option, the h tile prefetched into L2 before the main loop (PTX
`prefetch.global.L2`, no registers held), so that round trip ends at L2. On sm_90 golf.ops runs
golf.kernels.mlp_ws instead: warp-specialized Gluon kernels with the same math and bits, whose epilogues run
under another tile's main loop (backward 0.31 ms, forward 0.27).

Shapes/layout: all operands 2-D with unit last stride, 16-byte aligned rows and base (TMA); dtypes bf16 on
the GPU, fp32 or bf16 under TRITON_INTERPRET=1 (the interpreter's bf16 dot is wrong, so operands are upcast).
Accumulation is fp32. GPUs: compute capability 9.0+ (H100, H200). Design after the persistent TMA kernel of
modded-nanogpt's linear_relu_square (@andrewbriand, @jrauvola) as ported to the parameter-golf records; the
sign-in-h encoding and the strided weight operands are golf's.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

try:  # the interpreter's function type tells whether kernels run on the CPU (TRITON_INTERPRET=1 at import)
    from triton.runtime.interpreter import InterpretedFunction as _InterpretedFunction
except ImportError:  # pragma: no cover - very old triton
    _InterpretedFunction = ()

# Launch configs keyed by (D, F) = (model dim, hidden dim): block sizes, pipeline stages, warps and programs
# per SM for the forward (up GEMM) and backward (dpre GEMM) kernels, plus the backward's epilogue options.
# Chosen on one H200 (triton 3.6.0, torch 2.11.0+cu130) with `python benchmarks/bench_mlp.py --sweep`:
# 128x256x64 tiles, one program per SM, 4 stages forward / 3 backward (the most that fit in 227 KB of shared
# memory) were fastest at both shapes: fwd 0.273 / 0.391 ms at M = 98,304 for F = 1536 / 2048. 256x128 or
# 128x128 tiles, two programs per SM (128x128 or 64x256 tiles, so one program's epilogue overlaps the other's
# main loop), one full-width epilogue store, 2 stages, BLOCK_K 32 or 128, and h loaded before the main loop
# were 2-40 % slower. Backward epilogue (2026-11-28, fourth run): both h loads issued first and the h tile
# prefetched into L2 took the kernel from 0.395 to 0.361 ms at F = 1536; at F = 2048 the loads first alone
# from 0.526 to 0.504 (with the prefetch too: 0.507).
_FWD_CONFIG = dict(BLOCK_M=128, BLOCK_N=256, BLOCK_K=64, num_stages=4, num_warps=8, programs_per_sm=1)
_BWD_CONFIG = dict(BLOCK_M=128, BLOCK_N=256, BLOCK_K=64, num_stages=3, num_warps=8, programs_per_sm=1)
_DEFAULT_GPU_CONFIG = {"fwd": _FWD_CONFIG, "bwd": _BWD_CONFIG}
_CONFIGS: dict[tuple[int, int], dict[str, dict]] = {
    (512, 1536): {"fwd": _FWD_CONFIG, "bwd": dict(_BWD_CONFIG, prefetch_h=True)},
    (512, 2048): _DEFAULT_GPU_CONFIG,
}
# One small config under the interpreter: autotuning is unavailable there and small tiles keep CPU tests fast
# while still covering partial tiles in M, N and K.
_INTERPRETER_CONFIG = dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=16, num_stages=1, num_warps=4, programs_per_sm=1)
_INTERPRETER_NUM_PROGRAMS = 3  # fewer programs than tiles, so the persistent loop runs several tiles each

_NUM_SMS: dict[int, int] = {}


@triton.jit
def _tile_origin(tile_id, num_pid_n, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    # Row-major tile order: the programs running at one time share a row block of the A operand (read from
    # HBM once) and the whole weight stays in L2.
    return (tile_id // num_pid_n) * BLOCK_M, (tile_id % num_pid_n) * BLOCK_N


@triton.jit
def _encode_h(u, slope, OUT_BF16: tl.constexpr):
    """leaky_relu(u)^2 rounded to the output dtype with the sign of u in the last significand bit."""
    pos = u > 0
    a = tl.where(pos, u, u * slope)
    bits = (a * a).to(tl.int32, bitcast=True)  # h >= 0: its fp32 bit pattern orders like its value
    sign = pos.to(tl.int32)
    if OUT_BF16:
        # Nearest bf16 (top 16 bits) whose last bit equals `sign`: candidates are 2 bf16 ulps apart.
        top = ((bits + 65536 - sign * 65536) >> 17) * 2 + sign
        return top.to(tl.int16).to(tl.bfloat16, bitcast=True)
    else:
        return ((bits & -2) | sign).to(tl.float32, bitcast=True)


@triton.jit
def _activation_grad(h, abs_slope, H_BF16: tl.constexpr):
    """phi'(u) from the encoded h: 2 sqrt(h) where the sign bit says u > 0, else -2 |slope| sqrt(h)."""
    if H_BF16:
        pos = (h.to(tl.int16, bitcast=True) & 1) != 0
    else:
        pos = (h.to(tl.int32, bitcast=True) & 1) != 0
    root = tl.sqrt(h.to(tl.float32))
    return 2.0 * root * tl.where(pos, 1.0, -abs_slope)


@triton.jit
def _leaky_relu2_mlp_fwd_kernel(
    x_desc, w_desc, h_desc, M, N, K, slope, num_programs,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr, OUT_BF16: tl.constexpr,
):
    """h[M, N] = encode(leaky_relu(x[M, K] @ w[N, K]^T)^2); each program walks output tiles with stride num_programs."""
    start = tl.program_id(0)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_tiles = tl.cdiv(M, BLOCK_M) * num_pid_n
    k_tiles = tl.cdiv(K, BLOCK_K)
    # The epilogue recomputes its tile from its own counter: sharing the mainloop's values across the
    # flattened loop would tie the next tile's prefetch to this tile's epilogue.
    tile_id_c = start - num_programs
    for tile_id in tl.range(start, num_tiles, num_programs, flatten=True):
        off_m, off_n = _tile_origin(tile_id, num_pid_n, BLOCK_M, BLOCK_N)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for ki in range(k_tiles):
            a = x_desc.load([off_m, ki * BLOCK_K])
            b = w_desc.load([off_n, ki * BLOCK_K])
            if UPCAST:
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc = tl.dot(a, b.T, acc)
        tile_id_c += num_programs
        off_m, off_n = _tile_origin(tile_id_c, num_pid_n, BLOCK_M, BLOCK_N)
        # Two half-width stores halve the epilogue's shared-memory staging buffer (room for a 4th stage).
        acc = tl.permute(tl.reshape(acc, (BLOCK_M, 2, BLOCK_N // 2)), (0, 2, 1))  # [BM, BN/2, 2]
        acc0, acc1 = tl.split(acc)
        h_desc.store([off_m, off_n], _encode_h(acc0, slope, OUT_BF16))
        h_desc.store([off_m, off_n + BLOCK_N // 2], _encode_h(acc1, slope, OUT_BF16))


@triton.jit
def _prefetch_tile_to_l2(ptr, stride, off_m, off_n, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                         LINE: tl.constexpr):
    """Ask L2 for a [BLOCK_M, BLOCK_N] tile (one prefetch per LINE elements of a row; rows and columns
    clamped into the tensor, so no address is outside it). No registers are held: the data is wanted later."""
    lines = tl.arange(0, BLOCK_M * (BLOCK_N // LINE))  # 1-D, so that no two threads prefetch the same line
    rows = tl.minimum(off_m + lines // (BLOCK_N // LINE), M - 1).to(tl.int64)
    cols = tl.minimum(off_n + (lines % (BLOCK_N // LINE)) * LINE, N - 1)
    tl.inline_asm_elementwise("prefetch.global.L2 [$1]; mov.u32 $0, 0;", "=r,l",
                              [ptr + rows * stride + cols], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _leaky_relu2_mlp_bwd_kernel(
    dy_desc, w_desc, h_desc, g_desc, h_ptr, stride_h, M, N, K, abs_slope, num_programs,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr, H_BF16: tl.constexpr, PREFETCH_H: tl.constexpr, H_LINE: tl.constexpr,
):
    """dpre[M, N] = (dy[M, K] @ w[K, N]) * phi'(h[M, N]); same persistent walk as the forward kernel.

    PREFETCH_H: before the tile's main loop, prefetch its h tile into L2, so the epilogue's h loads wait for
    L2 rather than HBM. Both h loads are issued before either half's math and store: one memory round trip
    instead of two (0.395 -> 0.36 ms at F = 1536 on the H200)."""
    start = tl.program_id(0)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_tiles = tl.cdiv(M, BLOCK_M) * num_pid_n
    k_tiles = tl.cdiv(K, BLOCK_K)
    tile_id_c = start - num_programs
    for tile_id in tl.range(start, num_tiles, num_programs, flatten=True):
        off_m, off_n = _tile_origin(tile_id, num_pid_n, BLOCK_M, BLOCK_N)
        if PREFETCH_H:
            _prefetch_tile_to_l2(h_ptr, stride_h, off_m, off_n, M, N, BLOCK_M, BLOCK_N, H_LINE)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for ki in range(k_tiles):
            a = dy_desc.load([off_m, ki * BLOCK_K])
            b = w_desc.load([ki * BLOCK_K, off_n])
            if UPCAST:
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc = tl.dot(a, b, acc)
        tile_id_c += num_programs
        off_m, off_n = _tile_origin(tile_id_c, num_pid_n, BLOCK_M, BLOCK_N)
        # The h loads wait a memory round trip (both issued first: one trip): the cost of this epilogue.
        acc = tl.permute(tl.reshape(acc, (BLOCK_M, 2, BLOCK_N // 2)), (0, 2, 1))  # [BM, BN/2, 2]
        acc0, acc1 = tl.split(acc)
        h0 = h_desc.load([off_m, off_n])
        h1 = h_desc.load([off_m, off_n + BLOCK_N // 2])
        g_desc.store([off_m, off_n], (acc0 * _activation_grad(h0, abs_slope, H_BF16)).to(g_desc.dtype))
        g_desc.store([off_m, off_n + BLOCK_N // 2], (acc1 * _activation_grad(h1, abs_slope, H_BF16)).to(g_desc.dtype))


# Triton decides at decoration time whether a kernel is interpreted (TRITON_INTERPRET=1 when this module was
# imported); the flag mirrors that decision so callers never re-read the environment.
INTERPRETED = bool(_InterpretedFunction) and isinstance(_leaky_relu2_mlp_fwd_kernel, _InterpretedFunction)


def is_interpreted() -> bool:
    """True when the kernels run on the CPU under Triton's interpreter."""
    return INTERPRETED


def launch_config(d_model: int, d_hidden: int, direction: str) -> dict:
    """The launch config used for a (D, F) shape; `direction` is "fwd" or "bwd"."""
    if direction not in ("fwd", "bwd"):
        raise ValueError(f"direction={direction!r}: use 'fwd' or 'bwd'")
    if is_interpreted():
        return dict(_INTERPRETER_CONFIG)
    return dict(_CONFIGS.get((d_model, d_hidden), _DEFAULT_GPU_CONFIG)[direction])


def _num_programs(device: torch.device, num_tiles: int, programs_per_sm: int) -> int:
    if is_interpreted():
        return max(1, min(_INTERPRETER_NUM_PROGRAMS, num_tiles))
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _NUM_SMS:
        _NUM_SMS[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return max(1, min(_NUM_SMS[index] * programs_per_sm, num_tiles))


def _split_config(config: dict) -> tuple[int, int, int, int, dict]:
    cfg = dict(config)
    try:
        blocks = cfg.pop("BLOCK_M"), cfg.pop("BLOCK_N"), cfg.pop("BLOCK_K")
    except KeyError as exc:
        raise ValueError(f"launch config {config} lacks {exc}; give BLOCK_M, BLOCK_N, BLOCK_K") from None
    per_sm = cfg.pop("programs_per_sm", 1)
    return (*blocks, per_sm, cfg)


def _check_operand(name: str, t: torch.Tensor, shape: tuple[int, int], dtype: torch.dtype) -> None:
    if t.dim() != 2 or tuple(t.shape) != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {tuple(t.shape)}")
    if t.dtype != dtype:
        raise ValueError(f"{name}: expected dtype {dtype}, got {t.dtype}; cast all operands to one dtype")
    if t.stride(1) != 1 or (t.stride(0) * t.element_size()) % 16 or t.data_ptr() % 16:
        raise ValueError(
            f"{name}: TMA needs unit last stride and 16-byte aligned rows and base, got strides {t.stride()}"
            f" at address {t.data_ptr()}; pass a contiguous tensor whose last dim is a multiple of 8 (bf16)"
        )


def _check_first(name: str, t: torch.Tensor) -> None:
    allowed = (torch.bfloat16, torch.float32) if is_interpreted() else (torch.bfloat16,)
    if t.dim() != 2:
        raise ValueError(f"{name}: expected a 2-D [M, D] tensor, got shape {tuple(t.shape)}; flatten leading dims")
    if t.dtype not in allowed:
        raise ValueError(f"leaky_relu2_mlp kernels take {allowed}, got {name} in {t.dtype}")


def _descriptor(t: torch.Tensor, block: list[int]) -> TensorDescriptor:
    return TensorDescriptor(t, list(t.shape), list(t.stride()), block)


def leaky_relu2_mlp_fwd(
    x: torch.Tensor, w_up: torch.Tensor, slope: float, out: torch.Tensor | None = None, config: dict | None = None
) -> torch.Tensor:
    """h = leaky_relu(x @ w_up^T, slope)^2 with the sign of x @ w_up^T in h's last significand bit.

    x: [M, D]; w_up: [F, D]; out: optional preallocated [M, F]; config: a launch config overriding the
    `_CONFIGS` table (benchmarks/bench_mlp.py --sweep). Returns h [M, F] in x's dtype.
    """
    _check_first("x", x)
    M, D = x.shape
    F = w_up.shape[0]
    _check_operand("x", x, (M, D), x.dtype)
    _check_operand("w_up", w_up, (F, D), x.dtype)
    h = torch.empty((M, F), device=x.device, dtype=x.dtype) if out is None else out
    _check_operand("out", h, (M, F), x.dtype)
    if M == 0:
        return h
    bm, bn, bk, per_sm, cfg = _split_config(config or launch_config(D, F, "fwd"))
    programs = _num_programs(x.device, triton.cdiv(M, bm) * triton.cdiv(F, bn), per_sm)
    _leaky_relu2_mlp_fwd_kernel[(programs,)](
        _descriptor(x, [bm, bk]), _descriptor(w_up, [bn, bk]), _descriptor(h, [bm, bn // 2]),
        M, F, D, float(slope), programs,
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
        UPCAST=is_interpreted(), OUT_BF16=x.dtype == torch.bfloat16, **cfg,
    )
    return h


def leaky_relu2_mlp_bwd(
    dy: torch.Tensor,
    w_down: torch.Tensor,
    h: torch.Tensor,
    slope: float,
    out: torch.Tensor | None = None,
    config: dict | None = None,
) -> torch.Tensor:
    """dpre = (dy @ w_down) * phi'(u), phi' recovered from h as written by leaky_relu2_mlp_fwd.

    dy: [M, D]; w_down: [D, F] (its stored layout); h: [M, F]; out: optional [M, F]; config: as in
    leaky_relu2_mlp_fwd. Returns dpre [M, F].
    """
    _check_first("dy", dy)
    M, D = dy.shape
    F = w_down.shape[1]
    _check_operand("dy", dy, (M, D), dy.dtype)
    _check_operand("w_down", w_down, (D, F), dy.dtype)
    _check_operand("h", h, (M, F), dy.dtype)
    g = torch.empty((M, F), device=dy.device, dtype=dy.dtype) if out is None else out
    _check_operand("out", g, (M, F), dy.dtype)
    if M == 0:
        return g
    bm, bn, bk, per_sm, cfg = _split_config(config or launch_config(D, F, "bwd"))
    prefetch = bool(cfg.pop("prefetch_h", False)) and not is_interpreted()  # inline PTX: the GPU only
    programs = _num_programs(dy.device, triton.cdiv(M, bm) * triton.cdiv(F, bn), per_sm)
    _leaky_relu2_mlp_bwd_kernel[(programs,)](
        _descriptor(dy, [bm, bk]), _descriptor(w_down, [bk, bn]),
        _descriptor(h, [bm, bn // 2]), _descriptor(g, [bm, bn // 2]), h, h.stride(0),
        M, F, D, abs(float(slope)), programs,
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
        UPCAST=is_interpreted(), H_BF16=h.dtype == torch.bfloat16, PREFETCH_H=prefetch,
        H_LINE=128 // h.element_size(), **cfg,
    )
    return g
