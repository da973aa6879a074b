"""Batched Newton–Schulz kernels for Muon: one bank of same-shape matrices per launch (techniques.md §3.2, §3.5).

Math (reference: golf.ops.newton_schulz.newton_schulz_ref). For each matrix of G [batch, r, c] work in the wide
orientation X [m, n] = G (or G^T when r > c), m <= n, and with s = 1 / (||X||_F + eps):
    X0 = s * bf16(X)
    each iteration with its tuple (a, b, c):   A = X X^T;   B = b A + c A A;   X <- a X + B X
Three kernels, each batched over the bank (grid axis 1 = matrix index):
    _ns_prepare_kernel  X0 = bf16(G) in the wide orientation (tall inputs read through transposed strides) plus
                        per-tile sums of squares of the bf16 values, from which every later program recomputes s.
    _ns_sym_kernel      C = alpha Y Y^T + beta Y for Y [m, k] (beta only for square symmetric Y). A = X X^T is
                        (alpha=1, beta=0); B = b A + c A A is (Y=A, alpha=c, beta=b) because A A = A A^T for a
                        symmetric A. Only tiles on or above the diagonal are computed (nt(nt+1)/2 of nt^2) and
                        stored twice (at their place and mirrored), so the output is exactly symmetric and close
                        to half of the product's FLOPs are skipped. Lower-triangle programs exit at once.
    _ns_update_kernel   X' = a X + B X, written to any strides (the last iteration writes G's orientation).
The normalization is folded into the first iteration instead of a separate pass: its A kernel multiplies by s^2
and its update kernel by s (both linear in X0), so X0 itself stays the unscaled bf16(G). The reference instead
rounds s*X0 to bf16 and computes its norm in bf16; the kernels' s is the fp32 norm of the bf16 values, which is
the more accurate of the two (the tests' 2x rule measures both against an fp64 reference).

Precision: operands bf16, accumulation fp32 (tl.dot), epilogues in fp32, every stored intermediate (X, A, B)
rounded once to bf16, where the reference rounds A A and b A separately before adding. Under TRITON_INTERPRET=1
(CPU tests) operands are upcast to fp32 before tl.dot (the interpreter's bf16 dot is wrong, platform.md), and
fp32 buffers are allowed so indexing and math can be checked to fp32 precision.

Shapes/layout: any strides (tall inputs are never copied transposed); batch, rows and cols of any size >= 1.
GPUs: any CUDA GPU Triton supports with bf16 tl.dot (sm_80+); launch configs chosen for the H100/H200.
`newton_schulz_triton(..., cuda_graph=True)` replays the whole launch sequence of a bank as one CUDA graph from
the second call of a shape on (input copied into the graph's buffer, result copied out): at the 8-way shard
sizes the 16 launches per call are otherwise launch-bound (performance.md §A.6, §G.2).
`newton_schulz_triton_banks` does the same for several banks at once, each bank on its own stream inside the one
graph, so that the four core11 banks overlap instead of each leaving most of the GPU idle.
Design after modded-nanogpt's XXT / ba_plus_cAA kernels (@byronxu99: upper-triangle tiles written twice, batch
stride); the folded normalization, the strided tall handling, the graph replay and the concurrent banks are
golf's. Measured and dropped (benchmarks/RESULTS.md): Gram Newton–Schulz (performance.md §D) in fp16, compiled,
took 0.41-0.80 ms per core11 bank against these kernels' 0.19-0.43; a grid of upper-triangle programs only
(no early exits) with transposed mirror stores made the four banks slower (1.21 vs 1.08 ms together).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict

import torch
import triton
import triton.language as tl

try:  # the interpreter's function type tells whether kernels run on the CPU (TRITON_INTERPRET=1 at import)
    from triton.runtime.interpreter import InterpretedFunction as _InterpretedFunction
except ImportError:  # pragma: no cover - very old triton
    _InterpretedFunction = ()

Schedule = list[tuple[float, float, float]]

# Launch configs by (kernel, batch, rows, cols) as the launchers see them: the fastest candidates of
# `python benchmarks/bench_ns.py --sweep` on one H200 (2026-11-28, triton 3.6; per-kernel medians with the L2
# flushed). Shapes not listed use `default_config`'s rule.
_CONFIGS: dict[tuple[str, int, int, int], dict] = {
    ('sym', 22, 512, 512): {'BLOCK': 64, 'BLOCK_K': 64, 'num_warps': 4, 'num_stages': 4},  # 0.0376 ms
    ('update', 22, 512, 512):  # 0.0242 ms
        {'BLOCK_M': 128, 'BLOCK_N': 128, 'BLOCK_K': 64, 'num_warps': 8, 'num_stages': 3},
    ('sym', 22, 256, 512): {'BLOCK': 64, 'BLOCK_K': 128, 'num_warps': 4, 'num_stages': 3},  # 0.0170 ms
    ('sym', 22, 256, 256): {'BLOCK': 64, 'BLOCK_K': 128, 'num_warps': 4, 'num_stages': 3},  # 0.0164 ms
    ('update', 22, 256, 512):  # 0.0136 ms
        {'BLOCK_M': 128, 'BLOCK_N': 256, 'BLOCK_K': 64, 'num_warps': 8, 'num_stages': 3},
    ('sym', 11, 512, 1536): {'BLOCK': 64, 'BLOCK_K': 64, 'num_warps': 4, 'num_stages': 4},  # 0.0299 ms
    ('sym', 11, 512, 512): {'BLOCK': 64, 'BLOCK_K': 64, 'num_warps': 4, 'num_stages': 4},  # 0.0234 ms
    ('update', 11, 512, 1536):  # 0.0280 ms
        {'BLOCK_M': 128, 'BLOCK_N': 128, 'BLOCK_K': 64, 'num_warps': 8, 'num_stages': 3},
    ('sym', 3, 512, 512): {'BLOCK': 64, 'BLOCK_K': 128, 'num_warps': 4, 'num_stages': 3},  # 0.0150 ms
    ('update', 3, 512, 512):  # 0.0097 ms
        {'BLOCK_M': 64, 'BLOCK_N': 128, 'BLOCK_K': 64, 'num_warps': 4, 'num_stages': 4},
    ('sym', 3, 256, 512): {'BLOCK': 32, 'BLOCK_K': 64, 'num_warps': 2, 'num_stages': 4},  # 0.0099 ms
    ('sym', 3, 256, 256): {'BLOCK': 32, 'BLOCK_K': 64, 'num_warps': 2, 'num_stages': 4},  # 0.0087 ms
    ('update', 3, 256, 512):  # 0.0077 ms
        {'BLOCK_M': 64, 'BLOCK_N': 64, 'BLOCK_K': 64, 'num_warps': 4, 'num_stages': 4},
    ('sym', 2, 512, 1536): {'BLOCK': 64, 'BLOCK_K': 128, 'num_warps': 4, 'num_stages': 3},  # 0.0150 ms
    ('sym', 2, 512, 512): {'BLOCK': 64, 'BLOCK_K': 64, 'num_warps': 4, 'num_stages': 4},  # 0.0115 ms
    ('update', 2, 512, 1536):  # 0.0115 ms
        {'BLOCK_M': 64, 'BLOCK_N': 64, 'BLOCK_K': 64, 'num_warps': 4, 'num_stages': 3},
}
# Small tiles under the interpreter keep CPU tests fast and make the test shapes span several tiles (partial
# tiles, off-diagonal mirrors). One config only: autotuning does not work in the interpreter.
_INTERPRETER_CONFIGS = {
    "prepare": dict(BLOCK_M=16, BLOCK_N=16, num_warps=1, num_stages=1),
    "sym": dict(BLOCK=16, BLOCK_K=16, num_warps=1, num_stages=1),
    "update": dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=16, num_warps=1, num_stages=1),
}
_MAX_PBLOCK = 1024  # partial sums are summed in chunks of at most this many
_NUM_SMS: dict[int, int] = {}


@triton.jit
def _norm_scale(partial_ptr, b, num_partials, eps, PBLOCK: tl.constexpr):
    """s = 1 / (||X_b||_F + eps) from matrix b's per-tile sums of squares (same order in every program)."""
    offs = tl.arange(0, PBLOCK)
    acc = tl.zeros((PBLOCK,), dtype=tl.float32)
    for start in range(0, num_partials, PBLOCK):
        idx = start + offs
        acc += tl.load(partial_ptr + b * num_partials + idx, mask=idx < num_partials, other=0.0)
    return 1.0 / (tl.sqrt(tl.sum(acc, axis=0)) + eps)


@triton.jit
def _ns_prepare_kernel(
    g_ptr, x_ptr, partial_ptr, M, N,
    stride_gb, stride_gm, stride_gn, stride_xb, stride_xm, stride_xn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """X[b] = X's dtype(G[b]) (G given through the strides of its wide view); partial[b, tile] = sum of X^2."""
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    num_n = tl.cdiv(N, BLOCK_N)
    rm = (pid // num_n) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = (pid % num_n) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (rm[:, None] < M) & (rn[None, :] < N)
    g = tl.load(g_ptr + b * stride_gb + rm[:, None] * stride_gm + rn[None, :] * stride_gn, mask=mask, other=0.0)
    x = g.to(x_ptr.dtype.element_ty)
    tl.store(x_ptr + b * stride_xb + rm[:, None] * stride_xm + rn[None, :] * stride_xn, x, mask=mask)
    xf = x.to(tl.float32)
    tl.store(partial_ptr + b * tl.num_programs(0) + pid, tl.sum(tl.sum(xf * xf, axis=1), axis=0))


@triton.jit
def _ns_sym_kernel(
    y_ptr, c_ptr, partial_ptr, M, K, num_partials, alpha, beta, eps,
    stride_yb, stride_ym, stride_yk, stride_cb, stride_cm, stride_cn,
    ADD_Y: tl.constexpr, NORMALIZE: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK: tl.constexpr, BLOCK_K: tl.constexpr, PBLOCK: tl.constexpr,
):
    """C[b] = alpha s^2 Y[b] Y[b]^T (+ beta Y[b]); s = 1 unless NORMALIZE. Upper-triangle tiles only, mirrored."""
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    nt = tl.cdiv(M, BLOCK)
    ti = pid // nt
    tj = pid % nt
    if ti > tj:  # the mirror of tile (tj, ti), which that program stores
        return
    offs_i = ti * BLOCK + tl.arange(0, BLOCK)
    offs_j = tj * BLOCK + tl.arange(0, BLOCK)
    offs_k = tl.arange(0, BLOCK_K)
    y_b = y_ptr + b * stride_yb
    acc = tl.zeros((BLOCK, BLOCK), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + offs_k
        lhs = tl.load(y_b + offs_i[:, None] * stride_ym + kk[None, :] * stride_yk,
                      mask=(offs_i[:, None] < M) & (kk[None, :] < K), other=0.0)  # Y[i-block, k-block]
        rhs = tl.load(y_b + offs_j[None, :] * stride_ym + kk[:, None] * stride_yk,
                      mask=(offs_j[None, :] < M) & (kk[:, None] < K), other=0.0)  # Y[j-block, k-block]^T
        if UPCAST:
            lhs = lhs.to(tl.float32)
            rhs = rhs.to(tl.float32)
        acc = tl.dot(lhs, rhs, acc)
    scale = alpha
    if NORMALIZE:
        s = _norm_scale(partial_ptr, b, num_partials, eps, PBLOCK)
        scale = alpha * s * s
    acc = acc * scale
    mask = (offs_i[:, None] < M) & (offs_j[None, :] < M)
    if ADD_Y:
        y_tile = tl.load(y_b + offs_i[:, None] * stride_ym + offs_j[None, :] * stride_yk, mask=mask, other=0.0)
        acc += beta * y_tile.to(tl.float32)
    out = acc.to(c_ptr.dtype.element_ty)
    c_b = c_ptr + b * stride_cb
    # Only entries on or above the diagonal are stored, each at its place and mirrored: a diagonal tile's two
    # halves come from separate dot-product sums that may round differently, and C must be exactly symmetric.
    # (For tiles above the diagonal the extra condition is always true.)
    mask = mask & (offs_i[:, None] <= offs_j[None, :])
    tl.store(c_b + offs_i[:, None] * stride_cm + offs_j[None, :] * stride_cn, out, mask=mask)
    tl.store(c_b + offs_j[None, :] * stride_cm + offs_i[:, None] * stride_cn, out, mask=mask)


@triton.jit
def _ns_update_kernel(
    b_ptr, x_ptr, o_ptr, partial_ptr, M, N, num_partials, a_coef, eps,
    stride_bb, stride_bm, stride_bk, stride_xb, stride_xm, stride_xn, stride_ob, stride_om, stride_on,
    NORMALIZE: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PBLOCK: tl.constexpr,
):
    """O[b] = s (a X[b] + B[b] X[b]) for B [M, M], X [M, N]; s = 1 unless NORMALIZE."""
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    num_n = tl.cdiv(N, BLOCK_N)
    offs_m = (pid // num_n) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = (pid % num_n) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    b_b = b_ptr + b * stride_bb
    x_b = x_ptr + b * stride_xb
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, M, BLOCK_K):
        kk = k0 + offs_k
        lhs = tl.load(b_b + offs_m[:, None] * stride_bm + kk[None, :] * stride_bk,
                      mask=(offs_m[:, None] < M) & (kk[None, :] < M), other=0.0)
        rhs = tl.load(x_b + kk[:, None] * stride_xm + offs_n[None, :] * stride_xn,
                      mask=(kk[:, None] < M) & (offs_n[None, :] < N), other=0.0)
        if UPCAST:
            lhs = lhs.to(tl.float32)
            rhs = rhs.to(tl.float32)
        acc = tl.dot(lhs, rhs, acc)
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    x_tile = tl.load(x_b + offs_m[:, None] * stride_xm + offs_n[None, :] * stride_xn, mask=mask, other=0.0)
    acc += a_coef * x_tile.to(tl.float32)
    if NORMALIZE:
        acc = acc * _norm_scale(partial_ptr, b, num_partials, eps, PBLOCK)
    o_b = o_ptr + b * stride_ob
    tl.store(o_b + offs_m[:, None] * stride_om + offs_n[None, :] * stride_on, acc.to(o_ptr.dtype.element_ty), mask=mask)


# Triton decides at decoration time whether a kernel is interpreted (TRITON_INTERPRET=1 when this module was
# imported); the flag mirrors that decision so callers never re-read the environment.
INTERPRETED = bool(_InterpretedFunction) and isinstance(_ns_sym_kernel, _InterpretedFunction)


def is_interpreted() -> bool:
    """True when the kernels run on the CPU under Triton's interpreter."""
    return INTERPRETED


# ---------------------------------------------------------------------------------------------------------
# Launch configs.


def _pow2_at_least(x: int, floor: int = 16) -> int:
    return max(floor, triton.next_power_of_2(max(int(x), 1)))


def _num_sms(device: torch.device) -> int:
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _NUM_SMS:
        _NUM_SMS[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _NUM_SMS[index]


def default_config(kind: str, batch: int, rows: int, cols: int, sms: int) -> dict:
    """128-wide tiles while they give at least one program per SM, else 64-wide ones (the 8-way shards and
    the 256-row banks would otherwise leave most of the GPU idle); never wider than the matrix needs."""
    if kind == "prepare":
        return dict(BLOCK_M=32, BLOCK_N=128, num_warps=4, num_stages=1)
    if kind == "sym":  # rows = M, cols = K
        nt = triton.cdiv(rows, 128)
        block = 128 if batch * nt * (nt + 1) // 2 >= sms else 64
        block = min(block, _pow2_at_least(rows))
        return dict(BLOCK=block, BLOCK_K=min(64, _pow2_at_least(cols)), num_warps=8 if block == 128 else 4,
                    num_stages=3 if block == 128 else 4)
    # update: rows = M (also the K of the product), cols = N
    bm, bn = 128, 128
    if batch * triton.cdiv(rows, bm) * triton.cdiv(cols, bn) < sms:
        bm = 64
    if batch * triton.cdiv(rows, bm) * triton.cdiv(cols, bn) < sms:
        bn = 64
    bm, bn = min(bm, _pow2_at_least(rows)), min(bn, _pow2_at_least(cols))
    return dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=min(64, _pow2_at_least(rows)),
                num_warps=8 if bm * bn >= 128 * 128 else 4, num_stages=3)


def launch_config(kind: str, batch: int, rows: int, cols: int, device: torch.device | None = None) -> dict:
    """The config a launcher uses: kind "prepare" (rows, cols of X), "sym" (M, K of Y) or "update" (M, N of X)."""
    if kind not in _INTERPRETER_CONFIGS:
        raise ValueError(f"kind={kind!r}: use one of {sorted(_INTERPRETER_CONFIGS)}")
    if INTERPRETED:
        return dict(_INTERPRETER_CONFIGS[kind])
    key = (kind, batch, rows, cols)
    if key in _CONFIGS:
        return dict(_CONFIGS[key])
    return default_config(kind, batch, rows, cols, _num_sms(device or torch.device("cuda")))


# ---------------------------------------------------------------------------------------------------------
# Host launchers. They check shapes and dtypes, never track autograd, and accept preallocated outputs.


def _check_dtype(name: str, t: torch.Tensor) -> None:
    allowed = (torch.bfloat16, torch.float32) if INTERPRETED else (torch.bfloat16,)
    if t.dtype not in allowed:
        raise ValueError(f"{name}: dtype {t.dtype} is not one of {allowed} (fp32 only under TRITON_INTERPRET=1)")


def _check_3d(name: str, t: torch.Tensor) -> None:
    if t.dim() != 3:
        raise ValueError(f"{name}: expected a bank [batch, rows, cols], got shape {tuple(t.shape)}")
    if t.device.type != "cuda" and not INTERPRETED:
        raise ValueError(f"{name}: on {t.device}; the kernels need a CUDA tensor (or TRITON_INTERPRET=1 on the CPU)")


def _check_out(name: str, out: torch.Tensor, shape: tuple[int, ...], like: torch.Tensor) -> None:
    if tuple(out.shape) != shape or out.dtype != like.dtype or out.device != like.device:
        raise ValueError(
            f"{name}: got {tuple(out.shape)} {out.dtype} on {out.device}, "
            f"expected {shape} {like.dtype} on {like.device}"
        )


def _split(config: dict) -> tuple[dict, dict]:
    """(block sizes, launch options) of a config."""
    cfg = dict(config)
    opts = {k: cfg.pop(k) for k in ("num_warps", "num_stages") if k in cfg}
    return cfg, opts


def _pblock(num_partials: int) -> int:
    return min(_MAX_PBLOCK, _pow2_at_least(num_partials, floor=2))


def ns_prepare(G: torch.Tensor, dtype: torch.dtype = torch.bfloat16, out: torch.Tensor | None = None,
               partial: torch.Tensor | None = None, config: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """X0 = dtype(G) in the wide orientation and its per-tile sums of squares.

    G: [batch, r, c], any float dtype and strides. Returns X0 [batch, m, n] (m = min(r, c), n = max(r, c); G^T when
    r > c) and partial [batch, num_tiles] fp32 with sum(partial[b]) = ||X0[b]||_F^2.
    """
    _check_3d("G", G)
    batch, r, c = G.shape
    Gw = G.mT if r > c else G  # [batch, m, n] view
    m, n = Gw.shape[1], Gw.shape[2]
    X = torch.empty((batch, m, n), device=G.device, dtype=dtype) if out is None else out
    _check_dtype("X0", X)
    _check_out("ns_prepare out", X, (batch, m, n), X)
    blocks, opts = _split(config or launch_config("prepare", batch, m, n, G.device))
    tiles = triton.cdiv(m, blocks["BLOCK_M"]) * triton.cdiv(n, blocks["BLOCK_N"])
    if partial is None:
        partial = torch.empty((batch, tiles), device=G.device, dtype=torch.float32)
    if tuple(partial.shape) != (batch, tiles) or partial.dtype != torch.float32 or not partial.is_contiguous():
        raise ValueError(f"ns_prepare partial: expected contiguous fp32 {(batch, tiles)}, got {tuple(partial.shape)}")
    _ns_prepare_kernel[(tiles, batch)](Gw, X, partial, m, n, *Gw.stride(), *X.stride(), **blocks, **opts)
    return X, partial


def xxt(X: torch.Tensor, out: torch.Tensor | None = None, *, alpha: float = 1.0, partial: torch.Tensor | None = None,
        eps: float = 1e-7, config: dict | None = None) -> torch.Tensor:
    """A = alpha X X^T per matrix, exactly symmetric; with `partial` (from ns_prepare) also times s^2.

    X: [batch, m, k]; out: optional [batch, m, m] of X's dtype. Returns A.
    """
    _check_3d("X", X)
    _check_dtype("X", X)
    batch, m, k = X.shape
    out = torch.empty((batch, m, m), device=X.device, dtype=X.dtype) if out is None else out
    _check_out("xxt out", out, (batch, m, m), X)
    return _launch_sym(X, out, alpha, 0.0, partial, eps, config)


def sym_update(A: torch.Tensor, b: float, c: float, out: torch.Tensor | None = None, *,
               config: dict | None = None) -> torch.Tensor:
    """B = b A + c A A for symmetric A [batch, m, m] (A A computed as A A^T, one triangle). Returns B."""
    _check_3d("A", A)
    _check_dtype("A", A)
    batch, m, m2 = A.shape
    if m != m2:
        raise ValueError(f"sym_update: A must be square [batch, m, m], got {tuple(A.shape)}")
    out = torch.empty_like(A) if out is None else out
    _check_out("sym_update out", out, tuple(A.shape), A)
    return _launch_sym(A, out, c, b, None, 0.0, config)


def _launch_sym(Y, out, alpha, beta, partial, eps, config):
    batch, m, k = Y.shape
    blocks, opts = _split(config or launch_config("sym", batch, m, k, Y.device))
    nt = triton.cdiv(m, blocks["BLOCK"])
    num_partials = partial.shape[1] if partial is not None else 1
    _ns_sym_kernel[(nt * nt, batch)](
        Y, out, partial if partial is not None else out, m, k, num_partials, float(alpha), float(beta), float(eps),
        *Y.stride(), *out.stride(),
        ADD_Y=beta != 0.0, NORMALIZE=partial is not None, UPCAST=INTERPRETED, PBLOCK=_pblock(num_partials),
        **blocks, **opts,
    )
    return out


def ns_step(X: torch.Tensor, B: torch.Tensor, a: float, out: torch.Tensor | None = None, *,
            partial: torch.Tensor | None = None, eps: float = 1e-7, config: dict | None = None) -> torch.Tensor:
    """X' = a X + B X per matrix; with `partial` (from ns_prepare) the result is also multiplied by s.

    X: [batch, m, n]; B: [batch, m, m]; out: optional [batch, m, n] of X's dtype, any strides (a transposed
    view writes the other orientation), not overlapping X or B. Returns out.
    """
    _check_3d("X", X)
    _check_dtype("X", X)
    batch, m, n = X.shape
    _check_out("ns_step B", B, (batch, m, m), X)
    out = torch.empty_like(X) if out is None else out
    if tuple(out.shape) != (batch, m, n) or out.device != X.device:
        raise ValueError(f"ns_step out: got {tuple(out.shape)} on {out.device}, expected {(batch, m, n)} on {X.device}")
    blocks, opts = _split(config or launch_config("update", batch, m, n, X.device))
    tiles = triton.cdiv(m, blocks["BLOCK_M"]) * triton.cdiv(n, blocks["BLOCK_N"])
    num_partials = partial.shape[1] if partial is not None else 1
    _ns_update_kernel[(tiles, batch)](
        B, X, out, partial if partial is not None else X, m, n, num_partials, float(a), float(eps),
        *B.stride(), *X.stride(), *out.stride(),
        NORMALIZE=partial is not None, UPCAST=INTERPRETED, PBLOCK=_pblock(num_partials), **blocks, **opts,
    )
    return out


class _Workspace:
    """The buffers of one NS call: X ping-pong [batch, m, n], A and B [batch, m, m], the output [batch, r, c]."""

    def __init__(self, G: torch.Tensor, dtype: torch.dtype, out: torch.Tensor | None):
        batch, r, c = G.shape
        m, n = min(r, c), max(r, c)
        kw = dict(device=G.device, dtype=dtype)
        self.x = [torch.empty((batch, m, n), **kw), torch.empty((batch, m, n), **kw)]
        self.a = torch.empty((batch, m, m), **kw)
        self.b = torch.empty((batch, m, m), **kw)
        self.partial: torch.Tensor | None = None  # allocated by the first ns_prepare (its size depends on config)
        self.out = torch.empty((batch, r, c), **kw) if out is None else out


def _launch_all(G: torch.Tensor, schedule: Schedule, eps: float, ws: _Workspace) -> torch.Tensor:
    """Every launch of one NS call, writing only into `ws` (so the sequence can be captured as a CUDA graph)."""
    _, r, c = G.shape
    out_w = ws.out.mT if r > c else ws.out  # the last iteration writes straight into G's orientation
    X, ws.partial = ns_prepare(G, ws.x[0].dtype, out=ws.x[0], partial=ws.partial)
    if not schedule:
        s = 1.0 / (ws.partial.sum(dim=1).sqrt() + eps)
        out_w.copy_(X.float() * s[:, None, None])
        return ws.out
    for i, (a, b, c_) in enumerate(schedule):
        first, last = i == 0, i == len(schedule) - 1
        partial = ws.partial if first else None
        xxt(X, out=ws.a, partial=partial, eps=eps)
        sym_update(ws.a, b, c_, out=ws.b)
        X = ns_step(X, ws.b, a, out=out_w if last else ws.x[(i + 1) % 2], partial=partial, eps=eps)
    return ws.out


def _side_streams(device: torch.device, n: int) -> list[torch.cuda.Stream]:
    """n side streams of `device`, created once and reused by every capture."""
    pool = _STREAMS.setdefault(device, [])
    while len(pool) < n:
        pool.append(torch.cuda.Stream(device=device))
    return pool[:n]


def _launch_banks(Gs: list[torch.Tensor], schedule: Schedule, eps: float, workspaces: list[_Workspace]) -> None:
    """Every bank's launch sequence, each bank on its own side stream when there are several.

    Under capture the streams become independent branches of one CUDA graph, so the banks' kernels run at
    the same time: one bank's launches fill only part of the GPU (22 x 10 programs for the 512x512 bank's
    triangles), and its 16 dependent kernels leave the GPU idle between them (performance.md §A.6).
    """
    if len(Gs) == 1:
        _launch_all(Gs[0], schedule, eps, workspaces[0])
        return
    main = torch.cuda.current_stream()
    streams = _side_streams(Gs[0].device, len(Gs))
    for stream, G, ws in zip(streams, Gs, workspaces):
        stream.wait_stream(main)
        with torch.cuda.stream(stream):
            _launch_all(G, schedule, eps, ws)
    for stream in streams:
        main.wait_stream(stream)


class _Graph:
    """One NS call over one or more banks, captured as a CUDA graph. It owns its input buffers (a copy of each
    caller's bank goes in before each replay: the graph must never read memory the caller may have reused)
    and its workspaces."""

    def __init__(self, Gs: list[torch.Tensor], schedule: Schedule, eps: float, dtype: torch.dtype):
        self.inputs = [torch.empty(G.shape, device=G.device, dtype=G.dtype) for G in Gs]
        for buf, G in zip(self.inputs, Gs):
            buf.copy_(G)
        self.workspaces = [_Workspace(buf, dtype, None) for buf in self.inputs]
        _launch_banks(self.inputs, schedule, eps, self.workspaces)  # compiles, sizes `partial`, before capture
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: NCCL's watchdog thread may query events while this thread captures.
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            _launch_banks(self.inputs, schedule, eps, self.workspaces)

    def __call__(self, Gs: list[torch.Tensor]) -> list[torch.Tensor]:
        for buf, G in zip(self.inputs, Gs):
            buf.copy_(G)
        self.graph.replay()
        return [ws.out for ws in self.workspaces]


_GRAPHS: OrderedDict[tuple, _Graph | None] = OrderedDict()  # None: key seen once, not captured yet
_GRAPH_FAILED: set[tuple] = set()
_MAX_GRAPHS = 16
_STREAMS: dict[torch.device, list[torch.cuda.Stream]] = {}


def _graphed(Gs: list[torch.Tensor], schedule: Schedule, eps: float, dtype: torch.dtype) -> list[torch.Tensor] | None:
    """The results through a CUDA graph, or None where the caller should launch eagerly: the first call of a
    set of shapes (one-off shapes are not worth a capture), a failed capture, or while another capture runs."""
    if torch.cuda.is_current_stream_capturing():
        return None
    key = (tuple((tuple(G.shape), G.dtype, G.device) for G in Gs), tuple(schedule), float(eps), dtype)
    if key in _GRAPH_FAILED:
        return None
    if key not in _GRAPHS:
        _GRAPHS[key] = None
        while len(_GRAPHS) > _MAX_GRAPHS:
            _GRAPHS.popitem(last=False)
        return None
    _GRAPHS.move_to_end(key)
    entry = _GRAPHS[key]
    if entry is None:
        try:
            entry = _GRAPHS[key] = _Graph(Gs, schedule, eps, dtype)
        except RuntimeError as exc:
            import warnings

            _GRAPH_FAILED.add(key)
            del _GRAPHS[key]
            warnings.warn(f"golf.kernels.newton_schulz: CUDA graph capture failed ({exc}); launching eagerly",
                          RuntimeWarning, stacklevel=3)
            return None
    return entry(Gs)


def clear_graphs() -> None:
    """Drop every captured graph and its buffers."""
    _GRAPHS.clear()
    _GRAPH_FAILED.clear()


def newton_schulz_triton(G: torch.Tensor, schedule: Schedule, *, eps: float = 1e-7, dtype: torch.dtype = torch.bfloat16,
                         out: torch.Tensor | None = None, cuda_graph: bool = False) -> torch.Tensor:
    """Newton–Schulz of every matrix of G with the (a, b, c) tuple of each iteration in `schedule`.

    G: [batch, r, c] (any float dtype and strides); dtype: the storage dtype of X, A, B and the result (bf16; fp32
    only under the interpreter); out: optional [batch, r, c] result buffer. cuda_graph: from the second call
    of a shape on, copy G into a captured graph's input and replay it (the result is copied into `out` or a new
    tensor), which removes the launch overhead of the 3 * steps + 1 kernels.
    Returns the orthogonalized bank [batch, r, c].
    """
    return newton_schulz_triton_banks([G], schedule, eps=eps, dtype=dtype, outs=None if out is None else [out],
                                      cuda_graph=cuda_graph)[0]


def newton_schulz_triton_banks(Gs: list[torch.Tensor], schedule: Schedule, *, eps: float = 1e-7,
                               dtype: torch.dtype = torch.bfloat16, outs: list[torch.Tensor] | None = None,
                               cuda_graph: bool = False) -> list[torch.Tensor]:
    """`newton_schulz_triton` of several banks (any shapes, one device) in one call.

    With cuda_graph, from the second call of the same shapes on, all banks replay as one CUDA graph in which
    each bank runs on its own stream, so the banks' kernels overlap (Muon's step orthogonalizes every bank).
    Without it, or on the first call, the banks run one after another. Returns the banks in order.
    """
    for G in Gs:
        _check_3d("G", G)
        if not G.is_floating_point():
            raise ValueError(f"newton_schulz_triton: G has dtype {G.dtype}; pass a floating-point tensor")
    if Gs and any(G.device != Gs[0].device for G in Gs):
        raise ValueError(f"newton_schulz_triton_banks: banks on {sorted({str(G.device) for G in Gs})}; "
                         "pass banks of one device (call once per device)")
    if outs is not None and len(outs) != len(Gs):
        raise ValueError(f"newton_schulz_triton_banks: {len(outs)} outs for {len(Gs)} banks")
    for G, out in zip(Gs, outs or []):
        if tuple(out.shape) != tuple(G.shape) or out.dtype != dtype or out.device != G.device:
            raise ValueError(f"newton_schulz_triton out: got {tuple(out.shape)} {out.dtype} on {out.device}, "
                             f"expected {tuple(G.shape)} {dtype} on {G.device}")
    schedule = list(schedule)
    live = [i for i, G in enumerate(Gs) if G.numel()]
    results: list[torch.Tensor | None] = [None] * len(Gs)
    for i, G in enumerate(Gs):
        if not G.numel():
            results[i] = torch.empty(G.shape, device=G.device, dtype=dtype) if outs is None else outs[i]
    if not live:
        return results
    banks = [Gs[i] for i in live]
    if banks[0].is_cuda and cuda_graph and not INTERPRETED:
        with torch.cuda.device(banks[0].device):  # Triton launches on the current device
            graphed = _graphed(banks, schedule, eps, dtype)
        if graphed is not None:
            for i, res in zip(live, graphed):
                results[i] = res.clone() if outs is None else outs[i].copy_(res)
            return results
    for i, G in zip(live, banks):
        with torch.cuda.device(G.device) if G.is_cuda else contextlib.nullcontext():
            results[i] = _launch_all(G, schedule, eps, _Workspace(G, dtype, None if outs is None else outs[i]))
    return results
