"""Warp-specialized Gluon kernels (Hopper, sm_90) for the fused LeakyReLU^2 MLP's two fused GEMMs.

Math (the same as golf.kernels.mlp, whose Triton kernels these replace on sm_90, bit for bit):
    forward   h[M, N] = encode(leaky_relu(x[M, K] @ w_up[N, K]^T, slope)^2)   (K = D, N = F)
              encode: bf16 with the sign of the pre-activation in the last significand bit (_encode_h)
    backward  dpre[M, N] = (dy[M, K] @ w_down[K, N]) * phi'(h[M, N])
              phi'(h) = 2 sqrt(h) where h's lowest significand bit is 1 (u > 0), else -2 |slope| sqrt(h)
The epilogues' fp32 math is the Triton kernels', op for op (backward: grad = (2 * sqrt(h)) * where(bit, 1,
-|slope|) with the same fast `sqrt`, then dpre = bf16_rn(acc * grad)). The accumulator is one fp32 tile fed by
sequential BLOCK_K-wide K-tiles (the first with use_acc=False, as Triton's accumulator-init rewrite does), so
with the Triton kernels' BLOCK_K (64) the outputs are bit-equal to golf.kernels.mlp's (tests/kernels/
test_mlp_ws.py, on the H200). Forward and backward share one kernel: FORWARD switches the B operand (w_up's
[N, K] tile used transposed, or w_down's [K, N] tile), drops the h loads and swaps the epilogue.

Why warp specialization: the Triton kernels (triton 3.6 does not warp-specialize their persistent loop) run each
tile's epilogue -- in backward h loads that wait a memory round trip, the phi' math, the dpre stores -- after the
tile's main loop, with the tensor cores idle: backward 0.36 / 0.50 ms at M = 98,304, K = 512, N = 1536 / 2048
against cuBLAS's plain dy @ w_down at 0.25 / 0.35 ms (benchmarks/RESULTS.md).

Design: "ping-pong", the Hopper design CUTLASS calls KernelTmaWarpSpecializedPingpong, in one persistent CTA
per SM (grid = min(#SMs, #tiles)); the CTA takes tiles pid, pid + grid, ... in row-major tile order (as
kernels/mlp.py's _tile_origin) and its local tile j belongs to consumer j % 2.
    partition        warps  registers  work
    consumer 0       4      232        default partition: even local tiles, wgmma main loop + epilogue
    consumer 1       4      232        worker: odd local tiles, the same code
    producer         1      40         worker: TMA loads of the A / B K-tiles and (backward) of each tile's h
(the compiler pads the workers to whole warpgroups: 12 warps, 384 threads; the register counts become
`setmaxnreg` and add up to 504 x 128 <= 64K registers). While consumer c runs the epilogue of its tile j,
consumer 1 - c runs the main loop of tile j + 1, so the tensor cores stay busy through every epilogue.
Why not one MMA warpgroup + an epilogue partition: the hand-over of an fp32 accumulator through shared memory
costs 4 bytes per output element (64 KB for a 128x128 tile) on top of the ring and the h/dpre tile, and an
extra shared-memory round trip of the accumulator per tile; ping-pong keeps each accumulator in its owner's
registers (128 fp32 per thread for a 16,384-element tile), which is why a consumer's tile is 64x256 or 128x128
rather than the Triton kernel's 128x256 (256 registers per thread would not fit; two of them are the whole
register file).
Tried on the H200 and rejected (benchmarks/RESULTS.md, fifth and sixth runs; all bit-equal, all slower): both
consumers on one 128x256 tile (cooperative); A's [128, K] row block resident in shared memory with only B
streaming (2-4 ring stages: 0.48-0.75 ms; 5-6 without staging tiles: 0.42-0.46); B's column block resident per
CTA with one shared h/dpre buffer (backward 7 % slower, forward 4 % faster at F = 1536 only); epilogues straight
between registers and global memory instead of through shared memory and TMA (0.35-0.46 ms). And outside Gluon
(seventh run): CUTLASS 3's Hopper GEMMs with 2-CTA clusters and TMA multicast and golf's epilogue as a visitor
tree (branch exp/cutlass-mlp-sm90): bit-equal, 9-19 % slower than these kernels in every tile shape tried.

Shared memory (bf16, BLOCK_K = 64):
    ring    STAGES x (dy tile [BM, BK] + w_down tile [BK, BN])   64x256: 40 KB a stage, 128x128: 32 KB a stage
    hbuf    2 x [BM, BN], one per consumer: the producer's TMA writes h there, the consumer reads h, writes
            dpre over it (each element is read and then written by the same thread) and TMA-stores it
    bars    ready[STAGES], empty[STAGES], h_ready[2], h_free[2], mma_done[2] (8 bytes each)
    64x256, 4 stages: 160 + 64 KB;  128x128, 5 stages: 160 + 64 KB; both under sm_90's 227 KB.
Barriers (all count 1; `expect` is an arrive with a byte count; a Gluon arrive from a 4-warp partition is one
arrival):
    ready[s]   producer: expect(A + B bytes) then two TMA loads; consumer waits parity (n & 1) for fill n of s
    empty[s]   consumer arrives once the wgmma reading the stage retired (warpgroup_mma_wait); the producer's
               fill n waits parity ((n & 1) ^ 1), i.e. release n - 1 (a fresh barrier passes parity 1)
    h_ready[c] producer: expect(h bytes) + TMA load of h for consumer c's t-th tile; consumer waits (t & 1)
    h_free[c]  consumer arrives after its dpre TMA store finished reading the buffer (store_wait(0)); the
               producer's h load for consumer c's t-th tile waits ((t & 1) ^ 1), i.e. the epilogue of t - 1
    mma_done[c] consumer c arrives once all ready waits of its tile passed; consumer 1 - c waits for that
               before its next tile's main loop (the (j - 1) // 2-th arrival, parity ((j - 1) // 2) & 1)
The ring's k-step counter is global over the CTA's tiles (it = j * k_tiles + ki) in the producer and in both
consumers, so each consumer skips the other's steps; h for tile j is issued after tile j's first STAGES K-tiles,
as soon as its buffer is free and before its consumer's main loop has started, so it arrives during that loop.

Ordering (mma_done, CUTLASS's math order barrier): an mbarrier wait names a phase by its parity only, so the
wait for fill n of a stage passes when the stage's barrier has completed n + 1 phases -- or n - 1. A consumer
waits on fills whose previous fill (n - 1, STAGES steps earlier) belongs to the other consumer's tile; unordered,
consumer 1 started tile 1 as soon as tile 0's first K-tiles landed (its fill 2 of stage 0 "passed" on fill 0),
multiplied on tile 0's operands and released stages the other consumer still read, after which fills, releases
and the producer's expect_tx arrivals no longer matched. On the H200 (2026-11-28) that protocol faulted
("unspecified launch failure") at K = 512 with two tiles per CTA and hung with two tiles on one CTA; with the
order barrier every case of a bisect ladder (one to many tiles per CTA, one or eight K-steps, the full shapes)
was bit-equal to the Triton kernel. Every fill a consumer waits for now has its previous fill already waited
for, so each parity is unambiguous; the main loops run one after the other and each epilogue overlaps the
other consumer's main loop.

Constraints: bf16 operands and output; CUDA device of compute capability 9.0 (Hopper); 2-D operands with unit last
stride and 16-byte aligned rows and base (TMA), so N and K are multiples of 8; M >= 1 any (the last row tile is
clipped by TMA's bounds, as a partial N tile is); K any such value: the last K-tile's columns past K are
zero-filled by TMA exactly as in the Triton kernel. Gluon kernels do not run under TRITON_INTERPRET.

Compiled here for sm_90 with triton 3.6.0 (tests/kernels/test_mlp_ws.py::test_compiles_for_sm90, CPU): each
config, forward and backward, gives a cubin with 12 warps, about 229.7 KB of shared memory, setmaxnreg
232 / 232 / 40, m64n256k16 (64x256) or m64n128k16 (128x128) wgmma, TMA loads and stores; 9 mbarrier wait
loops in backward (producer: empty in each of its two K-tile loops, h_free; each consumer: mma_done, ready,
h_ready), 6 in forward (no h).
On the GPU the tests run the kernels first in a subprocess with a timeout (a wrong mbarrier phase hangs), then
check bit-equality with the Triton kernels; benchmarks/bench_mlp_ws.py times them against cuBLAS.
"""

from __future__ import annotations

import functools

import torch

try:
    import triton

    from golf.kernels import mlp as _mlp  # the Triton kernel's operand checks and SM count
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import (
        fence_async_shared,
        mbarrier,
        tma,
        warpgroup_mma,
        warpgroup_mma_wait,
    )
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor as _GluonDescriptor

    AVAILABLE = hasattr(gl, "warp_specialize")
    UNAVAILABLE_REASON = "" if AVAILABLE else f"triton {triton.__version__}'s Gluon has no warp_specialize"
except ImportError as exc:  # no triton, or a triton without Gluon's Hopper API
    _mlp = None
    AVAILABLE = False
    UNAVAILABLE_REASON = f"Gluon is not importable: {exc}"

# Launch configs keyed by (D, F) and direction. Both tile shapes hold 16,384 fp32 accumulators per consumer (128
# per thread); 64x256 issues the Triton kernels' own wgmma shape (m64n256k16), 128x128 moves 20 % fewer bytes
# from L2. Backward, on one H200 (2026-11-28, benchmarks/bench_mlp_ws.py, M = 98,304, ms): 128x128 with 4 / 5
# stages 0.306 / 0.320 at F = 1536 and 0.431 / 0.405 at F = 2048; 64x256 with 4 stages 0.333 / 0.462; the
# Triton kernel 0.356 / 0.499; cuBLAS's plain dy @ w_down 0.249 / 0.354.
_CONFIG_64x256 = dict(BLOCK_M=64, BLOCK_N=256, BLOCK_K=64, num_stages=4)
_CONFIG_128x128 = dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, num_stages=5)
CANDIDATE_CONFIGS = {"64x256": _CONFIG_64x256, "128x128": _CONFIG_128x128}
DIRECTIONS = ("fwd", "bwd")
_DEFAULT_CONFIG = _CONFIG_128x128
_CONFIGS: dict[tuple[int, int, str], dict] = {
    (512, 1536, "bwd"): dict(_CONFIG_128x128, num_stages=4),
}

NUM_WARPS = 4  # the default partition (consumer 0); the workers add 4 + 1 warps, padded to 12 in all
CONSUMER_REGS = 232  # per thread, through setmaxnreg; the default partition receives the same from the pool
PRODUCER_REGS = 40
TOTAL_WARPS = 12
SMEM_LIMIT = 232448  # bytes of shared memory one sm_90 CTA may use (227 KB)
_ACC_ELEMENTS = 64 * 256  # fp32 accumulators one consumer warpgroup holds: 128 registers per thread
# False makes runs_on() refuse, so golf.ops.mlp uses the Triton kernels (benchmarks/bench_mlp.py's A/B; disable()).
ENABLED = True
DISABLED_REASON = ""


if AVAILABLE:

    @gluon.jit
    def _tile_origin_ws(tile_id, num_pid_n, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr):
        # Row-major tile order, as kernels/mlp.py's _tile_origin: concurrent CTAs share dy's row block in L2.
        return (tile_id // num_pid_n) * BLOCK_M, (tile_id % num_pid_n) * BLOCK_N

    @gluon.jit
    def _encode_h_ws(u, slope):
        """bf16 leaky_relu(u)^2 with the sign of u in its last bit, the same ops as kernels/mlp.py's _encode_h."""
        pos = u > 0
        a = gl.where(pos, u, u * slope)
        bits = (a * a).to(gl.int32, bitcast=True)  # h >= 0: its fp32 bit pattern orders like its value
        sign = pos.to(gl.int32)
        # Nearest bf16 (top 16 bits) whose last bit equals `sign`: candidates are 2 bf16 ulps apart.
        top = ((bits + 65536 - sign * 65536) >> 17) * 2 + sign
        return top.to(gl.int16).to(gl.bfloat16, bitcast=True)

    @gluon.jit
    def _activation_grad_ws(h, abs_slope):
        """phi' from the encoded bf16 h, the same fp32 ops as kernels/mlp.py's _activation_grad."""
        pos = (h.to(gl.int16, bitcast=True) & 1) != 0
        root = gl.sqrt(h.to(gl.float32))
        return 2.0 * root * gl.where(pos, 1.0, -abs_slope)

    @gluon.jit
    def _load_k_tile(a_desc, b_desc, a_ring, b_ring, ready, empty, it, off_m, off_n, ki, FORWARD: gl.constexpr):
        """The producer's ring step `it`: K-tile ki of A and B for the tile at (off_m, off_n)."""
        BLOCK_K: gl.constexpr = a_desc.block_type.shape[1]
        STAGES: gl.constexpr = a_ring.type.shape[0]
        s = it % STAGES
        # Fill n = it // STAGES of stage s waits for release n - 1 (fill 0 passes at once).
        mbarrier.wait(empty.index(s), ((it // STAGES) & 1) ^ 1)
        mbarrier.expect(ready.index(s), a_desc.block_type.nbytes + b_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(a_desc, [off_m, ki * BLOCK_K], ready.index(s), a_ring.index(s))
        if FORWARD:  # w_up [N, K]: its [BLOCK_N, BLOCK_K] tile, used transposed
            tma.async_copy_global_to_shared(b_desc, [off_n, ki * BLOCK_K], ready.index(s), b_ring.index(s))
        else:  # w_down [K, N]
            tma.async_copy_global_to_shared(b_desc, [ki * BLOCK_K, off_n], ready.index(s), b_ring.index(s))

    @gluon.jit
    def _producer(a_desc, b_desc, h_desc, a_ring, b_ring, hbuf, ready, empty, h_ready, h_free,
                  M, N, K, num_programs, FORWARD: gl.constexpr):
        """One warp: the A / B K-tiles of every tile of this CTA into the ring and (backward) the tile's h."""
        BLOCK_M: gl.constexpr = a_desc.block_type.shape[0]
        BLOCK_K: gl.constexpr = a_desc.block_type.shape[1]
        BLOCK_N: gl.constexpr = hbuf.type.shape[2]
        STAGES: gl.constexpr = a_ring.type.shape[0]
        pid = gl.program_id(0)
        num_pid_n = gl.cdiv(N, BLOCK_N)
        num_tiles = gl.cdiv(M, BLOCK_M) * num_pid_n
        k_tiles = gl.cdiv(K, BLOCK_K)
        my_tiles = gl.cdiv(num_tiles - pid, num_programs)
        for j in range(my_tiles):
            off_m, off_n = _tile_origin_ws(pid + j * num_programs, num_pid_n, BLOCK_M, BLOCK_N)
            # Backward: h of tile j goes out after the tile's first STAGES K-tiles. Its buffer is freed by the end
            # of the epilogue of this consumer's previous tile (j - 2), which comes before the consumer releases
            # tile j's first K-tile, without which K-tile STAGES cannot be issued anyway: waiting for the buffer
            # here never holds back an operand, and h has the tile's whole main loop to arrive. (Issued after
            # the tile's last K-tile, it had about STAGES K-steps: the backward kernel was 15 % behind cuBLAS's
            # plain GEMM at a fixed clock, the forward 5 %; issued here, 10 %: benchmarks/RESULTS.md, seventh run.)
            first = gl.minimum(k_tiles, STAGES)
            for ki in range(first):
                _load_k_tile(a_desc, b_desc, a_ring, b_ring, ready, empty, j * k_tiles + ki, off_m, off_n, ki,
                             FORWARD)
            if not FORWARD:
                c = j % 2
                mbarrier.wait(h_free.index(c), ((j // 2) & 1) ^ 1)
                mbarrier.expect(h_ready.index(c), h_desc.block_type.nbytes)
                tma.async_copy_global_to_shared(h_desc, [off_m, off_n], h_ready.index(c), hbuf.index(c))
            for ki in range(first, k_tiles):
                _load_k_tile(a_desc, b_desc, a_ring, b_ring, ready, empty, j * k_tiles + ki, off_m, off_n, ki,
                             FORWARD)

    @gluon.jit
    def _consumer(g_desc, a_ring, b_ring, hbuf, ready, empty, h_ready, h_free, mma_done, M, N, K, slope,
                  num_programs, CONSUMER: gl.constexpr, FORWARD: gl.constexpr):
        """One warpgroup: main loop and epilogue of local tiles CONSUMER, CONSUMER + 2, ... of this CTA."""
        BLOCK_M: gl.constexpr = a_ring.type.shape[1]
        BLOCK_K: gl.constexpr = a_ring.type.shape[2]
        BLOCK_N: gl.constexpr = hbuf.type.shape[2]
        STAGES: gl.constexpr = a_ring.type.shape[0]
        acc_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                             instr_shape=[16, BLOCK_N, 16])
        pid = gl.program_id(0)
        num_pid_n = gl.cdiv(N, BLOCK_N)
        num_tiles = gl.cdiv(M, BLOCK_M) * num_pid_n
        k_tiles = gl.cdiv(K, BLOCK_K)
        my_tiles = gl.cdiv(num_tiles - pid, num_programs)
        buf = hbuf.index(CONSUMER)
        for j in range(CONSUMER, my_tiles, 2):
            off_m, off_n = _tile_origin_ws(pid + j * num_programs, num_pid_n, BLOCK_M, BLOCK_N)
            base = j * k_tiles
            # A parity wait cannot tell fill n from fill n - 2: start only after every ready wait of tile j - 1
            # (the other consumer's) passed, so that fill n - 1 of each stage read here has landed (see Ordering).
            mbarrier.wait(mma_done.index(1 - CONSUMER), ((j - 1) // 2) & 1, pred=j > 0)
            acc = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, acc_layout)
            for ki in range(k_tiles):
                it = base + ki
                s = it % STAGES
                mbarrier.wait(ready.index(s), (it // STAGES) & 1)
                b = b_ring.index(s)
                if FORWARD:
                    b = b.permute((1, 0))  # [BLOCK_N, BLOCK_K] -> the [BLOCK_K, BLOCK_N] operand, no copy
                acc = warpgroup_mma(a_ring.index(s), b, acc, use_acc=ki > 0, is_async=True)
                # One wgmma stays in flight; the previous one has retired, so its stage goes back.
                acc = warpgroup_mma_wait(num_outstanding=1, deps=[acc])
                mbarrier.arrive(empty.index((it + STAGES - 1) % STAGES), pred=ki > 0)
            mbarrier.arrive(mma_done.index(CONSUMER))  # every ready wait of tile j passed: j + 1 may start
            acc = warpgroup_mma_wait(num_outstanding=0, deps=[acc])
            mbarrier.arrive(empty.index((base + k_tiles - 1) % STAGES))

            # Epilogue: runs while the other consumer's main loop keeps the tensor cores busy.
            if FORWARD:
                # The buffer is free: this consumer's previous store of it was waited for below.
                buf.store(_encode_h_ws(acc, slope))
            else:
                mbarrier.wait(h_ready.index(CONSUMER), (j // 2) & 1)
                h = buf.load(acc_layout)
                dpre = (acc * _activation_grad_ws(h, slope)).to(g_desc.dtype)
                buf.store(dpre)  # over h: every element is read, then written, by the same thread
            fence_async_shared()  # generic-proxy writes (and the h reads) before the TMA store / next TMA load
            tma.async_copy_shared_to_global(g_desc, [off_m, off_n], buf)
            tma.store_wait(0)  # the store has read the buffer: it may be written (or loaded with h) again
            if not FORWARD:
                mbarrier.arrive(h_free.index(CONSUMER))

    @gluon.jit
    def _leaky_relu2_mlp_ws_kernel(a_desc, b_desc, h_desc, g_desc, M, N, K, slope, num_programs,
                                   STAGES: gl.constexpr, CONSUMER_NREG: gl.constexpr,
                                   PRODUCER_NREG: gl.constexpr, FORWARD: gl.constexpr):
        """Producer warp + two ping-pong consumer warpgroups.

        FORWARD: g[M, N] = encode(leaky_relu(a[M, K] @ b[N, K]^T, slope)^2) (h_desc is g_desc, only its tile
        shape and layout are used). Backward: g[M, N] = (a[M, K] @ b[K, N]) * phi'(h[M, N]), slope = |slope|.
        """
        a_ring = gl.allocate_shared_memory(a_desc.dtype, [STAGES] + a_desc.block_type.shape, a_desc.layout)
        b_ring = gl.allocate_shared_memory(b_desc.dtype, [STAGES] + b_desc.block_type.shape, b_desc.layout)
        hbuf = gl.allocate_shared_memory(h_desc.dtype, [2] + h_desc.block_type.shape, h_desc.layout)
        ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        h_ready = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
        h_free = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
        mma_done = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
        for s in gl.static_range(STAGES):
            mbarrier.init(ready.index(s), count=1)
            mbarrier.init(empty.index(s), count=1)
        for c in gl.static_range(2):
            mbarrier.init(h_ready.index(c), count=1)
            mbarrier.init(h_free.index(c), count=1)
            mbarrier.init(mma_done.index(c), count=1)
        fence_async_shared()  # the initialized barriers, before any TMA signals them

        gl.warp_specialize([
            (_consumer, (g_desc, a_ring, b_ring, hbuf, ready, empty, h_ready, h_free, mma_done, M, N, K,
                         slope, num_programs, 0, FORWARD)),
            (_consumer, (g_desc, a_ring, b_ring, hbuf, ready, empty, h_ready, h_free, mma_done, M, N, K,
                         slope, num_programs, 1, FORWARD)),
            (_producer, (a_desc, b_desc, h_desc, a_ring, b_ring, hbuf, ready, empty, h_ready, h_free, M, N, K,
                         num_programs, FORWARD)),
        ], [4, 1], [CONSUMER_NREG, PRODUCER_NREG])


def launch_config(d_model: int, d_hidden: int, direction: str = "bwd") -> dict:
    """The launch config used for a (D, F) shape; `direction` is "fwd" or "bwd"."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction={direction!r}: use 'fwd' or 'bwd'")
    return dict(_CONFIGS.get((d_model, d_hidden, direction), _DEFAULT_CONFIG))


def runs_on(t: torch.Tensor) -> bool:
    """Whether these kernels run for operands like `t`: Gluon with warp_specialize, no interpreter, a bf16 CUDA
    tensor on a Hopper GPU (sm_90). golf.ops.mlp takes them there and the Triton kernels everywhere else."""
    return (AVAILABLE and ENABLED and not _mlp.is_interpreted() and t.is_cuda and t.dtype == torch.bfloat16
            and torch.cuda.get_device_capability(t.device) == (9, 0))


def disable(reason: str) -> None:
    """Switch these kernels off for the rest of the process: runs_on() refuses from now on, so golf.ops.mlp keeps
    to the bit-equal Triton kernels. golf.ops.mlp calls it when this triton cannot build the Gluon kernel."""
    global ENABLED, DISABLED_REASON
    ENABLED, DISABLED_REASON = False, reason


def smem_bytes(config: dict) -> int:
    """Shared memory the kernel allocates for `config` (bf16 ring + two h/dpre tiles + barriers)."""
    bm, bn, bk, stages = config["BLOCK_M"], config["BLOCK_N"], config["BLOCK_K"], config["num_stages"]
    return stages * (bm * bk + bk * bn) * 2 + 2 * bm * bn * 2 + (2 * stages + 6) * 8


def check_config(config: dict) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, stages) of a valid config, else ValueError naming the bad entry."""
    try:
        bm, bn, bk, stages = (int(config[k]) for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "num_stages"))
    except KeyError as exc:
        raise ValueError(f"config {config} lacks {exc}; give BLOCK_M, BLOCK_N, BLOCK_K, num_stages") from None
    extra = set(config) - {"BLOCK_M", "BLOCK_N", "BLOCK_K", "num_stages"}
    if extra:
        raise ValueError(f"config {config}: unknown keys {sorted(extra)}")
    if bm not in (64, 128) or bn not in (64, 128, 256) or bk not in (16, 32, 64):
        raise ValueError(f"config {config}: BLOCK_M must be 64 or 128 (wgmma warpgroup rows), BLOCK_N 64/128/256, "
                         f"BLOCK_K 16/32/64 (one 128-byte swizzle row of bf16 at most)")
    if bm * bn > _ACC_ELEMENTS:
        raise ValueError(f"config {config}: BLOCK_M * BLOCK_N = {bm * bn} > {_ACC_ELEMENTS}; a consumer holds its "
                         "fp32 accumulator in 128 registers per thread")
    if stages < 2 or smem_bytes(config) > SMEM_LIMIT:
        raise ValueError(f"config {config}: needs num_stages >= 2 and {smem_bytes(config)} <= {SMEM_LIMIT} bytes of "
                         "shared memory; lower num_stages")
    return bm, bn, bk, stages


def _check_device(t: torch.Tensor, name: str) -> None:
    if not AVAILABLE:
        raise RuntimeError(f"golf.kernels.mlp_ws is unavailable: {UNAVAILABLE_REASON}")
    if _mlp.is_interpreted():
        raise RuntimeError("Gluon kernels do not run under TRITON_INTERPRET=1; use golf.kernels.mlp's kernels")
    if t.device.type != "cuda" or torch.cuda.get_device_capability(t.device) != (9, 0):
        raise ValueError(f"{name} is on {t.device}: the warp-specialized kernels need a Hopper GPU (sm_90)")


@functools.cache
def _smem_layout(block: tuple[int, ...]):
    # get_default_for costs ~17 us of host time per call, four per launch: ~70 us, more than the rest of the
    # launch path; the layout depends on the block shape only.
    return gl.NVMMASharedLayout.get_default_for(list(block), gl.bfloat16)


def _descriptor(t: torch.Tensor, block: list[int]) -> _GluonDescriptor:
    return _GluonDescriptor(t, list(t.shape), list(t.stride()), block, _smem_layout(tuple(block)))


def _check_first(name: str, t: torch.Tensor) -> None:
    if _mlp is None:
        raise RuntimeError(f"golf.kernels.mlp_ws is unavailable: {UNAVAILABLE_REASON}")
    if t.dim() != 2:
        raise ValueError(f"{name}: expected a 2-D [M, D] tensor, got shape {tuple(t.shape)}; flatten leading dims")
    if t.dtype != torch.bfloat16:
        raise ValueError(f"the warp-specialized MLP kernels take bf16 only, got {name} in {t.dtype}")


def _launch(a: torch.Tensor, b: torch.Tensor, h: torch.Tensor | None, g: torch.Tensor, slope: float,
            config: dict | None, num_programs: int | None, direction: str) -> torch.Tensor:
    """Checks shared by both directions, then one persistent launch; g [M, N] is written and returned."""
    names = ("x", "w_up") if direction == "fwd" else ("dy", "w_down")
    for name, t in ((names[1], b), ("h", h), ("out", g)):
        if t is not None and t.device != a.device:
            raise ValueError(f"{name} is on {t.device}, {names[0]} on {a.device}: put all operands on one device")
    if num_programs is not None and (isinstance(num_programs, bool) or not isinstance(num_programs, int)
                                     or num_programs < 1):
        raise ValueError(f"num_programs={num_programs!r}: give a positive int (CTAs of the persistent grid) or None")
    M, D = a.shape
    F = g.shape[1]
    if M == 0:
        return g
    _check_device(a, names[0])
    bm, bn, bk, stages = check_config(config or launch_config(D, F, direction))
    num_tiles = triton.cdiv(M, bm) * triton.cdiv(F, bn)
    # More CTAs than tiles would give a CTA no tile: my_tiles = cdiv(num_tiles - pid, grid) assumes pid < tiles.
    programs = _mlp._num_programs(a.device, num_tiles, 1) if num_programs is None else min(num_programs, num_tiles)
    g_desc = _descriptor(g, [bm, bn])
    forward = direction == "fwd"
    _leaky_relu2_mlp_ws_kernel[(programs,)](
        _descriptor(a, [bm, bk]), _descriptor(b, [bn, bk] if forward else [bk, bn]),
        g_desc if forward else _descriptor(h, [bm, bn]), g_desc,
        M, F, D, float(slope) if forward else abs(float(slope)), programs,
        STAGES=stages, CONSUMER_NREG=CONSUMER_REGS, PRODUCER_NREG=PRODUCER_REGS, FORWARD=forward,
        num_warps=NUM_WARPS,
    )
    return g


def leaky_relu2_mlp_fwd_ws(
    x: torch.Tensor,
    w_up: torch.Tensor,
    slope: float,
    out: torch.Tensor | None = None,
    config: dict | None = None,
    *,
    num_programs: int | None = None,
) -> torch.Tensor:
    """h = leaky_relu(x @ w_up^T, slope)^2 with the sign of x @ w_up^T in h's last bit; sm_90, bf16.

    x: [M, D]; w_up: [F, D]; out: optional [M, F]; config and num_programs as in leaky_relu2_mlp_bwd_ws.
    Returns h [M, F], as golf.kernels.mlp.leaky_relu2_mlp_fwd.
    """
    _check_first("x", x)
    M, D = x.shape
    F = w_up.shape[0] if w_up.dim() == 2 else -1
    _mlp._check_operand("x", x, (M, D), x.dtype)
    _mlp._check_operand("w_up", w_up, (F, D), x.dtype)
    h = torch.empty((M, F), device=x.device, dtype=x.dtype) if out is None else out
    _mlp._check_operand("out", h, (M, F), x.dtype)
    return _launch(x, w_up, None, h, slope, config, num_programs, "fwd")


def leaky_relu2_mlp_bwd_ws(
    dy: torch.Tensor,
    w_down: torch.Tensor,
    h: torch.Tensor,
    slope: float,
    out: torch.Tensor | None = None,
    config: dict | None = None,
    *,
    num_programs: int | None = None,
) -> torch.Tensor:
    """dpre = (dy @ w_down) * phi'(u), phi' recovered from h as written by leaky_relu2_mlp_fwd; sm_90, bf16.

    dy: [M, D]; w_down: [D, F] (its stored layout); h: [M, F]; out: optional [M, F]; config: BLOCK_M, BLOCK_N,
    BLOCK_K, num_stages (see CANDIDATE_CONFIGS); num_programs: the persistent grid (default one CTA per SM, at
    most one per tile); fewer CTAs put more tiles on each, which lets a small problem exercise both consumers
    and the ring's wrap-around (tests). Returns dpre [M, F], as
    golf.kernels.mlp.leaky_relu2_mlp_bwd.
    """
    _check_first("dy", dy)
    M, D = dy.shape
    F = w_down.shape[1] if w_down.dim() == 2 else -1
    _mlp._check_operand("dy", dy, (M, D), dy.dtype)
    _mlp._check_operand("w_down", w_down, (D, F), dy.dtype)
    _mlp._check_operand("h", h, (M, F), dy.dtype)
    g = torch.empty((M, F), device=dy.device, dtype=dy.dtype) if out is None else out
    _mlp._check_operand("out", g, (M, F), dy.dtype)
    return _launch(dy, w_down, h, g, slope, config, num_programs, "bwd")
