"""Per-call host overhead at batch 1: direct Triton launch vs the registered op vs the module.

Paths timed (same inputs, same tile config, fused path only):
  direct      inception_forward_triton(x, packed, spec, cfg)           (no dispatcher, config chosen once)
  custom_op   torch.ops.fused_inception.inception_forward(...)         (what the module calls)
  triton_op   the same launcher registered with torch.library.triton_op (eager: no wrap_triton needed)
  module      FusedInception.forward under torch.no_grad()            (input checks + cache lookup + op)
  module+grad FusedInception.forward with requires_grad parameters    (+ folding each call, autograd)

Each path: warm-up, then `iters` back-to-back calls; "wall" is the mean time per call with one
synchronize at the end (at batch 1 this is host-bound), "gpu" the kernel time (do_bench median).
Writes JSON to benchmarks/results/op_overhead.json (or --out).

Usage (GPU): python benchmarks/op_overhead.py [--block 3a] [--dtype fp16] [--iters 2000]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import triton

import fused_inception as fi
from fused_inception.kernels.triton_inception import inception_forward_triton
from fused_inception.kernels.tuning import pick_config


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--block", default="3a")
    ap.add_argument("--variant", default="torchvision")
    ap.add_argument("--dtype", default="fp16", choices=["fp16", "bf16", "fp32"])
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--out", default="benchmarks/results/op_overhead.json")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA device")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    spec = fi.googlenet_spec(args.block, args.variant)
    hw = fi.GOOGLENET_SPATIAL[args.block]
    block = fi.FusedInception.from_spec(spec, device="cuda", dtype=dtype).eval()
    x = torch.randn(1, spec.in_channels, hw, hw, device="cuda", dtype=dtype).contiguous(
        memory_format=torch.channels_last)
    packed = block.packed_weights(dtype)
    ch = list(spec.channels)
    cfg = pick_config(x, packed, spec)

    @torch.library.triton_op("fused_inception_bench::inception_forward", mutates_args=())
    def via_triton_op(x: torch.Tensor, w_in: torch.Tensor, b_in: torch.Tensor, w3: torch.Tensor,
                      b3: torch.Tensor, w5: torch.Tensor, b5: torch.Tensor, wp: torch.Tensor,
                      bp: torch.Tensor) -> torch.Tensor:
        return inception_forward_triton(x, fi.packing.PackedWeights(w_in, b_in, w3, b3, w5, b5, wp, bp), spec, cfg)

    op = torch.ops.fused_inception.inception_forward
    paths = {
        "direct": lambda: inception_forward_triton(x, packed, spec, cfg),
        "custom_op": lambda: op(x, *packed, ch, spec.k3, spec.k5, spec.relu, "triton"),
        "triton_op": lambda: via_triton_op(x, *packed),
        "module": lambda: block(x),
    }
    results = {}
    with torch.no_grad():
        for name, fn in paths.items():
            results[name] = time_path(fn, args.iters)
    block.requires_grad_(True)
    results["module+grad"] = time_path(lambda: block(x), args.iters)
    gpu_ms = triton.testing.do_bench(paths["direct"], return_mode="median")
    record = {
        "device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
        "python": platform.python_version(), "block": args.block, "variant": args.variant,
        "dtype": args.dtype, "batch": 1, "iters": args.iters, "gpu_kernel_us": gpu_ms * 1e3,
        "wall_us_per_call": results,
        "overhead_vs_direct_us": {k: v - results["direct"] for k, v in results.items()},
    }
    print(json.dumps(record, indent=1))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")


def time_path(fn, iters: int) -> float:
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(3):  # best of three repetitions of `iters` calls
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t0) / iters * 1e6)
    return best


if __name__ == "__main__":
    main()
