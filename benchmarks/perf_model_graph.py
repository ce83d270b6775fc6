"""Predicted times of the graph kernel (``kernels/triton_graph.py``: any BlockGraph in one launch)
and of its peers for Inception-v3's eleven blocks and the whole network, on an H100 SXM or H200.
A performance model: every number it prints is a prediction, not a measurement.

Same anchors, parameter sets (``perf_model.OPTIMISTIC`` / ``PESSIMISTIC``, or ``--params FILE``
from ``calibrate.py``) and item model as perf_model.py's v4 predictions:

* the fused kernel: the launcher's own table (``default_graph_config`` + ``graph_schedule_for``
  planned for ``programs_per_sm`` programs on each SM), every row simulated. A conv item is one
  K-loop over (tap, input-channel chunk): its MMA time from its M, N, K at the padded shape (BM
  pixels x its column block x chunks * BK), its memory time from the bytes its loads request
  (``item_loads``: the count the interpreter makes, masked lanes move nothing), a round trip for
  the first chunk, per atomic (ticket, each producer tile acquired, the release of a workspace
  tile, a split's arrival) and per chunk where the loop is not multi-buffered (fp16/bf16 without
  the launcher's ALIGN: 2-byte loads, not pipelined by Triton 3.6 whatever num_stages says; with
  it, every Inception-v3 block in channels_last, 16-byte cp.async over num_stages). A conv reading a
  pool of x computes the pool in its loop (``_pool_tile``): a 3x3 pool (all of Inception's) of a
  tile of at most 2048 elements (``triton_graph.pool_unrolled``: BM x BK for a conv, BM x 32
  channels for a pool item) has its nine tap loads unrolled and issued together, and its loop
  runs one stage: a round trip per chunk (a pool item, B's and D's max-pool: per 32 channels).
  Larger tiles and other pool shapes keep a runtime tap loop: a round trip per tap and chunk.
  Workspace maps (a conv read by a conv) are written once and read back from L2. Items are
  list-scheduled onto the programs in ticket order (``perf_model.simulate``): a consumer starts
  when every producer tile its taps read is finished. DRAM bytes (x, weights, output, workspaces
  written once) floor the makespan.
* peers: eager PyTorch + cuDNN (one conv kernel per conv, one kernel per BatchNorm and ReLU, one
  per pool, the concat), the same in a CUDA graph, and torch.compile (the convs, one epilogue
  kernel per conv read by another node, the pools, the concat): ``perf_model.peers`` on the block's
  graph, the model held to KernelBench's measured times.
* end to end (299x299 images): the stem (five convs, two max-pools), the eleven blocks and the
  head (global average pool, the fc; pytorch-fid's network: its resize and scaling first, no fc).
  The stem and the head are cuDNN/streaming kernels for the fused network as for the peers; the
  fused network launches each block once.

Usage: ``python benchmarks/perf_model_graph.py [--gpu h100|h200|both] [--params SET|FILE] [--fid]
[--batches 1 50 256] [--markdown]``.
"""

from __future__ import annotations

import argparse
import functools
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import perf_model as pm  # noqa: E402
from counting import block_flops, block_min_bytes  # noqa: E402

from fused_inception.graph import FID_BLOCKS, INCEPTION_V3_BLOCKS, BlockGraph, Conv, Pool  # noqa: E402
from fused_inception.kernels.graph_schedule import (  # noqa: E402
    COLUMNS,
    CONV,
    POOL,
    SRC_POOL,
    SRC_WS,
    GraphSchedule,
    source_rows,
)
from fused_inception.kernels.graph_schedule import N as NODE  # noqa: E402
from fused_inception.kernels.triton_graph import pool_unrolled  # noqa: E402
from fused_inception.kernels.tuning import TileConfig, default_graph_config, graph_schedule_for  # noqa: E402

BATCHES = (1, 50, 256)  # 50: pytorch-fid's default batch
IMAGE = 299
# torchvision's Inception-v3 stem, Conv2d_1a_3x3 .. maxpool2 (299 -> 35), as a chain.
STEM = BlockGraph("stem", 3, (
    Conv("Conv2d_1a_3x3", -1, 3, 32, 3, 2), Conv("Conv2d_2a_3x3", 0, 32, 32, 3),
    Conv("Conv2d_2b_3x3", 1, 32, 64, 3, 1, 1), Pool(2, "max", 3, 2, 0, name="maxpool1"),
    Conv("Conv2d_3b_1x1", 3, 64, 80), Conv("Conv2d_4a_3x3", 4, 80, 192, 3), Pool(5, "max", 3, 2, 0, name="maxpool2"),
), (6,))
CLASSES = 1000
POOL_SLICE = 32  # channels a pool item's unrolled 3x3 taps load at a time (triton_graph._item: PCH)


# -- what each item loads -------------------------------------------------------------------------------
def _taps_inside(n: int, hi: int, wi: int, ho: int, wo: int, kernel, stride, padding, block_m: int,
                 n_tiles: int) -> np.ndarray:
    """(tiles, taps): per output tile, the valid pixels whose tap falls inside the source map."""
    p = np.arange(n_tiles * block_m)
    ok = p < n * ho * wo
    rem = p % (ho * wo)
    h0, w0 = (rem // wo) * stride[0] - padding[0], (rem % wo) * stride[1] - padding[1]
    cols = [ok & (h0 + a >= 0) & (h0 + a < hi) & (w0 + b >= 0) & (w0 + b < wi)
            for a in range(kernel[0]) for b in range(kernel[1])]
    return np.stack(cols, 1).reshape(n_tiles, block_m, -1).sum(1)


def _span(n: int, hi: int, wi: int, ho: int, wo: int, kernel, stride, padding, block_m: int,
          n_tiles: int) -> np.ndarray:
    """Per output tile: the flat source rows its taps span (first to last): what one read of a
    tile's footprint (L1, shared memory) would load, per channel."""
    lo, hi_ = source_rows(n, hi, wi, ho, wo, kernel, stride, padding)
    pad = n_tiles * block_m - lo.size
    lo = np.pad(lo, (0, pad), constant_values=np.iinfo(np.int64).max).reshape(n_tiles, block_m)
    hi_ = np.pad(hi_, (0, pad), constant_values=-1).reshape(n_tiles, block_m)
    return hi_.max(1) - lo.min(1) + 1


@functools.lru_cache(maxsize=64)
def item_loads(sched: GraphSchedule, elem: int) -> tuple[tuple, ...]:
    """Per row of the table, in the spirit of ``tiling_analysis.item_loads``: (A bytes, weight
    bytes, other bytes, useful MACs, rows, columns, footprint bytes). A: what the item's loads of
    x, a workspace or the pool's taps of x request (taps outside the map and padding channels
    move nothing); weights: its chunks' channels x its columns; other: the table row, and for the
    last split the fp32 bias and the other splits' fp32 partials. Useful MACs: valid rows x the
    channels x taps reduced x valid columns (over a node's items: its share of ``graph.macs``).
    Footprint: the A bytes were each source pixel read once per channel (the span of source rows
    the tile's taps touch; a 1x1 conv of x or a workspace: A itself)."""
    bm, n = sched.block_m, sched.n
    per_node = {}
    for i, nd in enumerate(sched.nodes):
        r = dict(zip(NODE, (nd[NODE[k]] for k in NODE)))
        if r["kind"] not in (CONV, POOL):
            continue
        tiles = sched.n_tiles[i]
        valid = np.minimum(bm, n * r["ho"] * r["wo"] - np.arange(tiles) * bm)
        pooled = r["kind"] == POOL or r["src"] == SRC_POOL
        if pooled:  # the pool's taps over x, at the pool's output pixels
            pool = ((r["pkh"], r["pkw"]), (r["psh"], r["psw"]), (r["pph"], r["ppw"]))
            inside = _taps_inside(n, sched.h, sched.w, r["ho"], r["wo"], *pool, bm, tiles).sum(1, keepdims=True)
            span = _span(n, sched.h, sched.w, r["ho"], r["wo"], *pool, bm, tiles)
        else:
            conv = ((r["kh"], r["kw"]), (r["sh"], r["sw"]), (r["ph"], r["pw"]))
            inside = _taps_inside(n, r["hi"], r["wi"], r["ho"], r["wo"], *conv, bm, tiles)
            span = _span(n, r["hi"], r["wi"], r["ho"], r["wo"], *conv, bm, tiles) if r["kh"] * r["kw"] > 1 else None
        cin, bk, nch = r["cin"], r["bk"], r["nch"]
        chans = np.minimum((np.arange(nch) + 1) * bk, cin) - np.arange(nch) * bk
        if r["kind"] == POOL:
            per_node[i] = (r, valid, inside[:, 0], span, None, None)
            continue
        kk = np.arange(inside.shape[1] * nch)
        a_cum = np.pad(np.cumsum(inside[:, kk // nch] * chans[kk % nch], 1), ((0, 0), (1, 0)))
        per_node[i] = (r, valid, a_cum, span, np.concatenate([[0], np.cumsum(chans[kk % nch])]), chans)
    out = []
    for node, tile, c0, width, split, n_splits, _, _, _, k_lo, k_hi in sched.items:
        r, valid, a, span, c_cum, chans = per_node[node]
        rows, cols = int(valid[tile]), max(0, min(c0 + width, r["cout"]) - c0)
        other = 4 * len(COLUMNS)
        if r["kind"] == POOL:
            a_b = int(a[tile]) * cols * elem
            out.append((a_b, 0, other, 0, rows, cols, min(a_b, int(span[tile]) * cols * elem)))
            continue
        kv = int(c_cum[k_hi] - c_cum[k_lo])  # channels x taps reduced
        if split == n_splits - 1:
            other += cols * 4 + (n_splits - 1) * rows * width * 4
        a_b = int(a[tile, k_hi] - a[tile, k_lo]) * elem
        once = a_b
        if span is not None:  # each source pixel once, for the channel chunks the item reduces
            nch = r["nch"]
            uniq = int(chans.sum()) if k_hi - k_lo >= nch else int(sum(chans[k % nch] for k in range(k_lo, k_hi)))
            once = min(a_b, int(span[tile]) * uniq * elem)
        out.append((a_b, kv * cols * elem, other, rows * kv * cols, rows, cols, once))
    return tuple(out)


# -- the fused kernel -----------------------------------------------------------------------------------
def _costs(sched: GraphSchedule, cfg: TileConfig, gpu: pm.Gpu, prm: pm.Params, elem: int, grid: int):
    """(duration, combine, L2 bytes, requested load bytes, issued FLOPs, stored bytes of the
    result) per row, as ``perf_model._v4_costs`` prices v4's rows."""
    share = max(grid, gpu.sms) / gpu.sms  # programs per SM while all are busy
    rate = pm._mma_rate(gpu, prm.mma_eff, elem == 4) / share
    l2 = prm.l2_tbs * 1e12 / gpu.sms / share
    lat = prm.latency_us * 1e-6
    nodes = [dict(zip(NODE, (nd[NODE[k]] for k in NODE))) for nd in sched.nodes]
    # Multi-buffered K-loops: in fp32 x and the weights load as 4-byte (or, aligned, 16-byte)
    # cp.async (LDGSTS) and shared memory grows with num_stages. In fp16/bf16 only when the
    # launcher sets ALIGN (``triton_graph._align``: every channel count, offset and row stride a
    # multiple of 8; the table's part is ``sched.aligned``, and the x assumed here is
    # channels_last and aligned): the hinted loads are 16-byte LDGSTS.E.BYPASS.128 and shared
    # memory grows 16 KB per stage (compile_report.py --graph, 2026-11-29). Without ALIGN the
    # loads are 2-byte LDGs that Triton 3.6 does not pipeline (16 KB at any num_stages): such a
    # loop waits a round trip per chunk.
    pipelined = elem == 4 or sched.aligned(16 // elem)
    out = []
    for row, (a, wts, other, _, rows, cols, once) in zip(sched.items, item_loads(sched, elem)):
        node, _, _, width, split, n_splits, slot, dep_lo, dep_hi, k_lo, k_hi = row
        r = nodes[node]
        conv = r["kind"] == CONV
        pooled = not conv or r["src"] == SRC_POOL
        taps = r["pkh"] * r["pkw"] if pooled else r["kh"] * r["kw"]
        a_l2 = a
        if (pooled and (prm.pool_l1 or prm.halo_smem)) or (taps > 1 and prm.halo_smem):
            a_l2 = once
        mem = (a_l2 + wts / prm.weight_share) / l2
        dests = (r["out_c0"] >= 0) + (r["out_off"] >= 0) if conv else 1
        atomics = 1 + (dep_hi - dep_lo + 1 if dep_lo >= 0 else 0) + (slot >= 0) + (conv and r["out_off"] >= 0)
        out_b, part_b = rows * cols * elem * dests, rows * width * 4 * (slot >= 0)
        store = (part_b or out_b) / l2
        if prm.warp_specialized:
            mem, store = mem + store, 0.0
        m, k = sched.block_m, (k_hi - k_lo) * sched.bk
        flops = 2 * m * width * k if conv else 0
        iters, stages = (k_hi - k_lo if conv else 1), cfg.num_stages if pipelined else 1
        if pooled and not prm.halo_smem:
            slice_ = sched.bk if conv else min(width, POOL_SLICE)
            if (r["pkh"], r["pkw"]) == (3, 3) and pool_unrolled(sched.block_m, slice_):
                # Unrolled taps (``_pool_tile``, P3): a chunk's nine loads issue together, one round
                # trip per chunk, no prefetch of the next (the loop runs one stage); a pool item
                # walks its columns 32 at a time, a round trip each.
                iters, stages = (iters if conv else -(-width // slice_)), 1
            else:  # a runtime loop of single loads: a round trip per tap (one halo tile would not)
                sliced = not conv and (r["pkh"], r["pkw"]) == (3, 3)  # 32 channels at a time, each a loop
                iters, stages = iters * taps * (-(-width // slice_) if sliced else 1), 1
        dur = prm.item_us * 1e-6 + atomics * lat + pm._loop_s(iters, flops / rate, mem, prm, stages) + store
        combine = lat + ((n_splits - 1) * part_b + out_b) / l2 if slot >= 0 else 0.0
        done = out_b * (split == n_splits - 1)  # the last split stores the result
        out.append((dur, combine, a_l2 + wts / prm.weight_share + other + part_b + done, a + wts + other, flops, done))
    return out


def simulate(sched: GraphSchedule, costs, grid: int) -> float:
    """``perf_model.simulate`` of the graph table: a consumer waits for the producer tiles its taps
    read (all their column blocks: the finish of the last one); a conv writing a workspace makes
    its tile ready."""
    src = [nd[NODE["src"]] == SRC_WS for nd in sched.nodes]
    graph = sched.graph
    return pm.simulate(sched.items, costs, grid,
                       lambda r: ((graph.nodes[r[0]].src, t) for t in range(r[7], r[8] + 1)) if src[r[0]] and r[7] >= 0
                       else (), lambda r: (r[0], r[1]) if sched.nodes[r[0]][NODE["out_off"]] >= 0 else None)


def kernel(graph: BlockGraph, n: int, h: int, w: int, dtype: torch.dtype, gpu: pm.Gpu, prm: pm.Params,
           cfg: TileConfig | None = None, change: tuple = ()) -> dict:
    """Predicted GPU time of one graph-kernel launch (``cfg``: the launcher's default, with the
    fields of ``change`` replaced), with the table the launcher builds for ``programs_per_sm``
    programs on each SM."""
    cfg = replace(cfg or default_graph_config(graph, n, h, w, gpu.sms, dtype), **dict(change))
    programs, elem = gpu.sms * cfg.programs_per_sm, torch.empty((), dtype=dtype).element_size()
    sched = graph_schedule_for(graph, n, h, w, cfg, programs)
    grid = max(1, min(len(sched.items), programs))
    costs = _costs(sched, cfg, gpu, prm, elem, grid)
    makespan, critical = simulate(sched, costs, grid), simulate(sched, costs, len(sched.items))
    sizes = graph.map_sizes(h, w)
    ws = sum(n * sizes[i][0] * sizes[i][1] * graph.nodes[i].cout * elem for i, nd in enumerate(sched.nodes)
             if nd[NODE["out_off"]] >= 0)
    dram = block_min_bytes(graph, n, h, w, elem)["total"] + ws
    loads = item_loads(sched, elem)
    work = sum(c[0] + c[1] / r[5] for c, r in zip(costs, sched.items))
    return {"items": len(sched.items), "simulated": len(costs), "grid": grid, "waves": len(sched.items) / grid,
            "schedule": sched, "config": cfg, "macs": sum(x[3] for x in loads),
            "issued_flops": sum(c[4] for c in costs), "load_bytes": sum(c[3] for c in costs),
            "store_bytes": sum(c[5] for c in costs),
            "l2_bytes": sum(c[2] for c in costs), "dram_bytes": dram, "busy": work / (grid * makespan),
            "critical_us": critical * 1e6, "makespan_us": makespan * 1e6,
            "gpu_us": max(makespan, dram / (gpu.dram_tbs * 1e12)) * 1e6}


# -- blocks and the network -------------------------------------------------------------------------------
def _floor_us(flops: float, nbytes: float, gpu: pm.Gpu) -> float:
    """The roofline floor at the anchors: FLOPs at the fp16 matmul rate or bytes at the copy rate."""
    return max(flops / (gpu.mma_tflops * 1e12), nbytes / (gpu.dram_tbs * 1e12)) * 1e6


def predict_blocks(gpu: pm.Gpu, prm: pm.Params, batches=BATCHES, fid: bool = False, change: tuple = ()) -> list[dict]:
    """Per block and batch (fp16, channels_last, each block at its 299x299 map size): the fused
    launch (the better of an eager launch and a graph replay, ``perf_model._ours``; its config
    with ``change``), the peers, the roofline floor."""
    rows = []
    for name, (graph, hw) in (FID_BLOCKS if fid else INCEPTION_V3_BLOCKS).items():
        for n in batches:
            k = kernel(graph, n, hw, hw, torch.float16, gpu, prm, change=change)
            seg = pm.peer_segments(graph, n, hw, hw, torch.float16, gpu, prm)
            pe = pm.peer_times(seg, prm)
            floor = _floor_us(block_flops(graph, n, hw, hw), block_min_bytes(graph, n, hw, hw, 2)["total"], gpu)
            rows.append({"block": name, "kind": graph.kind, "n": n, "hw": hw, "graph": graph,
                         "fused": pm._ours(k["gpu_us"], prm),
                         "gpu_us": k["gpu_us"], "segments": seg, "peers": pe, "floor": floor, "detail": k,
                         "best_peer": min(pe["eager"], pe["graphs"], pe["compile"])})
    return rows


def _add(*segs: dict) -> dict:
    return {key: sum(s[key] for s in segs) for key in ("work", "kernels", "host")}


def predict_network(block_rows: list[dict], n: int, gpu: pm.Gpu, prm: pm.Params, fid: bool = False) -> dict:
    """End to end at batch ``n``, fp16, from the blocks' rows at that batch: the stem and the head
    (and pytorch-fid's resize and scaling) are peer kernels for every provider; each block is its
    peers' kernels, or for the fused network one launch (its host time ``host_fused_us``)."""
    elem, feat = 2, n * 2048 * 2
    image = n * 3 * IMAGE * IMAGE * elem
    stem = pm.peer_segments(STEM, n, IMAGE, IMAGE, torch.float16, gpu, prm)
    pre = [("stream", 2 * image)] * (2 if fid else 0)  # pytorch-fid's resize and 2x - 1
    head = [("stream", 64 * feat + feat)] + ([] if fid else [("conv", n, CLASSES, 2048, feat + 2048 * CLASSES * elem)])
    outer = {name: _add(stem[name], pm.segment(pre + head, len(pre + head), gpu, prm, False))
             for name in ("eager", "compile")}
    blocks = [r for r in block_rows if r["n"] == n]
    peers = pm.peer_times({name: _add(outer[name], *(r["segments"][name] for r in blocks)) for name in outer}, prm)
    fused_work = outer["eager"]["work"] + sum(r["gpu_us"] for r in blocks)
    kernels = outer["eager"]["kernels"] + len(blocks)
    eager_launch = max(fused_work + kernels * prm.gap_eager_us,
                       outer["eager"]["host"] * prm.host_op_us + len(blocks) * prm.host_fused_us)
    fused = min(eager_launch, fused_work + kernels * prm.gap_graph_us)
    macs = STEM.macs(n, IMAGE, IMAGE) + sum(r["graph"].macs(n, r["hw"], r["hw"]) for r in blocks)
    macs += 0 if fid else n * 2048 * CLASSES
    weights = STEM.weight_count + sum(r["graph"].weight_count for r in blocks) + (0 if fid else 2048 * CLASSES)
    out = feat if fid else n * CLASSES * elem
    floor = _floor_us(2 * macs, image + out + weights * elem, gpu)
    best = min(("eager", "graphs", "compile"), key=peers.get)
    return {"n": n, "fused": fused, "peers": peers, "best": best, "best_peer": peers[best], "floor": floor,
            "macs": macs, "kernels": {"fused": kernels, **peers["kernels"]}}


def predict(gpu: pm.Gpu, prm: pm.Params, batches=BATCHES, fid: bool = False, change: tuple = ()) -> dict:
    rows = predict_blocks(gpu, prm, batches, fid, change)
    return {"gpu": gpu, "params": prm, "fid": fid, "batches": batches, "rows": rows,
            "network": [predict_network(rows, n, gpu, prm, fid) for n in batches]}


# Tile configs the launcher could pick instead of its default (cumulative). Neither compiles
# without spilling today (compile_report.py --graph --sweep: 240-530 bytes on sm_90), so these say
# what removing the kernel's register pressure would be worth, not what it runs.
WHAT_IFS = (("128-wide column blocks (spill today)", (("block_n", 128),)),
            ("+ 128-pixel tiles (spill today)", (("block_n", 128), ("block_m", 128))))


# -- tables -------------------------------------------------------------------------------------------------
def render(pred: dict, markdown: bool = False, what_ifs: bool = True) -> str:
    gpu, prm = pred["gpu"], pred["params"]
    net = "pytorch-fid's FID Inception-v3" if pred["fid"] else "Inception-v3 (torchvision, aux_logits=False)"
    lines = [f"PREDICTIONS (performance model, not measurements): {net}, {gpu.name}, {prm.name} parameters",
             f"anchors: {gpu.mma_tflops:.0f} TFLOP/s fp16 matmul, {gpu.dram_tbs:.2f} TB/s copy; fp16 channels_last", "",
             "per block, times in us; fused: the graph kernel, the better of an eager launch and a graph replay; "
             "x best: best peer / fused; %floor: roofline floor / fused"]
    body = []
    for r in pred["rows"]:
        pe, d = r["peers"], r["detail"]
        body.append([r["block"], r["kind"], r["n"], f"{r['fused']:.1f}", f"{pe['eager']:.1f}", f"{pe['graphs']:.1f}",
                     f"{pe['compile']:.1f}", f"{r['best_peer'] / r['fused']:.2f}x", f"{r['floor'] / r['fused']:.0%}",
                     d["items"], f"{d['waves']:.1f}", f"{d['critical_us']:.1f}",
                     f"{d['issued_flops'] / 2 / d['macs']:.2f}", f"{d['l2_bytes'] / 1e6:.0f}",
                     f"{d['dram_bytes'] / 1e6:.1f}", f"{d['busy']:.0%}"])
    lines.append(pm.table(["block", "kind", "N", "fused", "eager", "graphs", "compile", "x best", "%floor", "items",
                         "waves", "crit", "MAC pad", "L2 MB", "DRAM MB", "busy"], body, markdown))
    body = []
    for e in pred["network"]:
        n = e["n"]
        body.append([n, f"{e['fused'] / 1e3:.3f}", f"{e['peers']['eager'] / 1e3:.3f}",
                     f"{e['peers']['graphs'] / 1e3:.3f}", f"{e['peers']['compile'] / 1e3:.3f}",
                     f"{e['best_peer'] / e['fused']:.2f}x", f"{e['floor'] / e['fused']:.0%}",
                     f"{n / e['fused'] * 1e6:.0f}", f"{n / e['best_peer'] * 1e6:.0f} ({e['best']})"])
    lines += ["", f"end to end, {IMAGE}x{IMAGE} images, times in ms (stem and head on cuDNN for every provider):",
              pm.table(["N", "fused", "eager", "graphs", "compile", "x best", "%floor", "fused img/s",
                        "best peer img/s"], body, markdown)]
    if what_ifs:
        body = []
        for label, change in WHAT_IFS:
            alt = predict(gpu, prm, pred["batches"], pred["fid"], change)
            body.append([label] + [f"{e['best_peer'] / e['fused']:.2f}x, {e['n'] / e['fused'] * 1e6:.0f} img/s"
                                   for e in alt["network"]])
        lines += ["", "what-ifs (the graph kernel's tile config changed as named, cumulative): end to end vs best peer",
                  pm.table(["config", *(f"N={n}" for n in pred["batches"])], body, markdown)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpu", choices=sorted(pm.GPUS) + ["both"], default="both")
    ap.add_argument("--params", default="both",
                    help="optimistic, pessimistic, both, or a JSON file written by calibrate.py")
    ap.add_argument("--fid", action="store_true", help="pytorch-fid's FID Inception (its block variants, no fc)")
    ap.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    ap.add_argument("--markdown", action="store_true", help="markdown tables (for the README)")
    ap.add_argument("--no-what-ifs", action="store_true", help="skip the what-if tile configs (each re-predicts all)")
    args = ap.parse_args(argv)
    sets = (list(pm.PARAM_SETS.values()) if args.params == "both" else
            [pm.PARAM_SETS[args.params]] if args.params in pm.PARAM_SETS else [pm.load_params(args.params)])
    for gpu in (pm.GPUS.values() if args.gpu == "both" else [pm.GPUS[args.gpu]]):
        for prm in sets:
            print(render(predict(gpu, prm, tuple(args.batches), args.fid), args.markdown, not args.no_what_ifs) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
