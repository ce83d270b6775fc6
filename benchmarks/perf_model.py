"""Predicted times of the fused Inception kernel (v4, and v3 for reference) and of its peers on an
H100 SXM or H200. A performance model: every number it prints is a prediction, not a measurement.

Why: kernel v4 was written without a GPU, and its goals (batch 1: >= 3x the best peer; batch 256:
>= 50% of the roofline floor and >= 1.5x the best peer; KernelBench's module: >= 4x torch.compile)
need a forecast to plan against. ``calibrate.py`` fits the kernel's parameters on the first GPU
and writes a JSON file that ``--params FILE`` loads.

Kernel v4: the launcher's own work table (``tuning.default_config`` + ``schedule_for``, planned for
the grid simulated: ``programs_per_sm`` on each SM), row by row, as is. An item is one K-loop: the
first chunk waits an L2 round trip, the others cost max(MMA, L2 traffic, latency / (stages - 1)),
or a round trip more each in the pool's single-buffered loop. MMA runs at the anchor rate times
``mma_eff``; tensor cores and L2 are shared equally by an SM's programs (a waiting program lends
nothing: this errs slow for short items). L2 traffic: the bytes each item's loads request, counted
as ``tiling_analysis.load_bytes`` counts them (masked lanes move nothing; a test checks the totals
agree), every KxK tap from L2 (the pipelined loads skip L1: LDGSTS.E.BYPASS.128, cp.async.cg in
v4's sm_90 SASS), the pool's plain LDGs served by L1 where taps share rows (``pool_l1``), plus the
stores. Each atomic (ticket, release, each tile acquired, split arrival) costs a round trip. Items
are list-scheduled onto the persistent programs in ticket order: a C item holds its program until
the P items of its halo's tiles are done (the table issues it a wave of programs later, so it
seldom waits); the last split reads the others' partials and runs the epilogue. DRAM bytes (x,
weights, output, R written once, read back from L2 soon after) floor the makespan. The critical
path: the same with a program per item. ``WHAT_IFS`` re-run it with changes the Triton kernel lacks
(TMA multicast, halo loads, warp specialization), to say what would close each shortfall.

Kernel v3 (git 88a1f92, no longer in the package): its decomposition re-derived from that commit's
``default_config``/``_work_items`` and ``tiling_analysis.py`` (its MAC counts match NOTES.md's): 8x8
tiles; a KxK item recomputes the 1x1 reduce on its halo in 32-pixel chunks, then runs K*K tap loops
of 1-2 chunks that cannot pipeline; work strided statically over the programs.

Peers: eager PyTorch + cuDNN (20 kernels for a torchvision block: 6 convs, 6 BatchNorms, 6 ReLUs,
pool, cat), the same in a CUDA graph, and torch.compile (6 cuDNN convs, BN+ReLU fused into the two
reduce maps' kernels and one cat kernel, the pool: 10). A conv costs its 128-pixel tiles in waves
over the SMs at ``conv_eff`` (same K-loop latency model) or its bytes, whichever is more; a
streaming kernel its bytes (at the L2 rate if they fit in half the L2). Each kernel adds a launch
gap; eager and compiled runs are also bounded by the host's time per launch.

Anchors (pinned, not tuned): 798 TFLOP/s dense fp16/bf16 matmul and 3.0 TB/s device copy, measured
by this project on an H100 SXM (3.35 TB/s spec); TF32 at half that rate (the datasheet ratio). H200:
the same 132 SMs and clocks, 4.8 TB/s spec times the H100's measured/spec ratio = 4.30 TB/s (a copy
measured 4.3 TB/s on this workplace's H200, where PyTorch reported 60 MB of L2: device notes,
KINDS.md, 2026-10-28). Peer anchor: KernelBench level 3 problem 6 on an H100, torch 2.5: eager 8.77
ms, torch.compile 5.16 ms. Its module (KernelBench/level3/6_GoogleNetInceptionModule.py, read): 480
in; 1x1 192; 3x3 96 -> 208; a true 5x5 (padding 2) 16 -> 48; pool proj 64; every conv with bias; no
BatchNorm, no ReLU; batch 10, 224x224, contiguous fp32, TF32 convs (PyTorch's cuDNN default). Both
parameter sets must reproduce both times within +-25% (``kernelbench_check``, tested).

One assumption the check needs: cuDNN's TF32 engines run NHWC, so each eager conv on NCHW tensors
transposes its input and its output (26 kernels with the bias adds); without the transposes the
model gives 4.6-5.7 ms (-48%, -35%). Inductor's layout optimisation converts x to channels_last once
and writes the output back as NCHW (11 kernels). ``calibrate.py`` lists the eager kernels to check.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import sys
from collections import Counter
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import block_flops, block_min_bytes  # noqa: E402

from fused_inception import GOOGLENET_BLOCKS, GOOGLENET_SPATIAL, InceptionSpec, googlenet_spec  # noqa: E402
from fused_inception.kernels.schedule import C3, KINDS, P, Q, Schedule  # noqa: E402
from fused_inception.kernels.tuning import TileConfig, default_config, schedule_for  # noqa: E402


@dataclass(frozen=True)
class Gpu:
    name: str
    sms: int
    mma_tflops: float  # dense fp16/bf16, measured (the anchor)
    dram_tbs: float  # device copy, read + write
    l2_mb: float


GPUS = {"h100": Gpu("H100 SXM", 132, 798.0, 3.0, 50.0),
        "h200": Gpu("H200", 132, 798.0, 3.0 * 4.8 / 3.35, 60.0)}


@dataclass(frozen=True)
class Params:
    """What the anchors leave open; ``calibrate.py`` fits the kernel's part."""

    name: str
    mma_eff: float  # share of the anchor rate the kernel's tl.dot loop sustains
    l2_tbs: float  # L2 -> SMs, aggregate
    latency_us: float  # one L2 round trip (a load that starts a loop, an atomic)
    item_us: float  # per item: table row, barriers, epilogue
    gap_eager_us: float  # GPU time per kernel beyond its work, eager stream
    gap_graph_us: float  # the same inside a CUDA graph
    host_op_us: float  # host time per eager op or compiled-wrapper launch
    host_fused_us: float  # the fused module's host time per call
    pool_l1: bool  # the pool's nine shifted loads share rows in L1 (else all nine come from L2)
    conv_eff: float  # share of the anchor rate cuDNN convs sustain on large shapes
    stream_eff: float  # share of the copy bandwidth elementwise/pool/cat/transpose kernels reach
    sources: str = ""
    # What the kernel could do that the Triton v4 kernel does not (WHAT_IFS):
    c_late: bool = False  # C items issued a wave of tiles after their producers (table order only)
    weight_share: int = 1  # programs sharing one weight-tile load (TMA multicast in a cluster)
    halo_smem: bool = False  # a tile's halo rows loaded once, taps read from shared memory
    warp_specialized: bool = False  # a producer warp keeps loads in flight, stores overlap: no latency floor
    block_m: int = 0  # pixel rows per tile, where the map has a tile per SM (128: two consumer warpgroups)


OPTIMISTIC = Params(
    "optimistic", mma_eff=0.8, l2_tbs=10.0, latency_us=0.3, item_us=0.5, gap_eager_us=3.0, gap_graph_us=1.5,
    host_op_us=4.0, host_fused_us=24.0, pool_l1=True, conv_eff=0.75, stream_eff=1.0,
    sources="mma_eff 0.8: Triton's Hopper GEMMs against cuBLAS at large sizes (assumption: this loop has no "
            "TMA); l2 10 TB/s: assumption, 60% of 132 SMs x 64 B/clk x 1.98 GHz; latency 0.3 us, item 0.5 us: "
            "assumptions (calibrate.py fits both); pool_l1: the pool's loads are plain LDGs, so L1 can serve "
            "the rows its nine taps share (assumption); gaps 3/1.5 us: usual eager/graph launch "
            "spacing (assumption); host 4 us/op: ~280k eager ops/s (H. He, 'Making Deep Learning Go Brrrr'); "
            "host_fused 24 us: README (module's work before the launch, measured on CPU); conv 0.75, stream "
            "1.0: assumptions held to the KernelBench check")
PESSIMISTIC = Params(
    "pessimistic", mma_eff=0.5, l2_tbs=5.5, latency_us=0.6, item_us=1.5, gap_eager_us=5.0, gap_graph_us=2.5,
    host_op_us=8.0, host_fused_us=24.0, pool_l1=False, conv_eff=0.55, stream_eff=0.85,
    sources="mma_eff 0.5: the mma.sync (HMMA) path part of v3's dots compiled to (NOTES, SASS); l2 5.5 TB/s: "
            "Chips and Cheese's H100 PCIe L2 bandwidth (2023, recalled, not re-read); latency 0.6 us: about a "
            "DRAM round trip; every pool tap from L2; item 1.5 us, gaps 5/2.5 us, host 8 us/op (cuDNN "
            "dispatch), conv 0.55, stream 0.85: assumptions held to the KernelBench check")
PARAM_SETS = {p.name: p for p in (OPTIMISTIC, PESSIMISTIC)}

KB_SPEC = InceptionSpec(480, 192, 96, 208, 16, 48, 64, k3=3, k5=5, bias=True, batch_norm=False, relu=False)
KB_SHAPE = (10, 224, 224)
KB_MEASURED_MS = {"eager": 8.77, "compile": 5.16}  # KernelBench, H100, torch 2.5
BATCHES = (1, 32, 256)


def load_params(path: str | Path) -> Params:
    """A parameter set from ``calibrate.py``'s JSON ({"params": {...}}); missing fields keep the
    optimistic values, so a file that fitted only the kernel's part still loads."""
    data = json.loads(Path(path).read_text())
    given = data.get("params", data)
    names = {f.name for f in fields(Params)}
    base = {f.name: getattr(OPTIMISTIC, f.name) for f in fields(Params)}
    base.update({k: v for k, v in given.items() if k in names})
    base["name"] = given.get("name", Path(path).stem)
    return Params(**base)


def _mma_rate(gpu: Gpu, eff: float, fp32: bool) -> float:
    """FLOP/s of one SM's tensor cores."""
    return gpu.mma_tflops * 1e12 * eff * (0.5 if fp32 else 1.0) / gpu.sms


def _pool_taps(rows: int, unique_rows: float, prm: Params) -> float:
    """L2 loads of the 3x3 max-pool per plain load of its ``rows``: nine, or the rows the taps
    cover (a flat tile plus an image row and a pixel either side) when L1 serves the overlap."""
    return min(9.0, unique_rows / rows) if prm.pool_l1 or prm.halo_smem else 9.0


def _loop_s(iters: int, mma_s: float, mem_s: float, prm: Params, stages: int) -> float:
    """A K-loop of ``iters`` chunks: the first waits a round trip, the rest are limited by the
    tensor cores, the L2 traffic or the loads in flight (stages - 1 of them); a loop that is not
    multi-buffered (one stage) waits a round trip in every chunk."""
    lat = prm.latency_us * 1e-6
    per = max(mma_s, mem_s) / iters
    if stages <= 1 and not prm.warp_specialized:
        return iters * (lat + per)
    return lat + per + (iters - 1) * max(per, 0.0 if prm.warp_specialized else lat / max(stages - 1, 1))


# -- kernel v4 --------------------------------------------------------------------------------------
def _v4_costs(sched: Schedule, cfg: TileConfig, gpu: Gpu, prm: Params, elem: int, grid: int):
    """(duration, combine) in seconds and L2 bytes for every row of the table; ``combine``, the
    partials' sum, is paid once per split item, by its last split."""
    s = sched.spec
    share = max(grid, gpu.sms) / gpu.sms  # programs per SM while all are busy
    rate = _mma_rate(gpu, prm.mma_eff, elem == 4) / share
    l2 = prm.l2_tbs * 1e12 / gpu.sms / share
    lat = prm.latency_us * 1e-6
    n_cols = {P: s.ch1x1 + s.ch3x3red + s.ch5x5red, Q: s.pool_proj, C3: s.ch3x3}
    s_w = sched.w
    out = []
    for row in sched.items:
        kind, tile, c0, width, _, n_splits, slot, dep_lo, dep_hi, k_lo, k_hi = row
        m, n, k = sched.item_mnk(row)
        rows = min(m, sched.pixels - tile * m)
        cols = min(width, n_cols.get(kind, s.ch5x5) - c0)
        iters, ch = k_hi - k_lo, sched.chunk_of(kind)
        if kind in (P, Q):
            kv = min(k_hi * ch, s.in_channels) - k_lo * ch
            a = rows * kv * elem * (_pool_taps(rows, rows + 2 * s_w + 2, prm) if kind == Q else 1)
        else:
            kv = iters * min(ch, s.ch3x3red if kind == C3 else s.ch5x5red)
            a = rows * kv * elem  # one tap per chunk, all from L2
            if prm.halo_smem:
                k_sz = s.k3 if kind == C3 else s.k5
                a = min(a, (rows + (k_sz - 1) * (s_w + 1)) * kv * elem / k_sz**2)
        mem = (a + kv * cols * elem / prm.weight_share) / l2
        atomics = 1 + (kind == P) + (dep_hi - dep_lo + 1 if dep_lo >= 0 else 0) + (slot >= 0)
        store = rows * (width * 4 if slot >= 0 else cols * elem) / l2
        if prm.warp_specialized:  # the store leaves through TMA while the next loop runs
            mem, store = mem + store, 0.0
        stages = 1 if kind == Q else cfg.num_stages  # the pool's loop is single-buffered (tl.range, POOL)
        loop = _loop_s(iters, 2 * m * n * k / rate, mem, prm, stages)
        dur = prm.item_us * 1e-6 + atomics * lat + loop + store
        combine = n_splits * rows * width * 4 / l2 + lat if slot >= 0 else 0.0
        out.append((dur, combine, (mem + store + combine / n_splits) * l2))  # one split adds them up
    return out


def _simulate(sched: Schedule, costs, grid: int) -> float:
    """Makespan of ``grid`` persistent programs claiming tickets in order (list scheduling)."""
    free = [0.0] * grid
    heap = [(0.0, p) for p in range(grid)]
    ready = [0.0] * sched.n_tiles
    splits: dict[int, list] = {}
    end = 0.0
    for row, (dur, combine, _) in zip(sched.items, costs):
        while True:
            t, p = heapq.heappop(heap)
            if t == free[p]:
                break
        start = max([t] + ready[row[7]:row[8] + 1]) if row[7] >= 0 else t
        fin = free[p] = start + dur
        heapq.heappush(heap, (fin, p))
        if row[6] >= 0:
            arrived = splits.setdefault(row[6], [])
            arrived.append((fin, p))
            if len(arrived) < row[5]:
                continue
            fin, p = max(arrived)  # the last to arrive adds the partials
            fin = free[p] = fin + combine
            heapq.heappush(heap, (fin, p))
        if row[0] == P:
            ready[row[1]] = max(ready[row[1]], fin)
        end = max(end, fin)
    return end


def _issue_c_late(sched: Schedule, grid: int) -> Schedule:
    """The table with each C item moved a wave of tiles later (still after its producers, so the
    protocol stays deadlock-free): by its claim its P items are done and its program need not spin."""
    late = -(-grid * sched.n_tiles // len(sched.items))
    out, held, cur = [], {}, -1
    for row in sched.items:
        if row[0] >= C3:
            held.setdefault(cur, []).append(row)
            continue
        if row[1] != cur:
            cur = row[1]
            out += held.pop(cur - late, [])
        out.append(row)
    return replace(sched, items=tuple(out + [r for t in sorted(held) for r in held[t]]))


def kernel_v4(spec: InceptionSpec, n: int, h: int, w: int, dtype: torch.dtype, gpu: Gpu, prm: Params,
              cfg: TileConfig | None = None) -> dict:
    """Predicted GPU time of one v4 launch (``cfg``: the launcher's heuristic by default)."""
    cfg = cfg or default_config(spec, n, h, w, gpu.sms, dtype)
    if prm.block_m and n * h * w >= prm.block_m * gpu.sms:  # only where it still gives every SM a tile
        cfg = replace(cfg, block_m=prm.block_m)
    sched = schedule_for(spec, n, h, w, cfg)
    elem = torch.empty((), dtype=dtype).element_size()
    grid = min(len(sched.items), gpu.sms * cfg.programs_per_sm)
    if prm.c_late:
        sched = _issue_c_late(sched, grid)
    costs = _v4_costs(sched, cfg, gpu, prm, elem, grid)
    makespan = _simulate(sched, costs, grid)
    critical = _simulate(sched, costs, len(sched.items))
    dram = block_min_bytes(spec, n, h, w, elem)["total"] + n * h * w * (spec.ch3x3red + spec.ch5x5red) * elem
    shapes = Counter((KINDS[r[0]], *sched.item_mnk(r)) for r in sched.items)
    work = sum(c[0] + c[1] / r[5] for c, r in zip(costs, sched.items))
    return {"items": len(sched.items), "grid": grid, "waves": len(sched.items) / grid,
            "issued_flops": sum(2 * m * nn * k * c for (_, m, nn, k), c in shapes.items()), "mma_shapes": shapes,
            "l2_bytes": sum(c[2] for c in costs), "busy": work / (grid * makespan),
            "dram_bytes": dram, "critical_us": critical * 1e6, "makespan_us": makespan * 1e6,
            "gpu_us": max(makespan, dram / (gpu.dram_tbs * 1e12)) * 1e6, "config": cfg}


# -- kernel v3 (historical decomposition, git 88a1f92) ---------------------------------------------
def _p2(v: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, 1 << (v - 1).bit_length()))


def kernel_v3(spec: InceptionSpec, n: int, h: int, w: int, dtype: torch.dtype, gpu: Gpu, prm: Params) -> dict:
    """Predicted GPU time of one v3 launch, with v3's heuristic config (8x8 tiles, bn 64, bk 32,
    br up to 64, 32-pixel halo chunks, 2 stages, whole-branch KxK items; bn 32 and one channel block
    per KxK item when the work would not cover the SMs)."""
    s, elem, cdiv = spec, torch.empty((), dtype=dtype).element_size(), (lambda a, b: -(-a // b))
    bk, br, hc, bm = _p2(s.in_channels, 16, 32), _p2(max(s.ch3x3red, s.ch5x5red), 16, 64), 32, 64
    tiles = cdiv(h, 8) * cdiv(w, 8)
    fill = h * w / (tiles * bm)  # valid share of a tile's pixels (masked loads move no bytes)

    def per_tile(bn: int, g: int) -> list[tuple[str, int]]:
        return ([("k3", j) for j in range(cdiv(s.ch3x3, bn * g))] + [("k5", j) for j in range(cdiv(s.ch5x5, bn * g))]
                + [("c1", j) for j in range(cdiv(s.ch1x1, bn))] + [("cp", j) for j in range(cdiv(s.pool_proj, bn))])

    bn, g = 64, max(cdiv(s.ch3x3, 64), cdiv(s.ch5x5, 64))
    if len(per_tile(bn, g)) * n * tiles < gpu.sms:
        bn, g = 32, 1
    kinds = per_tile(bn, g)
    work = len(kinds) * n * tiles
    grid = min(work, gpu.sms * 2)
    share = max(grid, gpu.sms) / gpu.sms
    rate = _mma_rate(gpu, prm.mma_eff, elem == 4) / share
    l2 = prm.l2_tbs * 1e12 / gpu.sms / share
    cin_it = cdiv(s.in_channels, bk)
    flops, durations = 0, {}
    for kind, j in dict.fromkeys(kinds):
        loops = []  # (iterations, flops, L2 bytes)
        if kind in ("c1", "cp"):
            a = bm * fill * bk * elem * (_pool_taps(bm, 100, prm) if kind == "cp" else 1)  # 8x8 tile: 10x10
            loops.append((cin_it, cin_it * 2 * bm * bn * bk, cin_it * (a + bk * bn * elem)))
            store = bm * fill * bn * elem
        else:
            cred, cout, k = (s.ch3x3red, s.ch3x3, s.k3) if kind == "k3" else (s.ch5x5red, s.ch5x5, s.k5)
            brb = min(br, _p2(cred, 16, 128))
            nred, halo = cdiv(cred, brb), (8 + k - 1) ** 2
            it = (hc * bk + bk * brb) * elem * cin_it
            loops += [(cin_it, cin_it * 2 * hc * brb * bk, it)] * (cdiv(halo, hc) * nred)
            blocks = sum(1 for gg in range(g) if (j * g + gg) * bn < cout)
            loops += [(nred, nred * 2 * bm * bn * brb, nred * (bm * brb + brb * bn) * elem)] * (blocks * k * k)
            store = cdiv(halo, hc) * hc * brb * nred * elem + blocks * bm * fill * bn * elem
        t = prm.item_us * 1e-6 + sum(_loop_s(i, f / rate, b / l2, prm, 2) for i, f, b in loops) + store / l2
        durations[kind, j] = t
        flops += sum(f for _, f, _ in loops) * n * tiles
    load = [0.0] * grid  # program p runs works p, p + grid, ...
    for work_i in range(work):
        load[work_i % grid] += durations[kinds[work_i // (n * tiles)]]
    dram = block_min_bytes(spec, n, h, w, elem)["total"]
    return {"items": work, "grid": grid, "waves": work / grid, "issued_flops": flops, "dram_bytes": dram,
            "gpu_us": max(max(load), dram / (gpu.dram_tbs * 1e12)) * 1e6}


# -- peers ------------------------------------------------------------------------------------------
def _peer_kernels(spec: InceptionSpec, n: int, h: int, w: int, elem: int, nchw: bool) -> dict[str, list]:
    """The kernels each peer launches: ("conv", M, N, K, bytes) or ("stream", bytes)."""
    s, pix = spec, n * h * w
    x, out = pix * s.in_channels * elem, pix * s.out_channels * elem
    units = [(s.in_channels, s.ch1x1, 1), (s.in_channels, s.ch3x3red, 1), (s.ch3x3red, s.ch3x3, s.k3),
             (s.in_channels, s.ch5x5red, 1), (s.ch5x5red, s.ch5x5, s.k5), (s.in_channels, s.pool_proj, 1)]
    convs = [("conv", pix, co, ci * k * k, pix * (ci + co) * elem + ci * co * k * k * elem) for ci, co, k in units]
    eager = [("stream", 2 * x)] + list(convs) + [("stream", 2 * out)]  # pool, convs, cat
    for ci, co, _ in units:
        y = pix * co * elem
        eager += [("stream", 2 * y)] * (int(s.batch_norm) + int(s.relu) + int(s.bias and not s.batch_norm))
        if nchw:  # cuDNN's NHWC engines: transpose in, transpose out
            eager += [("stream", 2 * pix * ci * elem), ("stream", 2 * y)]
    reduce = [("stream", 2 * pix * c * elem) for c in (s.ch3x3red, s.ch5x5red)]  # their bias/BN/ReLU, fused
    compiled = convs + reduce + [("stream", 2 * x), ("stream", 2 * out)] + ([("stream", 2 * x)] if nchw else [])
    host = {"eager": 6 + 6 * (int(s.batch_norm) + int(s.relu)) + 2, "compile": len(compiled)}
    return {"eager": eager, "compile": compiled, "host": host}


def _kernel_s(kern, gpu: Gpu, prm: Params, fp32: bool) -> float:
    nbytes = kern[-1]
    bw = prm.l2_tbs * 1e12 if nbytes <= gpu.l2_mb * 2**20 / 2 else gpu.dram_tbs * 1e12 * prm.stream_eff
    t = nbytes / bw
    if kern[0] == "conv":
        _, m, n, k, _ = kern
        tn = min(128, max(32, 1 << (n - 1).bit_length()))
        waves = math.ceil(math.ceil(m / 128) * math.ceil(n / tn) / gpu.sms)
        chunks = math.ceil(k / 64)  # a 4-stage K-loop, as the fused kernel's (same latency model)
        t = max(t, waves * _loop_s(chunks, 2 * 128 * tn * k / _mma_rate(gpu, prm.conv_eff, fp32), 0.0, prm, 4))
    return t


def peers(spec: InceptionSpec, n: int, h: int, w: int, dtype: torch.dtype, gpu: Gpu, prm: Params,
          nchw: bool = False) -> dict:
    """Predicted times (us) of eager PyTorch + cuDNN, the same under CUDA graphs, and torch.compile."""
    fp32 = dtype == torch.float32
    ks = _peer_kernels(spec, n, h, w, torch.empty((), dtype=dtype).element_size(), nchw)
    work = {name: sum(_kernel_s(k, gpu, prm, fp32) for k in ks[name]) * 1e6 for name in ("eager", "compile")}
    return {"eager": max(work["eager"] + len(ks["eager"]) * prm.gap_eager_us, ks["host"]["eager"] * prm.host_op_us),
            "graphs": work["eager"] + len(ks["eager"]) * prm.gap_graph_us,
            "compile": max(work["compile"] + len(ks["compile"]) * prm.gap_eager_us,
                           ks["host"]["compile"] * prm.host_op_us),
            "kernels": {"eager": len(ks["eager"]), "compile": len(ks["compile"])}}


def kernelbench_check(prm: Params) -> dict:
    """The peer model on KernelBench's module (H100) against its measured times: within +-25%?"""
    pred = peers(KB_SPEC, *KB_SHAPE, torch.float32, GPUS["h100"], prm, nchw=True)
    out = {}
    for name, ms in KB_MEASURED_MS.items():
        err = pred[name] / 1e3 / ms - 1
        out[name] = {"predicted_ms": pred[name] / 1e3, "measured_ms": ms, "error": err, "ok": abs(err) <= 0.25}
    return out


# -- tables ---------------------------------------------------------------------------------------
def _ours(t_gpu: float, prm: Params) -> float:
    """The fused op's time per call: the better of an eager launch and a CUDA-graph replay."""
    return min(max(prm.host_fused_us, t_gpu + prm.gap_eager_us), t_gpu + prm.gap_graph_us)


def predict(gpu: Gpu, prm: Params, batches=BATCHES, with_v3: bool = True) -> dict:
    rows = []
    for name in GOOGLENET_BLOCKS:
        spec, hw = googlenet_spec(name), GOOGLENET_SPATIAL[name]
        for n in batches:
            v4 = kernel_v4(spec, n, hw, hw, torch.float16, gpu, prm)
            v3 = kernel_v3(spec, n, hw, hw, torch.float16, gpu, prm) if with_v3 else {"gpu_us": math.nan}
            pe = peers(spec, n, hw, hw, torch.float16, gpu, prm)
            floor = max(block_flops(spec, n, hw, hw) / (gpu.mma_tflops * 1e12),
                        block_min_bytes(spec, n, hw, hw, 2)["total"] / (gpu.dram_tbs * 1e12)) * 1e6
            rows.append({"block": name, "n": n, "v3": _ours(v3["gpu_us"], prm), "v4": _ours(v4["gpu_us"], prm),
                         "peers": pe, "best_peer": min(pe["eager"], pe["graphs"], pe["compile"]), "floor": floor,
                         "detail": v4})
    kb_v4 = kernel_v4(KB_SPEC, *KB_SHAPE, torch.float32, gpu, prm)
    kb_v3 = kernel_v3(KB_SPEC, *KB_SHAPE, torch.float32, gpu, prm)
    kb = {"v3": _ours(kb_v3["gpu_us"], prm), "v4": _ours(kb_v4["gpu_us"], prm), "detail": kb_v4,
          "peers": peers(KB_SPEC, *KB_SHAPE, torch.float32, gpu, prm, nchw=True)}
    return {"gpu": gpu, "params": prm, "rows": rows, "kb": kb, "kb_check": kernelbench_check(prm)}


GOALS = (("b1", "batch 1: v4 >= 3x the best peer, every block", 3.0),
         ("b256", "batch 256: v4 >= 1.5x the best peer, every block", 1.5),
         ("floor", "batch 256: v4 >= 50% of the roofline floor, every block", 0.5),
         ("kb", "KernelBench module: v4 >= 4x torch.compile", 4.0))
WHAT_IFS = (("C items issued a wave later (table order: Triton can)", {"c_late": True}),
            ("+ weights multicast to 2-SM clusters (TMA multicast)", {"c_late": True, "weight_share": 2}),
            ("+ halo rows once in shared memory (TMA halo/im2col loads)",
             {"c_late": True, "weight_share": 2, "halo_smem": True}),
            ("+ producer warp and two consumer warpgroups, 128-pixel tiles (warp specialization)",
             {"c_late": True, "weight_share": 2, "halo_smem": True, "warp_specialized": True, "block_m": 128}))


def goal_values(pred: dict) -> dict[str, tuple[str, float]]:
    """Each goal's number for its worst block: (block, value)."""
    def worst(n: int, key) -> tuple[str, float]:
        r = min((r for r in pred["rows"] if r["n"] == n), key=key)
        return r["block"], key(r)

    return {"b1": worst(1, lambda r: r["best_peer"] / r["v4"]),
            "b256": worst(256, lambda r: r["best_peer"] / r["v4"]),
            "floor": worst(256, lambda r: r["floor"] / r["v4"]),
            "kb": ("", pred["kb"]["peers"]["compile"] / pred["kb"]["v4"])}


def _fmt_goal(key: str, block: str, value: float, need: float) -> str:
    v = f"{value:.0%}" if key == "floor" else f"{value:.2f}x"
    short = "" if value >= need else f", short by {1 - value / need:.0%}"
    return f"{block} {v}{short}".strip()


def render(pred: dict, markdown: bool = False) -> str:
    gpu, prm = pred["gpu"], pred["params"]

    def table(headers, rows):
        if markdown:
            return "\n".join(["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
                             + ["| " + " | ".join(map(str, r)) + " |" for r in rows])
        widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
        return "\n".join("  ".join(str(x).rjust(wd) for x, wd in zip(r, widths)) for r in [headers, *rows])

    lines = [f"PREDICTIONS (performance model, not measurements): {gpu.name}, {prm.name} parameters",
             f"anchors: {gpu.mma_tflops:.0f} TFLOP/s fp16 matmul, {gpu.dram_tbs:.2f} TB/s copy, {gpu.l2_mb:.0f} MB L2; "
             f"sources: {prm.sources}", "",
             "times in us per block, fp16 channels_last; v3/v4: the better of an eager launch and a graph replay"]
    body = []
    for r in pred["rows"]:
        pe, d = r["peers"], r["detail"]
        body.append([r["block"], r["n"], f"{r['v3']:.1f}", f"{r['v4']:.1f}", f"{pe['eager']:.1f}",
                     f"{pe['graphs']:.1f}", f"{pe['compile']:.1f}", f"{r['best_peer'] / r['v4']:.2f}x",
                     f"{r['floor'] / r['v4']:.0%}", d["items"], f"{d['waves']:.1f}", f"{d['critical_us']:.1f}",
                     f"{d['l2_bytes'] / 1e6:.0f}", f"{d['dram_bytes'] / 1e6:.1f}", f"{d['busy']:.0%}"])
    lines.append(table(["block", "N", "v3", "v4", "eager", "graphs", "compile", "v4 vs best", "v4 %floor",
                        "items", "waves", "crit", "L2 MB", "DRAM MB", "busy"], body))
    kb, chk = pred["kb"], pred["kb_check"]
    pe = kb["peers"]
    lines += ["", f"KernelBench module (fp32/TF32, NCHW, 10x480x224x224), ms: v3 {kb['v3'] / 1e3:.2f}, v4 "
              f"{kb['v4'] / 1e3:.2f}; eager {pe['eager'] / 1e3:.2f} ({pe['kernels']['eager']} kernels), graphs "
              f"{pe['graphs'] / 1e3:.2f}, compile {pe['compile'] / 1e3:.2f} ({pe['kernels']['compile']} kernels)",
              "peer model vs KernelBench on an H100 (must be within +-25%): " + ", ".join(
                  f"{k} {v['predicted_ms']:.2f} vs {v['measured_ms']:.2f} ms ({v['error']:+.0%}, "
                  f"{'ok' if v['ok'] else 'FAIL'})" for k, v in chk.items()), "", "goals (worst block):"]
    values = goal_values(pred)
    for key, label, need in GOALS:
        block, value = values[key]
        lines.append(f"  {'PASS ' if value >= need else 'SHORT'}  {label}: {_fmt_goal(key, block, value, need)}")
    rows = []
    for label, change in WHAT_IFS:
        vals = goal_values(predict(gpu, replace(prm, **change), with_v3=False))
        rows.append([label] + [_fmt_goal(k, *vals[k], need) for k, _, need in GOALS])
    lines += ["", "what-ifs (v4 changed as named, cumulative; the worst block per goal):",
              table(["v4 with", "batch 1 vs best", "batch 256 vs best", "batch 256 %floor", "KB vs compile"], rows)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpu", choices=sorted(GPUS), default="h100")
    ap.add_argument("--params", default="both",
                    help="optimistic, pessimistic, both, or a JSON file written by calibrate.py")
    ap.add_argument("--markdown", action="store_true", help="markdown tables (for NOTES.md)")
    args = ap.parse_args(argv)
    sets = (list(PARAM_SETS.values()) if args.params == "both" else
            [PARAM_SETS[args.params]] if args.params in PARAM_SETS else [load_params(args.params)])
    for prm in sets:
        print(render(predict(GPUS[args.gpu], prm), args.markdown) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
