"""Any ``BlockGraph`` (Inception-v3 A-E, pytorch-fid's variants, GoogLeNet) in one Triton launch:
schedule v4 (``triton_inception.py``) generalised from GoogLeNet's fixed four item kinds to a
table of nodes read at run time.

Why one kernel reads its graph from a table instead of being specialised per graph: a block has
up to ten convs of different shapes; a kernel with one code path per node would compile for
minutes and spill. Here only the tile shape (BM, BN, BK) and the column-block width are
compile-time; every node's shape, source, stride, padding, pool and output slice is a runtime row
(``graph_schedule.NODE_COLUMNS``), and the conv's A operand has one code path per source kind
(x, a workspace, a pool of x computed on the fly), so the kernel is the same for every block.

Why maps between convs go through workspaces in x's dtype: that is what the unfused layers hand
on (the reference rounds every map one node passes to another), and a tile's consumers span
several producer tiles (a 7x1 conv reads three image rows above and below), which only memory,
not registers, can share across programs.

Why the protocol is v4's, unchanged: persistent programs claim tickets from one atomic counter; a
consumer acquires (``sem="acquire"``) each producer tile's ready count until it equals the
producer's column blocks, all before its pipelined loop; a producer stores, barriers, and
releases (``sem="release"``) once per column block, a split item once, by its last arriver
(``_combine_splits``: partials summed in split order, so results are bit-identical whatever the
arrival order).

Why it cannot deadlock, with any number of programs resident: the table gives every dependency a
smaller ticket than its consumer (``graph_schedule``: a consumer's key is its last dependency's
plus one wave). A claimed ticket is worked to the end by a running program, so the smallest
unfinished ticket never waits on anything unfinished, and some program always progresses (the
decoupled look-back argument of Merrill and Garland). Chains (a consumer that is also a producer,
as in Inception-v3's C block, four convs deep) are covered by the same induction.

Why two alignment constexprs (``ALIGN``, ``X_ALIGN``, chosen per launch by ``_align``): the
channel masks compare with channel counts read from the table, so without a guarantee the
compiler sees no 16-byte run that is all in or all out and loads fp16/bf16 two bytes at a time,
which Triton 3.6 does not pipeline. When every count, offset and row stride is a multiple of 16
bytes (every Inception-v3 and GoogLeNet block), the hints make the loads 16-byte ``cp.async``,
multi-buffered over ``num_stages``; otherwise (ALIGN=1) the code is the unhinted path.

Why the launch leaves its state zero: launches on one stream share one state buffer (no host
memset, CUDA-graph replays work); the last program out zeroes it, after every program has counted
itself finished, and the last split of an item resets its arrival count.
"""

from __future__ import annotations

import threading

import torch
import triton
import triton.language as tl

from ..graph import BlockGraph
from ..packing import conv_memory_format, graph_offsets
from . import interpreting
from .graph_schedule import COLUMNS, CONV, NODE_COLUMNS, POOL, SRC_POOL, SRC_WS, SRC_X, GraphSchedule
from .triton_inception import _combine_splits, _mma, _relu, check_mode, launch_state, leave_state_zero
from .tuning import TileConfig, default_graph_config, device_index, dot_precision, graph_schedule_for, sm_count

__all__ = ["block_forward_triton", "graph_fwd_kernel", "graph_tables"]

NCOL = tl.constexpr(len(COLUMNS))
NNODE = tl.constexpr(len(NODE_COLUMNS))
_K_POOL = tl.constexpr(POOL)
_K_CONV = tl.constexpr(CONV)
_S_X = tl.constexpr(SRC_X)
_S_WS = tl.constexpr(SRC_WS)
_S_POOL = tl.constexpr(SRC_POOL)
_S_POOL3 = tl.constexpr(max(SRC_X, SRC_WS, SRC_POOL) + 1)  # kernel-only: SRC_POOL with a 3x3 pool (unrolled taps)
# Node-table columns the kernel reads (checked against NODE_COLUMNS below).
KIND, SRC, CIN, COUT, KH, KW, SH, SW, PH, PW, HI, WI, HO, WO, RELU = (tl.constexpr(i) for i in range(15))
PAVG, PCIP, PKH, PKW, PSH, PSW, PPH, PPW, W_OFF, B_OFF, IN_OFF, IN_LD = (tl.constexpr(i) for i in range(15, 27))
OUT_OFF, OUT_LD, OUT_C0, READY, DEP_READY, DEP_TARGET, NODE_BK, NCH = (tl.constexpr(i) for i in range(27, 35))
assert NODE_COLUMNS[15] == "pool" and NODE_COLUMNS[27] == "out_off" and NODE_COLUMNS[34] == "nch"
assert len(NODE_COLUMNS) == 35


@triton.constexpr_function
def pool_unrolled(rows, chans):
    """Whether a 3x3 pool of a rows x chans tile unrolls its nine taps (``_pool_tile``'s P3): up to
    2048 elements, 8 per thread over 8 warps. Larger tiles keep the runtime tap loop: nine such
    loads in flight spilled on sm_90 (a 64 x 64 chunk: 8-16 bytes with 8 warps, also with the
    rows unrolled three at a time), where the loop did not (compile_report.py --graph)."""
    return rows * chans <= 2048


@triton.jit
def _pool_tap(x_ptr, base, coff, h0, w0, dh, dw, ok, c_ok, H, W, sxh, sxw, is_avg, acc, cnt,
              X_ALIGN: tl.constexpr):
    """One tap (dh, dw) of the pool window into ``acc``: the sum (avg) or the max (padding never
    wins, NaN propagates); ``cnt`` counts the in-bounds taps. One accumulator, not a max and a
    sum: fewer registers while the unrolled taps' loads are in flight."""
    hh = h0 + dh
    ww = w0 + dw
    inside = ok & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
    xrow = base + hh.to(tl.int64) * sxh + ww.to(tl.int64) * sxw
    if X_ALIGN > 1:  # channels_last x, strides multiples of X_ALIGN (launcher): rows start aligned
        xrow = tl.multiple_of(xrow, X_ALIGN)
    v = tl.load(x_ptr + xrow[:, None] + coff[None, :],
                mask=inside[:, None] & c_ok[None, :], other=0.0).to(tl.float32)
    mx = tl.maximum(acc, tl.where(inside[:, None], v, float("-inf")), propagate_nan=tl.PropagateNan.ALL)
    return tl.where(is_avg != 0, acc + v, mx), cnt + inside.to(tl.float32)


@triton.jit
def _pool_tile(x_ptr, img, oh, ow, ok, cs, c_ok, H, W, sxn, sxc, sxh, sxw,
               is_avg, cip, pkh, pkw, psh, psw, pph, ppw, P3: tl.constexpr, X_ALIGN: tl.constexpr = 1):
    """The pool of x at pool-output pixels (img, oh, ow), channels ``cs``, in fp32 (0 on masked
    lanes). Max: padding never wins, NaN propagates. Avg: the sum of in-bounds taps over kh*kw
    clipped to the padded map (count_include_pad, PyTorch's divisor) or over the in-bounds taps.

    ``P3`` (the caller checked pkh == pkw == 3, every pool of Inception-v3 and GoogLeNet, and
    ``pool_unrolled`` said the tile is small enough): the nine taps unrolled at compile time, so
    their loads are independent and issue together (and a conv's K-loop around them has no inner
    loop); otherwise a runtime loop over the taps, one load after another."""
    h0 = oh * psh - pph
    w0 = ow * psw - ppw
    base = img.to(tl.int64) * sxn
    coff = cs.to(tl.int64) * sxc
    if X_ALIGN > 1:  # sxc == 1 (the launcher checked): cs's runs of X_ALIGN stay contiguous
        coff = tl.max_contiguous(tl.multiple_of(coff, X_ALIGN), X_ALIGN)
    acc = tl.full(coff[None, :].shape, float("-inf"), tl.float32) + tl.zeros_like(h0)[:, None].to(tl.float32)
    acc = tl.where(is_avg != 0, 0.0, acc)
    cnt = tl.zeros_like(h0).to(tl.float32)
    if P3:
        for t in tl.static_range(9):
            acc, cnt = _pool_tap(x_ptr, base, coff, h0, w0, t // 3, t % 3, ok, c_ok, H, W, sxh, sxw, is_avg, acc, cnt,
                                 X_ALIGN)
        span = (tl.minimum(h0 + 3, H + pph) - h0) * (tl.minimum(w0 + 3, W + ppw) - w0)
    else:
        for t in range(0, pkh * pkw):
            acc, cnt = _pool_tap(x_ptr, base, coff, h0, w0, t // pkw, t % pkw, ok, c_ok, H, W, sxh, sxw, is_avg,
                                 acc, cnt, X_ALIGN)
        span = (tl.minimum(h0 + pkh, H + pph) - h0) * (tl.minimum(w0 + pkw, W + ppw) - w0)
    div = tl.where(cip != 0, span.to(tl.float32), cnt)
    v = tl.where(is_avg != 0, acc / tl.maximum(div, 1.0)[:, None], acc)
    return tl.where(ok[:, None] & c_ok[None, :], v, 0.0)


@triton.jit
def _conv_gemm(x_ptr, ws_ptr, w_ptr, nd, img, oh, ow, ok, cols, k_lo, k_hi, H, W, sxn, sxc, sxh, sxw,
               SRC_KIND: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
               PRECISION: tl.constexpr, UPCAST: tl.constexpr, ALIGN: tl.constexpr, X_ALIGN: tl.constexpr):
    """The conv node ``nd`` for output pixels (img, oh, ow) and output channels ``cols``, as one
    implicit GEMM over reduction chunks [k_lo, k_hi) of (tap, input-channel chunk); taps outside
    the source map read 0 (the conv's zero padding).

    ``ALIGN`` > 1 (the launcher guaranteed it: ``_align``): cin, cout, the weight offset and the
    workspace offset and row stride are multiples of ALIGN elements (16 bytes), so the channel
    masks are constant on aligned runs of ALIGN and every row starts aligned: told to the compiler,
    A's workspace loads and B's weight loads become 16-byte vectors, which Triton pipelines
    (cp.async). ``X_ALIGN`` > 1: the same for A's loads from a channels_last x."""
    cin = tl.load(nd + CIN)
    cout = tl.load(nd + COUT)
    w_off = tl.load(nd + W_OFF)
    if ALIGN > 1:
        cin = tl.multiple_of(cin, ALIGN)
        cout = tl.multiple_of(cout, ALIGN)
        w_off = tl.multiple_of(w_off, ALIGN)
    kw = tl.load(nd + KW)
    hi = tl.load(nd + HI)
    wi = tl.load(nd + WI)
    nch = tl.load(nd + NCH)
    w_base = w_ptr + w_off.to(tl.int64)
    h0 = oh * tl.load(nd + SH) - tl.load(nd + PH)
    w0 = ow * tl.load(nd + SW) - tl.load(nd + PW)
    if SRC_KIND == _S_WS:
        in_off = tl.load(nd + IN_OFF)
        ld = tl.load(nd + IN_LD)
        if ALIGN > 1:
            in_off = tl.multiple_of(in_off, ALIGN)
            ld = tl.multiple_of(ld, ALIGN)
        src_ptr = ws_ptr + in_off.to(tl.int64)
        ld = ld.to(tl.int64)
    if SRC_KIND >= _S_POOL:
        is_avg = tl.load(nd + PAVG)
        cip = tl.load(nd + PCIP)
        pkh = tl.load(nd + PKH)
        pkw = tl.load(nd + PKW)
        psh = tl.load(nd + PSH)
        psw = tl.load(nd + PSW)
        pph = tl.load(nd + PPH)
        ppw = tl.load(nd + PPW)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    col_ok = cols < cout
    # The unrolled pool: its nine tap loads per chunk are issued together but not prefetched a chunk
    # ahead (two chunks of nine loads in flight spilled on sm_90): one round trip per chunk.
    for kk in tl.range(k_lo, k_hi, num_stages=1 if SRC_KIND == _S_POOL3 else None):
        tap = kk // nch
        cs = (kk - tap * nch) * BK + tl.arange(0, BK)
        c_ok = cs < cin
        ih = h0 + tap // kw
        iw = w0 + tap % kw
        inside = ok & (ih >= 0) & (ih < hi) & (iw >= 0) & (iw < wi)
        m2 = inside[:, None] & c_ok[None, :]
        if SRC_KIND == _S_X:
            xrow = img.to(tl.int64) * sxn + ih.to(tl.int64) * sxh + iw.to(tl.int64) * sxw
            xcol = cs.to(tl.int64) * sxc
            if X_ALIGN > 1:
                xrow = tl.multiple_of(xrow, X_ALIGN)
                xcol = tl.max_contiguous(tl.multiple_of(xcol, X_ALIGN), X_ALIGN)
            a = tl.load(x_ptr + xrow[:, None] + xcol[None, :], mask=m2, other=0.0)
        elif SRC_KIND == _S_WS:
            src = ((img * hi + ih) * wi + iw).to(tl.int64) * ld
            if ALIGN > 1:
                src = tl.multiple_of(src, ALIGN)
            a = tl.load(src_ptr + src[:, None] + cs[None, :], mask=m2, other=0.0)
        else:  # a 1x1 conv of the pool: its pixel is the pool's output pixel
            a = _pool_tile(x_ptr, img, ih, iw, inside, cs, c_ok, H, W, sxn, sxc, sxh, sxw,
                           is_avg, cip, pkh, pkw, psh, psw, pph, ppw,
                           SRC_KIND == _S_POOL3, X_ALIGN).to(x_ptr.dtype.element_ty)
        b = tl.load(w_base + (tap * cin + cs)[:, None] * cout + cols[None, :],
                    mask=c_ok[:, None] & col_ok[None, :], other=0.0)
        acc = _mma(a, b, acc, PRECISION, UPCAST)
    return acc


@triton.jit
def _pool_item(x_ptr, out_ptr, nd, img, oh, ow, ok, orow, cols, cout, out_c0, H, W, sxn, sxc, sxh, sxw, soc,
               P3: tl.constexpr, X_ALIGN: tl.constexpr):
    """A pool node's output tile for channels ``cols``, stored to its output slice."""
    c_ok = cols < cout
    v = _pool_tile(x_ptr, img, oh, ow, ok, cols, c_ok, H, W, sxn, sxc, sxh, sxw,
                   tl.load(nd + PAVG), tl.load(nd + PCIP), tl.load(nd + PKH), tl.load(nd + PKW),
                   tl.load(nd + PSH), tl.load(nd + PSW), tl.load(nd + PPH), tl.load(nd + PPW), P3, X_ALIGN)
    tl.store(out_ptr + orow[:, None] + ((out_c0 + cols).to(tl.int64) * soc)[None, :],
             v.to(out_ptr.dtype.element_ty), mask=ok[:, None] & c_ok[None, :])


@triton.jit
def _item(row, node_ptr, state_ptr, x_ptr, out_ptr, ws_ptr, part_ptr, w_ptr, b_ptr, NB, H, W, arrive_base,
          sxn, sxc, sxh, sxw, son, soc, soh, sow,
          BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, BN_MAX: tl.constexpr,
          MAX_SPLITS: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr, ALIGN: tl.constexpr,
          X_ALIGN: tl.constexpr):
    """One work item whose column block is BN wide."""
    node = tl.load(row + 0)
    tile = tl.load(row + 1)
    c0 = tl.multiple_of(tl.load(row + 2), 16)
    split = tl.load(row + 4)
    n_splits = tl.load(row + 5)
    slot = tl.load(row + 6)
    dep_lo = tl.load(row + 7)
    dep_hi = tl.load(row + 8)
    k_lo = tl.load(row + 9)
    k_hi = tl.load(row + 10)
    nd = node_ptr + node * NNODE
    kind = tl.load(nd + KIND)
    ho = tl.load(nd + HO)
    wo = tl.load(nd + WO)
    out_c0 = tl.load(nd + OUT_C0)
    p = tile * BM + tl.arange(0, BM)
    ok = p < NB * ho * wo
    img = p // (ho * wo)
    rem = p - img * (ho * wo)
    oh = rem // wo
    ow = rem - oh * wo
    orow = img.to(tl.int64) * son + oh.to(tl.int64) * soh + ow.to(tl.int64) * sow
    cols = c0 + tl.arange(0, BN)
    PCH: tl.constexpr = min(BN, 32)
    if kind == _K_POOL:
        cout = tl.load(nd + COUT)
        if ALIGN > 1:
            cout = tl.multiple_of(cout, ALIGN)
        pkh = tl.load(nd + PKH)
        pkw = tl.load(nd + PKW)
        if (pkh == 3) & (pkw == 3):
            # Unrolled taps, 32 channels at a time: nine loads of a BM x 64 slice in flight spilled.
            for cc in tl.static_range(0, BN, PCH):
                _pool_item(x_ptr, out_ptr, nd, img, oh, ow, ok, orow, c0 + cc + tl.arange(0, PCH), cout, out_c0,
                           H, W, sxn, sxc, sxh, sxw, soc, pool_unrolled(BM, PCH), X_ALIGN)
        else:
            _pool_item(x_ptr, out_ptr, nd, img, oh, ow, ok, orow, cols, cout, out_c0, H, W, sxn, sxc, sxh, sxw, soc,
                       False, X_ALIGN)
    elif kind == _K_CONV:
        src = tl.load(nd + SRC)
        if dep_lo >= 0:
            # Acquire every producer tile the taps read, all before the pipelined loop.
            ready = state_ptr + tl.load(nd + DEP_READY)
            target = tl.load(nd + DEP_TARGET)
            for i in range(0, dep_hi - dep_lo + 1):
                seen = tl.atomic_add(ready + dep_lo + i, 0, sem="acquire", scope="gpu")
                while seen < target:
                    seen = tl.atomic_add(ready + dep_lo + i, 0, sem="acquire", scope="gpu")
            tl.debug_barrier()
        if src == _S_WS:
            acc = _conv_gemm(x_ptr, ws_ptr, w_ptr, nd, img, oh, ow, ok, cols, k_lo, k_hi, H, W, sxn, sxc, sxh, sxw,
                             _S_WS, BM, BN, BK, PRECISION, UPCAST, ALIGN, X_ALIGN)
        elif src == _S_X:
            acc = _conv_gemm(x_ptr, ws_ptr, w_ptr, nd, img, oh, ow, ok, cols, k_lo, k_hi, H, W, sxn, sxc, sxh, sxw,
                             _S_X, BM, BN, BK, PRECISION, UPCAST, ALIGN, X_ALIGN)
        elif pool_unrolled(BM, BK):
            if (tl.load(nd + PKH) == 3) & (tl.load(nd + PKW) == 3):  # every Inception pool: unrolled taps
                acc = _conv_gemm(x_ptr, ws_ptr, w_ptr, nd, img, oh, ow, ok, cols, k_lo, k_hi, H, W, sxn, sxc, sxh,
                                 sxw, _S_POOL3, BM, BN, BK, PRECISION, UPCAST, ALIGN, X_ALIGN)
            else:
                acc = _conv_gemm(x_ptr, ws_ptr, w_ptr, nd, img, oh, ow, ok, cols, k_lo, k_hi, H, W, sxn, sxc, sxh,
                                 sxw, _S_POOL, BM, BN, BK, PRECISION, UPCAST, ALIGN, X_ALIGN)
        else:
            acc = _conv_gemm(x_ptr, ws_ptr, w_ptr, nd, img, oh, ow, ok, cols, k_lo, k_hi, H, W, sxn, sxc, sxh, sxw,
                             _S_POOL, BM, BN, BK, PRECISION, UPCAST, ALIGN, X_ALIGN)
        last = n_splits == 1
        if MAX_SPLITS > 1:  # compiled out when nothing is split
            if n_splits > 1:
                last, acc = _combine_splits(acc, ok, part_ptr, state_ptr + arrive_base, slot, split, n_splits,
                                            BM, BN, BN_MAX, MAX_SPLITS)
        if last:
            cout = tl.load(nd + COUT)
            col_ok = cols < cout
            v = acc + tl.load(b_ptr + tl.load(nd + B_OFF) + cols, mask=col_ok, other=0.0)[None, :]
            if tl.load(nd + RELU) != 0:
                v = _relu(v, True)
            if out_c0 >= 0:
                tl.store(out_ptr + orow[:, None] + ((out_c0 + cols).to(tl.int64) * soc)[None, :],
                         v.to(out_ptr.dtype.element_ty), mask=ok[:, None] & col_ok[None, :])
            out_off = tl.load(nd + OUT_OFF)
            if out_off >= 0:
                ld = tl.load(nd + OUT_LD)
                wrow = out_off.to(tl.int64) + p.to(tl.int64) * ld.to(tl.int64)
                if ALIGN > 1:
                    wrow = tl.multiple_of(wrow, ALIGN)
                tl.store(ws_ptr + wrow[:, None] + cols[None, :],
                         v.to(ws_ptr.dtype.element_ty), mask=ok[:, None] & col_ok[None, :])
                tl.debug_barrier()  # every thread's workspace stores are issued before the release
                tl.atomic_add(state_ptr + tl.load(nd + READY) + tile, 1, sem="release", scope="gpu")


@triton.jit
def graph_fwd_kernel(
    table_ptr, node_ptr, state_ptr, x_ptr, out_ptr, ws_ptr, part_ptr, w_ptr, b_ptr,
    NB, H, W, n_items, n_programs, state_size, arrive_base,
    sxn, sxc, sxh, sxw, son, soc, soh, sow,
    BM: tl.constexpr, BN_MAX: tl.constexpr, BK: tl.constexpr, MAX_SPLITS: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr, ALIGN: tl.constexpr = 1, X_ALIGN: tl.constexpr = 1,
):
    ticket = tl.atomic_add(state_ptr, 1)
    while ticket < n_items:
        row = table_ptr + ticket * NCOL
        width = tl.load(row + 3)
        for bn in tl.static_range(16, BN_MAX + 1, 16):
            if (bn & (bn - 1)) == 0:  # one specialisation per power-of-two column-block width
                if width == bn:
                    _item(row, node_ptr, state_ptr, x_ptr, out_ptr, ws_ptr, part_ptr, w_ptr, b_ptr, NB, H, W,
                          arrive_base, sxn, sxc, sxh, sxw, son, soc, soh, sow,
                          BM, bn, BK, BN_MAX, MAX_SPLITS, PRECISION, UPCAST, ALIGN, X_ALIGN)
        ticket = tl.atomic_add(state_ptr, 1)
    leave_state_zero(state_ptr, n_programs, state_size)


check_mode(graph_fwd_kernel)


# -- tables and launch ------------------------------------------------------------------------------
_TABLES: dict[tuple, tuple[GraphSchedule, torch.Tensor, torch.Tensor]] = {}
_LOCK = threading.Lock()


def graph_tables(sched: GraphSchedule, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(item table, node table) of ``sched`` as flat int32 tensors on ``device``, uploaded once.
    Keyed by the schedule's identity (``build_graph_schedule`` caches it); the entry keeps it alive."""
    key = (device.type, device.index, id(sched))
    hit = _TABLES.get(key)
    if hit is not None and hit[0] is sched:
        return hit[1], hit[2]
    host = (torch.tensor(sched.items, dtype=torch.int32).reshape(-1),
            torch.tensor(sched.nodes, dtype=torch.int32).reshape(-1))
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return tuple(t.pin_memory().to(device, non_blocking=True) for t in host)
    items, nodes = (t.to(device) for t in host)
    with _LOCK:
        if len(_TABLES) >= 256:
            _TABLES.clear()
        _TABLES[key] = (sched, items, nodes)
    return items, nodes


def _check(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, graph: BlockGraph) -> None:
    if x.dim() != 4 or x.shape[1] != graph.in_channels:
        raise ValueError(f"x must be (N, {graph.in_channels}, H, W), got {tuple(x.shape)}")
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"the graph kernel runs fp32, fp16 and bf16, not {x.dtype}")
    w_total, b_total = graph_offsets(graph)[-1]
    if weight.dtype != x.dtype or weight.numel() != w_total or bias.dtype != torch.float32 or bias.numel() != b_total:
        raise ValueError(f"packed weights must be {w_total} {x.dtype} and {b_total} float32 elements "
                         f"(packing.pack_graph), got {weight.numel()} {weight.dtype} and {bias.numel()} {bias.dtype}")
    if weight.device != x.device or bias.device != x.device:
        raise ValueError("x and the packed weights must be on one device")


def _align(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, sched: GraphSchedule) -> tuple[int, int]:
    """(ALIGN, X_ALIGN) of a launch: the vector width in elements (16 bytes: 8 in fp16/bf16, 4 in
    fp32) the kernel may assume, or 1 (no hints: the scalar path).

    ALIGN > 1 only when every node row's channel counts (cin, cout), weight, bias and workspace
    offsets, workspace row strides and output channel offset are multiples of it (the table as
    built: ``GraphSchedule.aligned``) and the weight, bias (and workspace: a fresh allocation) pointers
    are 16-byte aligned. X_ALIGN > 1 (A's loads from x are hinted too) also needs x channels_last
    in memory (channel stride 1), its other strides multiples of ALIGN and its base 16-byte
    aligned; NCHW x keeps its unhinted loads (its channels are not the contiguous axis)."""
    vec = 16 // x.element_size()
    ok = weight.data_ptr() % 16 == 0 and bias.data_ptr() % 16 == 0
    if not (ok and sched.aligned(vec)):
        return 1, 1
    sn, sc, sh, sw = x.stride()
    x_ok = sc == 1 and x.data_ptr() % 16 == 0 and all(s % vec == 0 for s in (sn, sh, sw))
    return vec, vec if x_ok else 1


def block_forward_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, graph: BlockGraph,
                         config: TileConfig | None = None, max_programs: int | None = None,
                         out: torch.Tensor | None = None) -> torch.Tensor:
    """Run ``graph`` on ``x`` (N, Cin, H, W; any strides) with the flat packed ``weight`` (x's
    dtype) and ``bias`` (fp32) of ``packing.pack_graph``, in one launch; returns (N, Cout, Ho, Wo)
    in x's dtype and ``conv_memory_format(x)`` (or writes ``out``, any strides).
    ``max_programs`` caps the persistent grid (default: ``programs_per_sm`` per SM on a GPU, 4 in
    the interpreter, which runs programs one after another)."""
    _check(x, weight, bias, graph)
    n, _, h, w = x.shape
    ho, wo = graph.out_size(h, w)
    if out is None:
        out = torch.empty((n, graph.out_channels, ho, wo), dtype=x.dtype, device=x.device,
                          memory_format=conv_memory_format(x))
    elif out.shape != (n, graph.out_channels, ho, wo) or out.dtype != x.dtype or out.device != x.device:
        raise ValueError(f"out must be {(n, graph.out_channels, ho, wo)} {x.dtype}, got {tuple(out.shape)} {out.dtype}")
    if out.numel() == 0:
        return out
    sms = sm_count(device_index(x)) if x.is_cuda else None
    if config is None:
        config = default_graph_config(graph, n, h, w, *(() if sms is None else (sms,)), dtype=x.dtype)
    biggest = max([n * h * w] + [n * a * b for a, b in graph.map_sizes(h, w)])
    if biggest + config.block_m >= 2**31:
        raise ValueError(f"{biggest} pixels in one map: the kernel indexes pixels with 32-bit ints (split the batch)")
    if max_programs is None:
        max_programs = sms * config.programs_per_sm if x.is_cuda else 4
    sched = graph_schedule_for(graph, n, h, w, config, max_programs)
    if sched.ws_size >= 2**31:
        raise ValueError(f"{sched.ws_size} workspace elements: the node table holds 32-bit offsets (split the batch)")
    n_items = len(sched.items)
    grid = max(1, min(n_items, max_programs))
    interp = interpreting()
    # Workspaces and split partials are written before they are read; the interpreter fills them
    # with NaN so that a read of an unwritten element shows in every test.
    alloc = (lambda *s, **kw: torch.full(s, float("nan"), **kw)) if interp else torch.empty
    ws = alloc(max(sched.ws_size, 1), dtype=x.dtype, device=x.device)
    part = alloc(max(sched.n_slots, 1) * sched.max_splits, config.block_m, config.block_n, dtype=torch.float32,
                 device=x.device)
    state = launch_state(x.device, sched.state_size)
    items, nodes = graph_tables(sched, x.device)
    weight, bias = weight.contiguous(), bias.contiguous()
    align, x_align = _align(x, weight, bias, sched)
    try:
        graph_fwd_kernel[(grid,)](
            items, nodes, state, x, out, ws, part, weight, bias,
            n, h, w, n_items, grid, sched.state_size, sched.arrive_base,
            *x.stride(), *out.stride(),
            BM=config.block_m, BN_MAX=config.block_n, BK=sched.bk, MAX_SPLITS=sched.max_splits,
            PRECISION=dot_precision(x.dtype), UPCAST=interp and x.dtype == torch.bfloat16,
            ALIGN=align, X_ALIGN=x_align, num_warps=config.num_warps, num_stages=config.num_stages,
        )
    except BaseException:
        if not x.is_cuda:  # an interpreted launch stopped half way: leave no stale state behind
            state.zero_()
        raise
    return out
