"""Fit perf_model.py's kernel parameters on the first GPU session (H100 or H200), in under 4 min.

The model's parameter sets are assumptions: this measures them and writes
``benchmarks/results/calibration-<gpu>.json`` for ``perf_model.py --params FILE``. Steps (times are
``triton.testing.do_bench`` medians unless said otherwise):
1. the eager KernelBench module's kernels (profiler): are the NCHW transposes the model assumes there?
2. the L2 rate (re-reading 8 MiB); per-kernel gaps (tiny ops queued behind a sleep, and in a CUDA
   graph); host time per eager op and per fused-module call (wall clock);
3. a single-loop microkernel shaped like a v4 item (ticket, K-loop of tl.dot over L2-resident tiles,
   store): dots alone give ``mma_eff``; a full grid at 1 and 4 items per program and 4-64 chunks,
   by least squares, the cost per item (``item_us`` is that less the ticket, the first round trip and
   the store); one program on a narrow tile, with too little MMA to hide anything, ``latency_us``;
4. blocks 3a, 4e, 5b at batch 1 and 256: the fused kernel, eager PyTorch and its CUDA graph beside the
   model's predictions (recorded, not fitted to). A case starts only within ``--budget`` seconds.
   torch.compile is left out: compiling it would take most of the four minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import triton
import triton.language as tl

import fused_inception as fi
from fused_inception.kernels.triton_inception import inception_forward_triton

sys.path.insert(0, str(Path(__file__).resolve().parent))
import perf_model as pm  # noqa: E402

BM, BN, BK, STAGES = 128, 128, 64, 3


@triton.jit
def _item_loop(a_ptr, b_ptr, c_ptr, state_ptr, n_items, n_programs, chunks, LOAD: tl.constexpr,
               BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """v4's item structure: ticket loop, a run-time K-loop (pipelined with cp.async, as v4's), store."""
    rm, rn, rk = tl.arange(0, BM), tl.arange(0, BN), tl.arange(0, BK)
    a_tile = a_ptr + rm[:, None] * BK + rk[None, :]
    b_tile = b_ptr + rk[:, None] * BN + rn[None, :]
    a, b, t = tl.load(a_tile), tl.load(b_tile), tl.atomic_add(state_ptr, 1)
    while t < n_items:
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for i in range(0, chunks):
            if LOAD:  # eight chunk tiles, 384 KB in all: they stay in L2
                a = tl.load(a_tile + ((t + i) % 8) * BM * BK)
                b = tl.load(b_tile + ((t + i) % 8) * BK * BN)
            acc = tl.dot(a, b, acc)
        tl.store(c_ptr + (t % 1024) * BM * BN + rm[:, None] * BN + rn[None, :], acc.to(tl.float16))
        t = tl.atomic_add(state_ptr, 1)
    if tl.atomic_add(state_ptr + 1, 1) == n_programs - 1:  # the last out resets the state
        tl.store(state_ptr + tl.arange(0, 2), tl.zeros((2,), dtype=tl.int32))


@triton.jit
def _l2_read(x_ptr, out_ptr, n, REPS: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for r in range(REPS):
        acc += tl.load(x_ptr + (offs + r * 4099 * BLOCK) % n).to(tl.float32)
    tl.store(out_ptr + offs, acc)


def bench_ms(fn) -> float:
    return triton.testing.do_bench(fn, warmup=10, rep=40, return_mode="median")


def wall_us(fn, iters: int = 300) -> float:
    """Host time per call: back to back, one synchronize (at this size the host is the limit)."""
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters * 1e6


def launches(ops: int = 50) -> dict:
    x = torch.zeros(16, device="cuda")

    def queued():  # GPU-side spacing: the ops wait behind a sleep, so the host is never the limit
        torch.cuda._sleep(2_000_000)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(ops):
            torch.add(x, 1)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) * 1e3 / ops

    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(ops):
            torch.add(x, 1)
    return {"gap_eager_us": min(queued() for _ in range(5)), "gap_graph_us": bench_ms(g.replay) * 1e3 / ops,
            "host_op_us": wall_us(lambda: torch.add(x, 1))}


def microkernel(sms: int, peak: float, l2_tbs: float) -> dict:
    a, b = (torch.randn(8 * BK * k, device="cuda", dtype=torch.float16) for k in (BM, BN))
    c, state = torch.empty(1024 * BM * BN, device="cuda", dtype=torch.float16), torch.zeros(2, device="cuda").int()

    def run(grid: int, items: int, chunks: int, load: bool, bm: int = BM, bn: int = BN) -> float:
        def fn():
            _item_loop[(grid,)](a, b, c, state, items, grid, chunks, LOAD=load, BM=bm, BN=bn, BK=BK,
                                num_warps=8 if bm == 128 else 4, num_stages=STAGES)
        return bench_ms(fn) * 1e-3

    grid, flops = 2 * sms, 2 * BM * BN * BK
    mma = (run(grid, grid, 256, False) - run(grid, grid, 32, False)) / 224  # seconds per chunk, full grid
    pts = [(i, ch, run(grid, grid * i, ch, True)) for i in (1, 4) for ch in (4, 16, 64)]
    rows = torch.tensor([[1.0, i, i * ch] for i, ch, _ in pts], dtype=torch.float64)
    t0, item, chunk = torch.linalg.lstsq(rows, torch.tensor([t for *_, t in pts], dtype=torch.float64)).solution
    one = (run(1, 1, 64, True, 64, 32) - run(1, 1, 8, True, 64, 32)) / 56  # latency-bound: 0.26 MFLOP a chunk
    latency = one * (STAGES - 1)
    per_prog_l2 = l2_tbs * 1e12 / grid
    us = {"chunk_full_grid": float(chunk), "chunk_mma_only": mma, "chunk_one_program": one,
          "chunk_model": max(mma, (BM + BN) * BK * 2 / per_prog_l2, latency / (STAGES - 1)), "intercept": float(t0)}
    return {"fitted": {"mma_eff": grid * flops / mma / peak, "latency_us": latency * 1e6,
                       "item_us": max(0.0, float(item) - 2 * latency - BM * BN * 2 / per_prog_l2) * 1e6},
            "raw": {**{f"{k}_us": v * 1e6 for k, v in us.items()}, "points_us": [(i, ch, t * 1e6) for i, ch, t in pts]}}


def l2_rate() -> float:
    n, block, reps = 4 * 2**20, 4096, 64  # 8 MiB of fp16
    x, out = torch.randn(n, device="cuda", dtype=torch.float16), torch.empty(n, device="cuda")
    ms = bench_ms(lambda: _l2_read[(n // block,)](x, out, n, REPS=reps, BLOCK=block))
    return n * 2 * reps / (ms * 1e-3) / 1e12


def blocks(gpu: pm.Gpu, prm: pm.Params, deadline: float) -> list:
    """Measured (fused kernel, eager, CUDA graph) against predicted, per block and batch."""
    out = []
    for name in ("3a", "4e", "5b"):
        spec, hw = fi.googlenet_spec(name), fi.GOOGLENET_SPATIAL[name]
        packed = fi.FusedInception.from_spec(spec, device="cuda", dtype=torch.float16).packed_weights(torch.float16)
        ref = fi.ReferenceInception(spec).cuda().half().to(memory_format=torch.channels_last).eval()
        for n in (1, 256):
            if time.monotonic() > deadline:
                out.append({"block": name, "n": n, "skipped": "past the time budget"})
                continue
            x = torch.randn(n, spec.in_channels, hw, hw, device="cuda").half().to(memory_format=torch.channels_last)
            cfg, g = pm.default_config(spec, n, hw, hw, gpu.sms, torch.float16), torch.cuda.CUDAGraph()
            with torch.no_grad():
                ref(x)
                with torch.cuda.graph(g):
                    ref(x)
                ms = [bench_ms(lambda: inception_forward_triton(x, packed, spec, cfg)),  # noqa: B023
                      bench_ms(lambda: ref(x)), bench_ms(g.replay)]  # noqa: B023
            pred = pm.peers(spec, n, hw, hw, torch.float16, gpu, prm)
            pred["v4"] = pm.kernel_v4(spec, n, hw, hw, torch.float16, gpu, prm, cfg)["gpu_us"]
            out.append({"block": name, "n": n,
                        "measured_us": dict(zip(("v4", "eager", "graphs"), [t * 1e3 for t in ms])),
                        "predicted_us": {k: pred[k] for k in ("v4", "eager", "graphs")}})
    return out


def kernelbench_kernels() -> dict:
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's default, as KernelBench ran
    ref = fi.ReferenceInception(pm.KB_SPEC).cuda().eval()
    x = torch.rand(*pm.KB_SHAPE[:1], 480, *pm.KB_SHAPE[1:], device="cuda")
    with torch.no_grad():
        ref(x)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            ref(x)
            torch.cuda.synchronize()
    names = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    return {"kernels": len(names), "transposes": sum("tonhwc" in k.lower() or "tonchw" in k.lower() for k in names),
            "names": names}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="JSON to write (default benchmarks/results/calibration-<gpu>.json)")
    ap.add_argument("--budget", type=float, default=150.0, help="seconds after which no block case starts")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("calibrate.py needs a CUDA GPU (H100 or H200): nothing was measured, nothing written.", file=sys.stderr)
        return 2
    os.environ["FUSED_INCEPTION_AUTOTUNE"] = "0"  # the module runs the heuristic config, as the model assumes
    deadline = time.monotonic() + args.budget
    dev = torch.cuda.get_device_name()
    key = "h200" if "H200" in dev else "h100"
    gpu, kb = pm.GPUS[key], kernelbench_kernels()
    fitted = {"l2_tbs": l2_rate(), **launches()}
    micro = microkernel(gpu.sms, gpu.mma_tflops * 1e12, fitted["l2_tbs"])
    fitted.update(micro["fitted"])
    f3a = fi.FusedInception.from_spec(fi.googlenet_spec("3a"), device="cuda", dtype=torch.float16).eval()
    x1 = torch.randn(1, 192, 28, 28, device="cuda").half().to(memory_format=torch.channels_last)
    with torch.no_grad():
        fitted["host_fused_us"] = wall_us(lambda: f3a(x1))
    prm = replace(pm.OPTIMISTIC, **fitted, name=f"calibrated-{key}", sources=f"calibrate.py on {dev}; the rest "
                  "(pool_l1, conv_eff, stream_eff) as the optimistic set")
    record = {"device": dev, "torch": torch.__version__, "triton": triton.__version__,
              "params": {k: getattr(prm, k) for k in ("name", "sources", *fitted)}, "microkernel": micro["raw"],
              "kernelbench_eager": kb, "blocks": blocks(gpu, prm, deadline)}
    out = Path(args.out or Path(__file__).resolve().parent / "results" / f"calibration-{key}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: record[k] for k in ("params", "microkernel", "blocks")}, indent=1))
    print(f"KernelBench eager: {kb['kernels']} kernels, {kb['transposes']} NCHW/NHWC transposes\nwrote {out}; "
          f"predictions with it: python benchmarks/perf_model.py --gpu {key} --params {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
