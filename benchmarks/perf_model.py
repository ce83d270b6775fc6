"""Predicted times of the fused Inception kernel (v4, and v3 for reference) and of its peers on an
H100 SXM or H200. A performance model: every number it prints is a prediction, not a measurement.

Why: kernel v4 was written without a GPU, and its goals (batch 1: >= 3x the best peer; batch 256:
>= 50% of the roofline floor and >= 1.5x the best peer; KernelBench's module: >= 4x torch.compile)
need a forecast to plan against. ``calibrate.py`` fits the kernel's parameters on the first GPU
and writes a JSON file that ``--params FILE`` loads.

Kernel v4: the launcher's own work table (``default_config`` + ``schedule_for`` planned for the grid
simulated, ``programs_per_sm`` per SM), row by row, as is. An item is one K-loop: the first chunk
waits an L2 round trip, the others cost max(MMA, L2 traffic, latency / (stages - 1)), or a round
trip more each in the pool's single-buffered loop. MMA runs at the anchor rate times ``mma_eff``;
tensor cores and L2 are shared equally by an SM's programs (a waiting program lends nothing: this
errs slow for short items). L2 traffic: the bytes each item's loads request (``tiling_analysis.item_loads``,
the count the interpreter makes: masked lanes move nothing), every KxK tap
from L2 (v4's sm_90 SASS: LDGSTS.E.BYPASS, cp.async.cg skips L1), the pool's plain LDGs served by L1
where taps share rows (``pool_l1``), and the stores. Each atomic (ticket, release, tile acquired,
split arrival) costs a round trip. Items are list-scheduled onto the persistent programs in ticket
order: a C item holds its program until the P items of its halo's tiles are done (the table issues
it about a wave of programs later, so it seldom waits); the last split reads the others' partials
and runs the epilogue. DRAM bytes (x, weights, output, R written once, read back from L2) floor the
makespan. The critical path: the same with a program per item. ``WHAT_IFS`` re-run it with what the
Triton kernel lacks (TMA multicast, halo loads, warp specialization): what would close each gap.

Kernel v3 (git 88a1f92, no longer in the package), re-derived from that commit's ``default_config``,
``_work_items`` and ``tiling_analysis.py`` (its MAC counts match NOTES.md's): 8x8 tiles; a KxK item
recomputes the 1x1 reduce on its halo in 32-pixel chunks, then runs K*K tap loops of 1-2 chunks that
cannot pipeline; work strided statically over the programs.

Peers: eager PyTorch + cuDNN (20 kernels for a torchvision block), the same in a CUDA graph, and
torch.compile (6 cuDNN convs, 2 fused BN+ReLU, cat, pool: 10). A conv costs its 128-pixel tiles in
waves at ``conv_eff`` (same K-loop model) or its bytes; a streaming kernel its bytes (at the L2 rate
if they fit in half the L2); each adds a launch gap; eager and compiled runs are also bounded by the
host's time per launch.

Anchors (pinned): 798 TFLOP/s fp16/bf16 matmul and 3.0 TB/s copy, measured by this project on an H100
SXM; TF32 at half. H200: the same SMs, 4.8 TB/s spec times the H100's measured/spec ratio = 4.30
TB/s (4.3 measured on this workplace's H200, 60 MB L2). Peer anchor: KernelBench level 3 problem 6
on an H100, torch 2.5: eager 8.77 ms, torch.compile 5.16 ms (``KB_SPEC``: biases, no BatchNorm or
ReLU, 10x480x224x224 NCHW fp32, TF32 convs). Both parameter sets must reproduce both within +-25%
(``kernelbench_check``, tested), which needs one assumption: cuDNN's TF32 engines run NHWC, so each
eager conv on NCHW transposes its input and output (26 kernels; without, -48%/-35%); Inductor
converts x to channels_last once and writes NCHW back (11 kernels). ``calibrate.py`` lists them.
"""

from __future__ import annotations

import argparse
import functools
import heapq
import json
import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from counting import block_flops, block_graph, block_min_bytes  # noqa: E402
from tiling_analysis import item_loads  # noqa: E402

from fused_inception import GOOGLENET_BLOCKS, GOOGLENET_SPATIAL, InceptionSpec, googlenet_spec  # noqa: E402
from fused_inception.kernels.schedule import C3, P, Q, Schedule  # noqa: E402
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
    weight_share: int = 1  # programs sharing one weight-tile load (TMA multicast in a cluster)
    halo_smem: bool = False  # a tile's halo rows loaded once, taps read from shared memory
    warp_specialized: bool = False  # a producer warp keeps loads in flight, stores overlap: no latency floor
    block_m: int = 0  # pixels per tile where that leaves a tile per SM (fp32 too; 128: two consumer warpgroups)


OPTIMISTIC = Params(
    "optimistic", mma_eff=0.8, l2_tbs=10.0, latency_us=0.3, item_us=0.5, gap_eager_us=3.0, gap_graph_us=1.5,
    host_op_us=4.0, host_fused_us=24.0, pool_l1=True, conv_eff=0.75, stream_eff=1.0,
    sources="mma_eff: Triton Hopper GEMMs vs cuBLAS (assumption, no TMA); l2: 60% of 132 SMs x 64 B/clk x 1.98 GHz "
            "(assumption); latency, item: assumptions (calibrate.py fits them); pool_l1: plain LDGs, L1 may serve the "
            "taps' shared rows; gaps: assumption; host 4 us/op: ~280k eager ops/s (H. He); host_fused: README "
            "(measured on CPU); conv, stream: assumptions held to the KernelBench check")
PESSIMISTIC = Params(
    "pessimistic", mma_eff=0.5, l2_tbs=5.5, latency_us=0.6, item_us=1.5, gap_eager_us=5.0, gap_graph_us=2.5,
    host_op_us=8.0, host_fused_us=24.0, pool_l1=False, conv_eff=0.55, stream_eff=0.85,
    sources="mma_eff: the mma.sync path part of v3's dots compiled to (SASS); l2: Chips and Cheese, H100 PCIe "
            "(recalled); latency: about a DRAM round trip; every pool tap from L2; item, gaps, host (cuDNN dispatch), "
            "conv, stream: assumptions held to the KernelBench check")
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
@functools.lru_cache(maxsize=64)
def _v4_costs(sched: Schedule, cfg: TileConfig, gpu: Gpu, prm: Params, elem: int, grid: int):
    """(duration, combine, L2 bytes, requested load bytes) for every row of the table. ``combine``
    (read the other partials, add, epilogue) is paid once per split item, by its last split. L2
    bytes: the loads that reach L2 (the pool's less what L1 serves, under ``pool_l1``) and stores."""
    s = sched.spec
    share = max(grid, gpu.sms) / gpu.sms  # programs per SM while all are busy
    rate = _mma_rate(gpu, prm.mma_eff, elem == 4) / share
    l2 = prm.l2_tbs * 1e12 / gpu.sms / share
    lat = prm.latency_us * 1e-6
    out = []
    for row, (a, wts, other, kv, cols) in zip(sched.items, item_loads(sched, elem)):
        kind, tile, _, width, split, n_splits, slot, dep_lo, dep_hi, k_lo, k_hi = row
        m, n, k = sched.item_mnk(row)
        rows, a_l2 = min(m, sched.pixels - tile * m), a
        if kind == Q and (prm.pool_l1 or prm.halo_smem):  # a flat tile plus an image row and a pixel either side
            a_l2 = min(a, (rows + 2 * sched.w + 2) * kv * elem)
        if kind >= C3 and prm.halo_smem:  # the halo rows once per reduce channel
            k_sz = s.k3 if kind == C3 else s.k5
            a_l2 = min(a, (rows + (k_sz - 1) * (sched.w + 1)) * kv * elem / k_sz**2)
        mem = (a_l2 + wts / prm.weight_share) / l2
        atomics = 1 + (kind == P) + (dep_hi - dep_lo + 1 if dep_lo >= 0 else 0) + (slot >= 0)
        out_b, part_b = rows * cols * elem, rows * width * 4 * (slot >= 0)  # epilogue store; a split's partial
        store = (part_b or out_b) / l2
        if prm.warp_specialized:  # the store leaves through TMA while the next loop runs
            mem, store = mem + store, 0.0
        # The pool's loop is single-buffered (tl.range, POOL: nine tap tiles would not fit); one halo tile would.
        stages = 1 if kind == Q and not prm.halo_smem else cfg.num_stages
        dur = prm.item_us * 1e-6 + atomics * lat + _loop_s(k_hi - k_lo, 2 * m * n * k / rate, mem, prm, stages) + store
        combine = lat + ((n_splits - 1) * part_b + out_b) / l2 if slot >= 0 else 0.0
        l2_bytes = a_l2 + wts / prm.weight_share + other + part_b + out_b * (split == n_splits - 1)
        out.append((dur, combine, l2_bytes, a + wts + other))
    return out


def simulate(items, costs, grid: int, waits: Callable[[tuple], Iterable], produces: Callable[[tuple], object]) -> float:
    """Makespan of ``grid`` persistent programs claiming the table's ``items`` in ticket order
    (list scheduling; ``costs``: (duration, combine, ...) per row). An item starts once its program
    is free and every key of ``waits(row)`` is ready; its finish readies ``produces(row)`` (None:
    nothing). Splits (row[4:7]): the last to arrive adds the partials (``combine``), then it is done."""
    free, heap, ready, end = [0.0] * grid, [(0.0, p) for p in range(grid)], {}, 0.0
    splits: dict[int, list] = {}
    for row, (dur, combine, *_) in zip(items, costs):
        t, p = heapq.heappop(heap)
        while t != free[p]:  # a stale entry: that program's last split went on to add the partials
            t, p = heapq.heappop(heap)
        start = max([t, *(ready.get(k, 0.0) for k in waits(row))])
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
        key = produces(row)
        if key is not None:
            ready[key] = max(ready.get(key, 0.0), fin)
        end = max(end, fin)
    return end


def _simulate(sched: Schedule, costs, grid: int) -> float:
    """``simulate`` of v4's table: a KxK item waits for the P items of the tiles its halo reads."""
    deps = (lambda r: range(r[7], r[8] + 1) if r[7] >= 0 else ())
    return simulate(sched.items, costs, grid, deps, lambda r: r[1] if r[0] == P else None)


def kernel_v4(spec: InceptionSpec, n: int, h: int, w: int, dtype: torch.dtype, gpu: Gpu, prm: Params,
              cfg: TileConfig | None = None) -> dict:
    """Predicted GPU time of one v4 launch (``cfg``: the launcher's heuristic by default), with the
    table the launcher builds for ``programs_per_sm`` programs on each SM."""
    cfg = cfg or default_config(spec, n, h, w, gpu.sms, dtype)
    if prm.block_m and n * h * w >= prm.block_m * gpu.sms:  # only where it still gives every SM a tile
        cfg = replace(cfg, block_m=prm.block_m)
    programs, elem = gpu.sms * cfg.programs_per_sm, torch.empty((), dtype=dtype).element_size()
    sched = schedule_for(spec, n, h, w, cfg, programs)  # the launcher's table for its max_programs
    grid = max(1, min(len(sched.items), programs))
    costs = _v4_costs(sched, cfg, gpu, prm, elem, grid)
    makespan, critical = _simulate(sched, costs, grid), _simulate(sched, costs, len(sched.items))
    dram = block_min_bytes(spec, n, h, w, elem)["total"] + n * h * w * (spec.ch3x3red + spec.ch5x5red) * elem
    work = sum(c[0] + c[1] / r[5] for c, r in zip(costs, sched.items))
    return {"items": len(sched.items), "grid": grid, "waves": len(sched.items) / grid, "schedule": sched,
            "issued_flops": sum(2 * m * nn * k for m, nn, k in map(sched.item_mnk, sched.items)),
            "l2_bytes": sum(c[2] for c in costs), "load_bytes": sum(c[3] for c in costs),
            "busy": work / (grid * makespan), "dram_bytes": dram, "critical_us": critical * 1e6,
            "makespan_us": makespan * 1e6, "gpu_us": max(makespan, dram / (gpu.dram_tbs * 1e12)) * 1e6,
            "config": cfg}


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
    fill, cin_it = h * w / (tiles * bm), cdiv(s.in_channels, bk)  # fill: valid share of a tile's pixels

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
    rate, l2 = _mma_rate(gpu, prm.mma_eff, elem == 4) / share, prm.l2_tbs * 1e12 / gpu.sms / share
    flops, durations = 0, {}
    for kind, j in dict.fromkeys(kinds):
        loops = []  # (iterations, flops, L2 bytes)
        if kind in ("c1", "cp"):
            taps = (min(9.0, 100 / bm) if prm.pool_l1 or prm.halo_smem else 9.0) if kind == "cp" else 1  # 8x8: 10x10
            a = bm * fill * bk * elem * taps
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
        durations[kind, j] = prm.item_us * 1e-6 + sum(_loop_s(i, f / rate, b / l2, prm, 2) for i, f, b in loops) \
            + store / l2
        flops += sum(f for _, f, _ in loops) * n * tiles
    load = [0.0] * grid  # program p runs works p, p + grid, ...
    for work_i in range(work):
        load[work_i % grid] += durations[kinds[work_i // (n * tiles)]]
    dram = block_min_bytes(spec, n, h, w, elem)["total"]
    return {"items": work, "grid": grid, "waves": work / grid, "issued_flops": flops, "dram_bytes": dram,
            "gpu_us": max(max(load), dram / (gpu.dram_tbs * 1e12)) * 1e6}


# -- peers ------------------------------------------------------------------------------------------
def _peer_kernels(block, n: int, h: int, w: int, elem: int, nchw: bool) -> dict[str, list]:
    """The kernels each peer launches for ``block`` (InceptionSpec or BlockGraph): ("conv", M, N, K,
    bytes) or ("stream", bytes). Eager: per conv a cuDNN conv and a kernel each for its BN, ReLU and
    a bias without BN; a kernel per pool; the concat. Compiled: the convs, one epilogue kernel per
    conv another node reads (an output conv's goes into the concat), the pools, the concat."""
    g = block_graph(block)
    sizes = g.map_sizes(h, w)

    def map_bytes(i: int) -> int:  # node i's map (-1: the input)
        hh, ww = (h, w) if i < 0 else sizes[i]
        return n * hh * ww * g.channels(i) * elem

    convs, pools, units, epilogues, transposes, unit_ops = [], [], [], [], [], 0
    for i, node in enumerate(g.nodes):
        x, y = map_bytes(node.src), map_bytes(i)
        if i not in g.convs:  # a pool
            pools.append(("stream", x + y))
            continue
        m, k = n * sizes[i][0] * sizes[i][1], node.taps * node.cin
        convs.append(("conv", m, node.cout, k, x + y + k * node.cout * elem))
        units += [("stream", 2 * y)] * (int(node.batch_norm) + int(node.relu) + int(node.bias and not node.batch_norm))
        unit_ops += int(node.batch_norm) + int(node.relu)  # a conv's bias is the conv's own op on the host
        if g.readers(i):
            epilogues.append(("stream", 2 * y))
        if nchw:  # cuDNN's NHWC engines: transpose in, transpose out
            transposes += [("stream", 2 * x), ("stream", 2 * y)]
    cat = [("stream", 2 * sum(map_bytes(i) for i in g.outputs))] if len(g.outputs) > 1 else []
    eager = pools + convs + cat + units + transposes
    compiled = convs + epilogues + pools + cat + ([("stream", 2 * map_bytes(-1))] if nchw else [])
    host = {"eager": len(convs) + unit_ops + len(pools) + len(cat), "compile": len(compiled)}
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


def segment(kernels: list, host_ops: int, gpu: Gpu, prm: Params, fp32: bool) -> dict:
    """A run of peer kernels: GPU work (us), kernel launches, host ops."""
    return {"work": sum(_kernel_s(k, gpu, prm, fp32) for k in kernels) * 1e6, "kernels": len(kernels),
            "host": host_ops}


def peer_segments(block, n: int, h: int, w: int, dtype: torch.dtype, gpu: Gpu, prm: Params,
                  nchw: bool = False) -> dict[str, dict]:
    """``segment`` of each peer's kernels ("eager": also under CUDA graphs; "compile") for ``block``."""
    ks, fp32 = _peer_kernels(block, n, h, w, torch.empty((), dtype=dtype).element_size(), nchw), dtype == torch.float32
    return {name: segment(ks[name], ks["host"][name], gpu, prm, fp32) for name in ("eager", "compile")}


def peer_times(seg: dict[str, dict], prm: Params) -> dict:
    """Predicted times (us) of eager PyTorch + cuDNN, the same under CUDA graphs, and torch.compile:
    GPU work plus a gap per kernel; eager and compiled runs also bounded by the host's time per op."""
    e, c = seg["eager"], seg["compile"]
    return {"eager": max(e["work"] + e["kernels"] * prm.gap_eager_us, e["host"] * prm.host_op_us),
            "graphs": e["work"] + e["kernels"] * prm.gap_graph_us,
            "compile": max(c["work"] + c["kernels"] * prm.gap_eager_us, c["host"] * prm.host_op_us),
            "kernels": {"eager": e["kernels"], "compile": c["kernels"]}}


def peers(block, n: int, h: int, w: int, dtype: torch.dtype, gpu: Gpu, prm: Params, nchw: bool = False) -> dict:
    """Predicted times (us) of the peers (``peer_times``) for ``block`` (InceptionSpec or BlockGraph)."""
    return peer_times(peer_segments(block, n, h, w, dtype, gpu, prm, nchw), prm)


def kernelbench_check(prm: Params) -> dict:
    """The peer model on KernelBench's module (H100) against its measured times: within +-25%?"""
    pred = peers(KB_SPEC, *KB_SHAPE, torch.float32, GPUS["h100"], prm, nchw=True)
    err = {name: pred[name] / 1e3 / ms - 1 for name, ms in KB_MEASURED_MS.items()}
    return {name: {"predicted_ms": pred[name] / 1e3, "measured_ms": ms, "error": e, "ok": abs(e) <= 0.25}
            for (name, ms), e in zip(KB_MEASURED_MS.items(), err.values())}


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
    kb = {"v3": _ours(kernel_v3(KB_SPEC, *KB_SHAPE, torch.float32, gpu, prm)["gpu_us"], prm),
          "v4": _ours(kb_v4["gpu_us"], prm), "detail": kb_v4,
          "peers": peers(KB_SPEC, *KB_SHAPE, torch.float32, gpu, prm, nchw=True)}
    return {"gpu": gpu, "params": prm, "rows": rows, "kb": kb, "kb_check": kernelbench_check(prm)}


GOALS = (("b1", "batch 1: v4 >= 3x the best peer, every block", 3.0),
         ("b256", "batch 256: v4 >= 1.5x the best peer, every block", 1.5),
         ("floor", "batch 256: v4 >= 50% of the roofline floor, every block", 0.5),
         ("kb", "KernelBench module: v4 >= 4x torch.compile", 4.0))
WHAT_IFS = (("weights multicast to 2-SM clusters (TMA multicast)", {"weight_share": 2}),
            ("+ halo rows once in shared memory, the pool pipelined (TMA halo/im2col loads)",
             {"weight_share": 2, "halo_smem": True}),
            ("+ producer warp and two consumer warpgroups, 128-pixel tiles in fp32 too (warp specialization)",
             {"weight_share": 2, "halo_smem": True, "warp_specialized": True, "block_m": 128}))


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


def table(headers, rows, markdown: bool = False) -> str:
    if markdown:
        return "\n".join(["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
                         + ["| " + " | ".join(map(str, r)) + " |" for r in rows])
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    return "\n".join("  ".join(str(x).rjust(wd) for x, wd in zip(r, widths)) for r in [headers, *rows])


def render(pred: dict, markdown: bool = False) -> str:
    gpu, prm = pred["gpu"], pred["params"]
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
                        "items", "waves", "crit", "L2 MB", "DRAM MB", "busy"], body, markdown))
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
              table(["v4 with", "batch 1 vs best", "batch 256 vs best", "batch 256 %floor", "KB vs compile"], rows,
                    markdown)]
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
