#!/usr/bin/env python
"""One Inception block, fused versus what you would use instead: time, spread, roofline.

Default (on a CUDA GPU): the nine GoogLeNet blocks at batch 1, 32 and 256 at their GoogLeNet map
sizes, fp16, channels_last, torchvision-style blocks (BatchNorm, folded for every provider), eval
mode, every provider. The run first measures its own ceilings (device copy bandwidth, matmul
rate), checks each provider against an fp64 reference, then times it. Results: a table on stdout,
and JSON (every number and the environment), the table and a PNG under benchmarks/results/.

Without CUDA it says so and what a GPU run prints, and runs a correctness pass instead (no
timing): eager PyTorch, torch.compile (Inductor's C++ backend, default mode: without CUDA graphs
max-autotune only adds autotuning time) and the fused Triton kernel in Triton's interpreter, at a tiny
size (block 3a, batch 2, 5x5, fp32 by default; the interpreter is slow), and exits 0 when every
check passes.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import _common as C
import torch

GPU_DEFAULTS = {"blocks": "all", "batches": "1,32,256", "dtype": "fp16", "spatial": None,
                "compile_mode": "max-autotune"}
CPU_DEFAULTS = {"blocks": "3a", "batches": "2", "dtype": "fp32", "spatial": 5, "compile_mode": "default"}
GPU_OUTPUT = ("a table per block, batch and dtype: median and p20-p80 time, TFLOP/s, GB/s, % of the roofline "
              "floor and the speedup over eager, eager-graph and torch.compile, saved with JSON and a PNG "
              "in benchmarks/results/")
BLOCK_NAMES = ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")  # == fused_inception.GOOGLENET_BLOCKS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench_block.py",
        description=__doc__.split("\n\n")[0] + " " + " ".join(__doc__.split("\n\n")[1:]).replace("\n", " "),
        formatter_class=C.HelpFormatter,
    )
    p.add_argument("--blocks", default=None,
                   help=f"comma-separated GoogLeNet blocks {','.join(BLOCK_NAMES)} or 'all' "
                        f"[GPU: {GPU_DEFAULTS['blocks']}; CPU: {CPU_DEFAULTS['blocks']}]")
    p.add_argument("--batches", default=None,
                   help=f"comma-separated batch sizes [GPU: {GPU_DEFAULTS['batches']}; CPU: {CPU_DEFAULTS['batches']}]")
    p.add_argument("--dtype", default=None,
                   help="comma-separated compute dtypes: fp32 (TF32 off), tf32 (fp32 tensors, TF32 on), fp16, bf16 "
                        f"[GPU: {GPU_DEFAULTS['dtype']}; CPU: {CPU_DEFAULTS['dtype']}]")
    p.add_argument("--layout", default="channels_last", help="comma-separated memory layouts: channels_last, nchw")
    p.add_argument("--spatial", type=int, default=None,
                   help="input height = width for every block [GPU: each block's GoogLeNet size, 28/14/7 for "
                        f"224x224 images; CPU: {CPU_DEFAULTS['spatial']}]")
    p.add_argument("--providers", default=",".join(C.DEFAULT_PROVIDERS),
                   help=f"comma-separated, from {','.join(C.ALL_PROVIDERS)} or 'all'. {C.PROVIDER_HELP}")
    p.add_argument("--warmup", type=float, default=25, help="warm-up time per provider and case, ms")
    p.add_argument("--rep", "--reps", type=float, default=100, help="measurement time per provider and case, ms")
    p.add_argument("--timing", choices=("auto", "events", "loop"), default="auto", help=C.TIMING_HELP)
    p.add_argument("--launch-bound-us", type=float, default=20.0,
                   help="--timing auto uses 'loop' below this roofline floor (microseconds)")
    p.add_argument("--max-buffers", type=int, default=64, help="most input buffers rotated per case")
    p.add_argument("--compile-mode", default=None,
                   help="torch.compile mode of the 'compile' provider (max-autotune uses CUDA graphs and "
                        "autotunes; reduce-overhead compiles much faster) "
                        f"[GPU: {GPU_DEFAULTS['compile_mode']}; CPU: {CPU_DEFAULTS['compile_mode']}]")
    p.add_argument("--compile-dynamic", action="store_true",
                   help="torch.compile(dynamic=None) (PyTorch's automatic dynamic shapes: fewer recompiles "
                        "across batch sizes) instead of one static compile per shape")
    p.add_argument("--time-mismatches", action="store_true",
                   help="time providers whose output check failed too (flagged MISMATCH in the table)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="start no new case after this many minutes; the results say the run is incomplete")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for bench_block<tag>.json/.txt/.png [GPU: benchmarks/results; CPU: none written]")
    p.add_argument("--tag", default="", help="suffix of the output file names, e.g. '_h200_fp16'")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, BN statistics and inputs")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG (matplotlib)")
    p.add_argument("--no-progress", action="store_true", help="no progress output for preparation steps")
    p.add_argument("--cpu", action="store_true", help="the CPU correctness pass even when CUDA is available")
    args = p.parse_args(argv)
    return args


def resolve(args: argparse.Namespace, cuda: bool) -> argparse.Namespace:
    d = GPU_DEFAULTS if cuda else CPU_DEFAULTS
    args.blocks = C.parse_list(args.blocks or d["blocks"], BLOCK_NAMES, "block")
    args.batches = C.parse_ints(args.batches or d["batches"], "batch size")
    args.dtype = C.parse_list(args.dtype or d["dtype"], C.DTYPE_CHOICES, "dtype")
    args.layout = C.parse_list(args.layout, ("channels_last", "nchw"), "layout")
    args.providers = C.parse_list(args.providers, C.ALL_PROVIDERS, "provider")
    args.compile_mode = args.compile_mode or d["compile_mode"]
    if args.spatial is None:
        args.spatial = d["spatial"]
    if args.spatial is not None and args.spatial < 1:
        raise ValueError("--spatial must be >= 1")
    if args.out is None and cuda:
        args.out = C.RESULTS_DIR
    return args


class Runner(C.CaseRunner):
    def run_case(self, block: str, batch: int, dtype_name: str, layout: str, progress: C.Progress) -> dict:
        fi, args = self.fi, self.args
        spec = fi.googlenet_spec(block, "torchvision")
        hw = args.spatial or fi.GOOGLENET_SPATIAL[block]
        dtype, elem = C.torch_dtype(dtype_name), C.element_bytes(dtype_name)
        channels_last = layout == "channels_last"
        C.set_precision(dtype_name)
        flops = C.block_flops(spec, batch, hw, hw)
        min_bytes = C.block_min_bytes(spec, batch, hw, hw, elem)
        tol = C.TOLERANCE_BLOCK[dtype_name]
        case: dict = {"block": block, "batch": batch, "dtype": dtype_name, "layout": layout, "height": hw,
                      "width": hw, "channels": list(spec.channels), "k3": spec.k3, "k5": spec.k5,
                      "flops": flops, "min_bytes": min_bytes, "tolerance": tol, "providers": {}}
        in_bytes = min_bytes["input"]
        if self.cuda:
            peak_flops = self.ceilings["matmul_tflops"][dtype_name] * 1e12
            peak_bw = self.ceilings["copy_gbps"] * 1e9
            floor_s, bound = C.roofline_floor_s(flops, min_bytes["total"], peak_flops, peak_bw)
            method = C.choose_method(args.timing, floor_s, args.launch_bound_us)
            nbuf = C.rotation_buffers(in_bytes, self.l2, args.max_buffers)
            case.update(floor_ms=floor_s * 1e3, floor_bound=bound, method=method, buffers=nbuf,
                        rotated_bytes=nbuf * in_bytes, l2_bytes=self.l2)
        else:
            method, nbuf = None, 1

        seed = args.seed * 1000 + BLOCK_NAMES.index(block)
        torch.manual_seed(seed)  # the block's conv weights (PyTorch's default init)
        base = C.randomize_batch_norms(fi.ReferenceInception(spec).eval(), seed)
        ref_model = copy.deepcopy(base).to(device=self.device, dtype=torch.float64)
        gen = torch.Generator(self.device).manual_seed(seed + 7919 * batch)
        fmt = torch.channels_last if channels_last else torch.contiguous_format

        def fresh() -> torch.Tensor:
            x = torch.randn(batch, spec.in_channels, hw, hw, generator=gen, device=self.device)
            return x.to(dtype).contiguous(memory_format=fmt)

        inputs = [fresh() for _ in range(nbuf)]
        # A fresh input that no provider is warmed up on, and its fp64 reference on a spread of images.
        x_check = fresh()
        idx = C.check_indices(batch)
        with torch.no_grad():
            ref = ref_model(x_check[idx].to(torch.float64))
        del ref_model
        for name in args.providers:
            progress.step(f"{block} N={batch} {dtype_name} {layout}: {name}")
            case["providers"][name] = self.run_provider(name, base, inputs, x_check, ref, idx, tol,
                                                        dtype, channels_last, method)
        if self.cuda:
            self.derive(case)
        return case

    def add_rates(self, case: dict, r: dict) -> None:
        """Throughput and roofline fraction of one timed provider."""
        s = r["median_ms"] * 1e-3
        r["tflops"] = case["flops"] / s / 1e12
        r["gbps"] = case["min_bytes"]["total"] / s / 1e9
        r["pct_floor"] = 100.0 * case["floor_ms"] / r["median_ms"]


# -- output ---------------------------------------------------------------------------------------
def gpu_table(data: dict) -> str:
    out = []
    ce = data["ceilings"]
    env = data["env"]
    out.append(f"device: {env['gpu']['name']}  torch {env['torch']}  triton {env['triton']}  CUDA {env['torch_cuda']}")
    out.append(f"ceilings (measured in this run): copy {ce['copy_gbps']:.0f} GB/s (read + write), matmul "
               + ", ".join(f"{k} {v:.0f} TFLOP/s" for k, v in ce["matmul_tflops"].items()))
    out.append("FLOPs: 2*N*H*W*(Cin*(C1+C3r+C5r+Cp) + K3^2*C3r*C3 + K5^2*C5r*C5), pool comparisons excluded. "
               "Minimum bytes: input read once + output written once + weights once.")
    out.append("%floor = roofline floor (max of FLOPs/matmul rate, bytes/copy bandwidth) / measured median.")
    headers = ["provider", "check", "median us", "p20-p80 us", "TFLOP/s", "GB/s", "%floor", "x eager",
               "x best peer", "note"]
    rows: list = []
    for c in data["cases"]:
        rows.append(f"{c['block']} N={c['batch']} {c['height']}x{c['width']} {c['dtype']} {c['layout']}: "
                    f"{c['flops'] / 1e9:.3g} GFLOP, {c['min_bytes']['total'] / 1e6:.3g} MB, floor "
                    f"{C.fmt(c['floor_ms'] * 1e3)} us ({c['floor_bound']}-bound), timing {c['method']} over "
                    f"{c['buffers']} input buffers, best peer {c.get('best_peer') or '-'}")
        for name, r in c["providers"].items():
            timed = r.get("median_ms") is not None
            rows.append([name, C.status_cell(r), C.fmt(r["median_ms"] * 1e3) if timed else "-",
                         f"{C.fmt(r['p20_ms'] * 1e3)}-{C.fmt(r['p80_ms'] * 1e3)}" if timed else "",
                         C.fmt(r.get("tflops")), C.fmt(r.get("gbps")), C.fmt(r.get("pct_floor")),
                         C.fmt(r.get("speedup_vs_eager")), C.fmt(r.get("speedup_vs_best_peer")),
                         (r.get("message") or "")[:70]])
        rows.append(None)
    out.append(C.format_table(headers, rows[:-1], right=(2, 4, 5, 6, 7, 8)))
    return "\n".join(out)


def cpu_table(data: dict) -> str:
    headers = ["block", "N", "HxW", "dtype", "layout", "provider", "status", "rel err", "tol", "wall s", "note"]
    rows = []
    for c in data["cases"]:
        for name, r in c["providers"].items():
            wall = (r.get("prepare_s") or 0) + (r.get("check_s") or 0)
            rows.append([c["block"], c["batch"], f"{c['height']}x{c['width']}", c["dtype"], c["layout"], name,
                         r.get("status", "-").upper() if r.get("status") in ("mismatch", "error") else r.get("status"),
                         C.fmt(r.get("rel_err"), 2), f"{c['tolerance']:g}", C.fmt(wall, 2) if wall else "-",
                         r.get("message", "")[:70]])
    return ("correctness pass (CPU, no timing; 'wall s' is preparation (compile, packing) and the checked forward "
            "in the interpreter or on CPU, not a benchmark)\n"
            + C.format_table(headers, rows, right=(1, 7, 8, 9)))


def plot(data: dict, path: Path) -> bool:
    plt = C.pyplot_or_warn()
    if plt is None:
        return False
    groups = C.group_cases(data["cases"], ("dtype", "layout"))
    width = max(10.0, 0.5 * max(len(v) for v in groups.values()) + 2)
    fig, axes = plt.subplots(2, len(groups), figsize=(width * len(groups), 9), squeeze=False)
    for col, ((dtype, layout), cases) in enumerate(groups.items()):
        labels = [f"{c['block']} N={c['batch']}" for c in cases]
        names = list(dict.fromkeys(n for c in cases for n in c["providers"]))
        fused = [n for n in names if C.provider_group(n) == "fused"]
        speed = {n: [c["providers"].get(n, {}).get("speedup_vs_best_peer") for c in cases] for n in fused}
        frac = {n: [c["providers"].get(n, {}).get("pct_floor") for c in cases] for n in names}
        gpu = data["env"].get("gpu", {}).get("name", "")
        C.plot_bars(plt, axes[0][col], labels, speed, log=True, ylabel="speedup over best peer (x)",
                    title=f"{gpu} {dtype} {layout}: fused vs best of eager / eager-graph / compile", hline=1.0)
        C.plot_bars(plt, axes[1][col], labels, frac, log=True, ylabel="% of roofline floor",
                    title="measured time vs roofline floor (100% = at the measured ceilings)", hline=100.0)
    return C.save_figure(plt, fig, path)


def main(argv: list[str] | None = None) -> int:
    args, cuda, fi = C.set_up_run("bench_block.py", parse_args(argv), resolve, GPU_OUTPUT)
    if args is None:
        return 2
    runner = Runner(fi, args, cuda)
    data = C.start_run("bench_block", args, cuda, C.TOLERANCE_BLOCK, ceiling_dtypes=args.dtype, device=runner.device)
    runner.ceilings = data.get("ceilings")
    if not cuda:
        data["note"] = ("CPU correctness pass: no timing. Providers that need CUDA are listed as unavailable. "
                        f"Triton interpreter: {'on' if C.interpreter_on() else 'off'}.")
    cases = [{"block": b, "batch": n, "dtype_name": d, "layout": lay}
             for d in args.dtype for lay in args.layout for b in args.blocks for n in args.batches]
    C.run_cases(data, args, cases, runner.run_case, label="{block} N={batch} {dtype_name} {layout}")
    table = gpu_table(data) if cuda else cpu_table(data)
    return C.finish_run(data, args, table, plot, failure_keys=("block", "batch", "dtype"),
                        failure_label="{block} N={batch} {dtype}")


if __name__ == "__main__":
    sys.exit(main())
