"""The one-launch Inception block forward in Triton (schedule v4), and its launcher.

Work is a table of items (``schedule.py``) over flat pixel tiles of ``BM`` rows. Persistent
programs claim items through one atomic ticket, in table order:

* ``P``: x tile @ [W_1x1 | W_3x3red | W_5x5red] (x read once for the three 1x1 convs); the 1x1
  branch goes to its output slice, the two reduce maps (post-ReLU, in x's dtype) to the workspace
  R, one row per pixel. Then the tile's ready count is released.
* ``Q``: 3x3/stride-1 max-pool of the x tile (NaN propagates, padding never wins) @ W_proj.
* ``C3``/``C5``: the KxK conv as an implicit GEMM over R, one flattened loop over (tap, reduce
  chunk), after acquiring the ready counts of every tile its halo reads.

Each branch stores into its channel slice of the output: the concat is free.

Why it cannot deadlock, even with more programs than fit on the GPU at once: every item waits only
on items with smaller tickets, and a ticket is claimed by a running program that works it to the
end. The smallest unfinished ticket therefore never waits, so some program always makes progress:
the argument of the decoupled look-back single-pass scan (Merrill and Garland, "Single-pass
Parallel Prefix Scan with Decoupled Look-back", NVIDIA NVR-2016-002). It also holds for chains
where a consumer is itself a producer.

Memory ordering: a producer makes all its threads' stores issue (``tl.debug_barrier``), then
releases with an atomic (``sem="release", scope="gpu"``). A consumer acquires with an atomic
(``sem="acquire"``; a volatile load is not an acquire), then a barrier, and takes all its flags
before its pipelined loop, so software pipelining cannot hoist a workspace load above the wait.

Split reductions: every split stores its fp32 partial; the one that arrives last (an acq_rel
counter) adds the partials in split order and runs the epilogue, so results are bit-identical
whatever the arrival order.

Launch state (ticket, finished programs, ready counts, split arrivals) lives per (device, stream)
and is zeroed once; the last program of a launch resets it, and the last split of an item its
arrival count, so a launch leaves it zero: no host memset, and CUDA-graph replays work.
"""

from __future__ import annotations

import threading

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

from ..packing import PackedWeights, conv_memory_format
from ..spec import InceptionSpec
from . import interpreting
from .schedule import COLUMNS, Schedule
from .tuning import TileConfig, device_index, dot_precision, schedule_for, sm_count

__all__ = ["inception_forward_triton", "launch_state", "work_table"]

NCOL = tl.constexpr(len(COLUMNS))


@triton.jit
def _mma(a, b, acc, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    # UPCAST works around the interpreter's bf16 tl.dot (it multiplies bit patterns).
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=PRECISION)


@triton.jit
def _relu(v, RELU: tl.constexpr):
    # where() keeps NaN, as torch.relu does (max(NaN, 0) would give 0 on the GPU).
    if RELU:
        v = tl.where(v < 0.0, 0.0, v)
    return v


@triton.jit
def _x_gemm(x_ptr, w_ptr, xrow, hh, ww, ok, cols, k_lo, k_hi, H, W, sxc, sxh, sxw,
            CIN: tl.constexpr, W_LD: tl.constexpr, W_COLS: tl.constexpr, POOL: tl.constexpr,
            BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, PIX_VEC: tl.constexpr,
            PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """x tile (or its 3x3 max-pool when POOL) @ w[:, cols] over input chunks [k_lo, k_hi)."""
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    col_ok = cols < W_COLS
    # The pool's nine tap loads are not multi-buffered: pipelined, they took ~290 KB of shared
    # memory at 128x64 (more than an SM has); its loop is bound by those loads anyway.
    for i in tl.range(0, k_hi - k_lo, num_stages=1 if POOL else None):
        cs = (k_lo + i) * BK + tl.arange(0, BK)
        c_ok = cs < CIN
        coff = tl.multiple_of(cs.to(tl.int64) * sxc, PIX_VEC)  # sxc: a multiple of PIX_VEC (launcher)
        ok2 = ok[:, None] & c_ok[None, :]
        # Start from the pixel itself (inside the image for every valid row).
        a = tl.load(x_ptr + xrow[:, None] + coff[None, :], mask=ok2, other=0.0)
        if PIX_VEC > 1 and not POOL and x_ptr.dtype.element_ty == tl.float32:
            # NCHW fp32: TF32 wgmma wants its shared-memory A operand K-major (channels), which
            # would make the copy 4 bytes at a time. Passed through registers (this no-op where),
            # the tile is copied 16 bytes at a time along the pixels and fed to wgmma from registers.
            a = tl.where(ok2, a, 0.0)
        if POOL:
            if UPCAST:  # the interpreter (Triton 3.9) compares bf16 as raw bits: max(-1, 0.5) = -1
                a = a.to(tl.float32)
            for tap in tl.static_range(9):
                dh = tap // 3 - 1
                dw = tap % 3 - 1
                if tap != 4:  # the centre is the start
                    inside = ok & (hh + dh >= 0) & (hh + dh < H) & (ww + dw >= 0) & (ww + dw < W)
                    v = tl.load(x_ptr + (xrow + dh * sxh + dw * sxw)[:, None] + coff[None, :],
                                mask=inside[:, None] & c_ok[None, :], other=float("-inf"))
                    if UPCAST:
                        v = v.to(tl.float32)
                    a = tl.maximum(a, v, propagate_nan=tl.PropagateNan.ALL).to(a.dtype)  # bf16 may come back fp32
            # Masked lanes hold -inf and would make NaN in the GEMM: zero them (in x's dtype: a
            # bf16 tile and a Python float promote to fp32).
            a = tl.where(ok2, a, 0.0).to(x_ptr.dtype.element_ty)
        b = tl.load(w_ptr + cs[:, None] * W_LD + cols[None, :], mask=c_ok[:, None] & col_ok[None, :], other=0.0)
        acc = _mma(a, b, acc, PRECISION, UPCAST)
    return acc


@triton.jit
def _r_gemm(r_ptr, w_ptr, p, hh, ww, ok, cols, k_lo, k_hi, H, W,
            R_LD: tl.constexpr, R_OFF: tl.constexpr, CRED: tl.constexpr, COUT: tl.constexpr,
            K: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BKR: tl.constexpr,
            PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """KxK conv of the reduce map in R (channels [R_OFF, R_OFF + CRED)) for output ``cols``, as
    one implicit GEMM over chunks [k_lo, k_hi) of (tap, reduce channel); zero outside the image."""
    NCH: tl.constexpr = (CRED + BKR - 1) // BKR
    PAD: tl.constexpr = K // 2
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    col_ok = cols < COUT
    for i in range(0, k_hi - k_lo):
        kk = k_lo + i
        tap = kk // NCH
        cs = (kk % NCH) * BKR + tl.arange(0, BKR)
        c_ok = cs < CRED
        dh = tap // K - PAD
        dw = tap % K - PAD
        inside = ok & (hh + dh >= 0) & (hh + dh < H) & (ww + dw >= 0) & (ww + dw < W)
        src = (p + dh * W + dw).to(tl.int64) * R_LD + R_OFF
        a = tl.load(r_ptr + src[:, None] + cs[None, :], mask=inside[:, None] & c_ok[None, :], other=0.0)
        b = tl.load(w_ptr + (tap * CRED + cs)[:, None] * COUT + cols[None, :],
                    mask=c_ok[:, None] & col_ok[None, :], other=0.0)
        acc = _mma(a, b, acc, PRECISION, UPCAST)
    return acc


@triton.jit
def _combine_splits(acc, ok, ws_ptr, arrive_ptr, slot, split, n_splits,
                    BM: tl.constexpr, BN: tl.constexpr, WS_N: tl.constexpr, MAX_SPLITS: tl.constexpr):
    """Store this split's partial; the last split to arrive returns (True, the partials summed in
    split order)."""
    offs = tl.arange(0, BM)[:, None] * WS_N + tl.arange(0, BN)[None, :]
    base = ws_ptr + (slot * MAX_SPLITS).to(tl.int64) * (BM * WS_N)
    tl.store(base + split * (BM * WS_N) + offs, acc, mask=ok[:, None])
    tl.debug_barrier()  # every thread's partial is issued before the arrival is counted
    arrived = tl.atomic_add(arrive_ptr + slot, 1, sem="acq_rel", scope="gpu")
    last = arrived == n_splits - 1
    total = tl.zeros((BM, BN), dtype=tl.float32)
    if last:
        tl.debug_barrier()
        for s in range(0, n_splits):  # its own partial from registers, the same values, in its place
            mine = s == split
            part = tl.load(base + s * (BM * WS_N) + offs, mask=ok[:, None] & (s != split), other=0.0)
            total += tl.where(mine, acc, part)
        tl.atomic_xchg(arrive_ptr + slot, 0)  # nobody else touches it in this launch
    return last, total


@triton.jit
def _store(out_ptr, acc, bias_ptr, cols, n_cols, out_c0, orow, ok, soc, RELU: tl.constexpr, PIX_VEC: tl.constexpr):
    col_ok = cols < n_cols
    acc = _relu(acc + tl.load(bias_ptr + cols, mask=col_ok, other=0.0)[None, :], RELU)
    ptrs = out_ptr + orow[:, None] + tl.multiple_of((out_c0 + cols).to(tl.int64) * soc, PIX_VEC)[None, :]
    tl.store(ptrs, acc.to(out_ptr.dtype.element_ty), mask=ok[:, None] & col_ok[None, :])


@triton.jit
def _item(row, state_ptr, x_ptr, out_ptr, r_ptr, ws_ptr,
          w_in_ptr, b_in_ptr, w3_ptr, b3_ptr, w5_ptr, b5_ptr, wp_ptr, bp_ptr,
          NHW, H, W, sxn, sxc, sxh, sxw, son, soc, soh, sow, n_tiles,
          CIN: tl.constexpr, C1: tl.constexpr, C3R: tl.constexpr, C3: tl.constexpr,
          C5R: tl.constexpr, C5: tl.constexpr, CP: tl.constexpr, K3: tl.constexpr, K5: tl.constexpr,
          RELU: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, BKQ: tl.constexpr,
          BK3: tl.constexpr, BK5: tl.constexpr, TILE_TARGET: tl.constexpr, WS_N: tl.constexpr,
          MAX_SPLITS: tl.constexpr, PIX_VEC: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """One work item whose column block is BN wide."""
    kind = tl.load(row + 0)
    tile = tl.load(row + 1)
    c0 = tl.multiple_of(tl.load(row + 2), 16)  # column blocks start on 16: vector loads of weights
    split = tl.load(row + 4)
    n_splits = tl.load(row + 5)
    slot = tl.load(row + 6)
    dep_lo = tl.load(row + 7)
    dep_hi = tl.load(row + 8)
    k_lo = tl.load(row + 9)
    k_hi = tl.load(row + 10)
    RC: tl.constexpr = C3R + C5R
    p = tile * BM + tl.arange(0, BM)
    if PIX_VEC > 1:
        ok = (p // PIX_VEC) < NHW // PIX_VEC  # the same test, visibly constant on runs of PIX_VEC rows
    else:
        ok = p < NHW
    n = p // (H * W)
    rem = p - n * (H * W)
    hh = rem // W
    ww = rem - hh * W
    xrow = n.to(tl.int64) * sxn + hh.to(tl.int64) * sxh + ww.to(tl.int64) * sxw
    if PIX_VEC > 1:
        # NCHW x whose H*W and strides are multiples of PIX_VEC: each aligned run of PIX_VEC pixels
        # is one image's, contiguous and aligned, so x tiles load as vectors along the pixels.
        xrow = tl.max_contiguous(tl.multiple_of(xrow, PIX_VEC), PIX_VEC)
    orow = n.to(tl.int64) * son + hh.to(tl.int64) * soh + ww.to(tl.int64) * sow
    if PIX_VEC > 1:  # the launcher checked the output too
        orow = tl.max_contiguous(tl.multiple_of(orow, PIX_VEC), PIX_VEC)
    cols = c0 + tl.arange(0, BN)
    ready_ptr = state_ptr + 2
    if kind >= 2:
        # Acquire every tile the halo reads, all before the pipelined loop below.
        for i in range(0, dep_hi - dep_lo + 1):
            seen = tl.atomic_add(ready_ptr + dep_lo + i, 0, sem="acquire", scope="gpu")
            while seen < TILE_TARGET:
                seen = tl.atomic_add(ready_ptr + dep_lo + i, 0, sem="acquire", scope="gpu")
        tl.debug_barrier()
    if kind == 0:
        acc = _x_gemm(x_ptr, w_in_ptr, xrow, hh, ww, ok, cols, k_lo, k_hi, H, W, sxc, sxh, sxw,
                      CIN, C1 + RC, C1 + RC, False, BM, BN, BK, PIX_VEC, PRECISION, UPCAST)
    elif kind == 1:
        acc = _x_gemm(x_ptr, wp_ptr, xrow, hh, ww, ok, cols, k_lo, k_hi, H, W, sxc, sxh, sxw,
                      CIN, CP, CP, True, BM, BN, BKQ, PIX_VEC, PRECISION, UPCAST)
    elif kind == 2:
        acc = _r_gemm(r_ptr, w3_ptr, p, hh, ww, ok, cols, k_lo, k_hi, H, W, RC, 0, C3R, C3, K3,
                      BM, BN, BK3, PRECISION, UPCAST)
    else:
        acc = _r_gemm(r_ptr, w5_ptr, p, hh, ww, ok, cols, k_lo, k_hi, H, W, RC, C3R, C5R, C5, K5,
                      BM, BN, BK5, PRECISION, UPCAST)
    last = n_splits == 1
    if MAX_SPLITS > 1:  # compiled out when nothing is split: the combine holds a second accumulator
        if n_splits > 1:
            last, acc = _combine_splits(acc, ok, ws_ptr, ready_ptr + n_tiles, slot, split, n_splits,
                                        BM, BN, WS_N, MAX_SPLITS)
    if last:
        if kind == 0:
            # The 1x1 branch to its output slice, the reduce maps to R (in x's dtype, as the
            # unfused layers would hand them on).
            col_ok = cols < C1 + RC
            v = _relu(acc + tl.load(b_in_ptr + cols, mask=col_ok, other=0.0)[None, :], RELU)
            to_out = cols < C1
            tl.store(out_ptr + orow[:, None] + tl.multiple_of(cols.to(tl.int64) * soc, PIX_VEC)[None, :],
                     v.to(out_ptr.dtype.element_ty),
                     mask=ok[:, None] & to_out[None, :])
            r_cols = tl.where(to_out, 0, cols - C1)
            tl.store(r_ptr + p.to(tl.int64)[:, None] * RC + r_cols[None, :], v.to(r_ptr.dtype.element_ty),
                     mask=ok[:, None] & (col_ok & ~to_out)[None, :])
            tl.debug_barrier()  # all threads' R stores are issued before the release
            tl.atomic_add(ready_ptr + tile, 1, sem="release", scope="gpu")
        elif kind == 1:
            _store(out_ptr, acc, bp_ptr, cols, CP, C1 + C3 + C5, orow, ok, soc, RELU, PIX_VEC)
        elif kind == 2:
            _store(out_ptr, acc, b3_ptr, cols, C3, C1, orow, ok, soc, RELU, PIX_VEC)
        else:
            _store(out_ptr, acc, b5_ptr, cols, C5, C1 + C3, orow, ok, soc, RELU, PIX_VEC)


@triton.jit
def leave_state_zero(state_ptr, n_programs, state_size):
    """The last program out leaves the state zero for the next launch on this stream: every other
    program has counted itself finished, so none reads the state any more."""
    tl.debug_barrier()
    finished = tl.atomic_add(state_ptr + 1, 1, sem="acq_rel", scope="gpu")
    if finished == n_programs - 1:
        for i in range(0, state_size, 1024):
            offs = i + tl.arange(0, 1024)
            tl.store(state_ptr + offs, 0, mask=offs < state_size)


@triton.jit
def inception_fwd_kernel(
    table_ptr, state_ptr, x_ptr, out_ptr, r_ptr, ws_ptr,
    w_in_ptr, b_in_ptr, w3_ptr, b3_ptr, w5_ptr, b5_ptr, wp_ptr, bp_ptr,
    NHW, H, W, n_items, n_tiles, n_programs, state_size,
    sxn, sxc, sxh, sxw, son, soc, soh, sow,
    CIN: tl.constexpr, C1: tl.constexpr, C3R: tl.constexpr, C3: tl.constexpr,
    C5R: tl.constexpr, C5: tl.constexpr, CP: tl.constexpr, K3: tl.constexpr, K5: tl.constexpr,
    RELU: tl.constexpr, BM: tl.constexpr, BN_MAX: tl.constexpr, BK: tl.constexpr, BKQ: tl.constexpr,
    BK3: tl.constexpr, BK5: tl.constexpr, TILE_TARGET: tl.constexpr, MAX_SPLITS: tl.constexpr,
    PIX_VEC: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):
    ticket = tl.atomic_add(state_ptr, 1)
    while ticket < n_items:
        row = table_ptr + ticket * NCOL
        width = tl.load(row + 3)
        # One specialisation per column-block width (16, 32, 64, 128 up to BN_MAX): tail blocks keep
        # channel padding below 16 without shrinking the bulk of a branch.
        for bn in tl.static_range(16, BN_MAX + 1, 16):
            if (bn & (bn - 1)) == 0:  # the powers of two only
                if width == bn:
                    _item(row, state_ptr, x_ptr, out_ptr, r_ptr, ws_ptr, w_in_ptr, b_in_ptr, w3_ptr, b3_ptr,
                          w5_ptr, b5_ptr, wp_ptr, bp_ptr, NHW, H, W, sxn, sxc, sxh, sxw, son, soc, soh, sow,
                          n_tiles, CIN, C1, C3R, C3, C5R, C5, CP, K3, K5, RELU, BM, bn, BK, BKQ, BK3, BK5,
                          TILE_TARGET, BN_MAX, MAX_SPLITS, PIX_VEC, PRECISION, UPCAST)
        ticket = tl.atomic_add(state_ptr, 1)
    leave_state_zero(state_ptr, n_programs, state_size)


def check_mode(kernel) -> None:
    """A launcher module is imported on the first launch, after the package fixed the mode
    (``interpreting()``): a TRITON_INTERPRET changed in between would bind its kernel the other way."""
    if isinstance(kernel, InterpretedFunction) != interpreting():
        raise RuntimeError(f"Triton's interpreter is {'on' if interpreting() else 'off'} for fused_inception "
                           "(TRITON_INTERPRET when it was imported) but not for Triton now: set TRITON_INTERPRET "
                           "before importing fused_inception and leave it")


check_mode(inception_fwd_kernel)


# -- launch state and work tables -----------------------------------------------------------------
_STATE: dict[tuple, torch.Tensor] = {}
_TABLES: dict[tuple, tuple[Schedule, torch.Tensor]] = {}
_CACHE_LOCK = threading.Lock()


def _stream_key(device: torch.device) -> tuple:
    if device.type != "cuda":
        return (device.type,)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return (index, torch.cuda.current_stream(index).stream_id)


def launch_state(device: torch.device, size: int) -> torch.Tensor:
    """The zeroed int32 launch state of the current stream on ``device``, at least ``size`` words.

    One per (device, stream): launches on one stream are ordered, so they can share it, and
    launches on two streams never do. Each launch leaves it zero (see the module docstring). Inside
    a CUDA graph capture a state too small is made for that graph alone (its zeroing is captured)
    and not kept, since it lives in the graph's memory pool.
    """
    key = _stream_key(device)
    with _CACHE_LOCK:
        state = _STATE.get(key)
        if state is not None and state.numel() >= size:
            return state
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            return torch.zeros(size, dtype=torch.int32, device=device)
        state = torch.zeros(max(size, 2 * (state.numel() if state is not None else 0)), dtype=torch.int32,
                            device=device)
        _STATE[key] = state
        return state


def work_table(sched: Schedule, device: torch.device) -> torch.Tensor:
    """``sched.items`` as the int32 table the kernel reads, uploaded once per device.

    Keyed by the schedule's identity (``build_schedule`` caches it), not its value: hashing a
    table of thousands of rows on every forward would cost milliseconds. The entry keeps the
    schedule alive, so its id cannot be reused while the entry exists."""
    key = (device.type, device.index, id(sched))
    hit = _TABLES.get(key)
    if hit is not None and hit[0] is sched:
        return hit[1]
    host = torch.tensor(sched.items, dtype=torch.int32).reshape(-1)
    if device.type != "cuda":
        table = host
    elif torch.cuda.is_current_stream_capturing():
        # A copy the graph replays, into the graph's pool: good for this graph only, not cached.
        return host.pin_memory().to(device, non_blocking=True)
    else:
        table = host.to(device)  # synchronous: the cached table may be read from any stream
    with _CACHE_LOCK:
        if len(_TABLES) >= 256:
            _TABLES.clear()
        _TABLES[key] = (sched, table)
    return table


def _pixel_vector(x: torch.Tensor) -> int:
    """Pixels per vector load of x (up to 16 bytes) when x is NCHW-like (pixels contiguous) and
    each run of that many flat pixels is one image's and aligned: 8-byte loads on 14x14 maps in
    fp16, 16-byte on 14x14 and 28x28 in fp32; 1 (element loads) for channels_last, whose channels
    are the contiguous axis already, and on 7x7 maps."""
    n, c, h, w = x.shape
    sxn, sxc, sxh, sxw = x.stride()
    if sxw != 1 or sxh != w or c == 1:
        return 1
    v = 16 // x.element_size()
    while v > 1 and ((h * w) % v or sxn % v or sxc % v or x.data_ptr() % (v * x.element_size())):
        v //= 2
    return v


def inception_forward_triton(x: torch.Tensor, packed: PackedWeights, spec: InceptionSpec, config: TileConfig,
                             max_programs: int | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """Run the fused block on ``x`` (N, Cin, H, W) in one launch with tile ``config`` (chosen by
    ``tuning.pick_config``); returns (N, Cout, H, W).

    ``x`` may be NCHW, channels_last or strided; it is read in place. ``max_programs`` caps the
    persistent grid (default: ``programs_per_sm`` per SM on a GPU, 4 in the interpreter, which
    runs programs one after another).
    """
    n, cin, h, w = x.shape  # checked by the op (ops.check_input)
    if out is None:
        out = torch.empty((n, spec.out_channels, h, w), dtype=x.dtype, device=x.device,
                          memory_format=conv_memory_format(x))
    if out.numel() == 0:
        return out
    if n * h * w + config.block_m >= 2**31:
        raise ValueError(f"{n}x{h}x{w} = {n * h * w} pixels: the kernel indexes pixels with 32-bit ints "
                         "(split the batch)")
    if max_programs is None:
        max_programs = sm_count(device_index(x)) * config.programs_per_sm if x.is_cuda else 4
    sched = schedule_for(spec, n, h, w, config, max_programs)
    n_items = len(sched.items)
    grid = max(1, min(n_items, max_programs))
    interp = interpreting()
    # R and the split partials are fully written before they are read; the interpreter fills them
    # with NaN so that a read of an unwritten element shows in every test.
    alloc = (lambda *s, **kw: torch.full(s, float("nan"), **kw)) if interp else torch.empty
    r = alloc(n * h * w, spec.ch3x3red + spec.ch5x5red, dtype=x.dtype, device=x.device)
    ws = alloc(max(sched.n_slots, 1) * sched.max_splits, config.block_m, config.block_n, dtype=torch.float32,
               device=x.device)
    state = launch_state(x.device, sched.state_size)
    table = work_table(sched, x.device)
    try:
        inception_fwd_kernel[(grid,)](
            table, state, x, out, r, ws, *packed,
            n * h * w, h, w, n_items, sched.n_tiles, grid, sched.state_size,
            *x.stride(), *out.stride(),
            CIN=cin, C1=spec.ch1x1, C3R=spec.ch3x3red, C3=spec.ch3x3, C5R=spec.ch5x5red, C5=spec.ch5x5,
            CP=spec.pool_proj, K3=spec.k3, K5=spec.k5, RELU=spec.relu,
            BM=config.block_m, BN_MAX=config.block_n, BK=sched.bk, BKQ=sched.bkq, BK3=sched.bk3, BK5=sched.bk5,
            TILE_TARGET=sched.tile_target, MAX_SPLITS=sched.max_splits,
            PIX_VEC=min(_pixel_vector(x), _pixel_vector(out)),
            PRECISION=dot_precision(x.dtype), UPCAST=interp and x.dtype == torch.bfloat16,
            num_warps=config.num_warps, num_stages=config.num_stages,
        )
    except BaseException:
        if not x.is_cuda:  # an interpreted launch stopped half way: leave no stale state behind
            state.zero_()
        raise
    return out
