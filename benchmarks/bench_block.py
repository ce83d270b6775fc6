#!/usr/bin/env python
"""One Inception block, fused versus what you would use instead: time, spread, roofline.

Default (on a CUDA GPU): the nine GoogLeNet blocks at batch 1, 32 and 256 at their GoogLeNet map
sizes, fp16, channels_last, torchvision-style blocks (BatchNorm, folded for every provider), eval
mode, every provider. --family inception_v3 (or fid, pytorch-fid's variants) runs the eleven
Inception-v3 blocks Mixed_5b..Mixed_7c instead, at batch 1, 50 and 256 at their 299x299 map sizes
(35/17/8): the unfused block (fused_inception.ReferenceBlock) against its FusedBlock. The run
first measures its own ceilings (device copy bandwidth, matmul rate), checks each provider against
an fp64 reference, then times it. Results: a table on stdout,
and JSON (every number and the environment), the table and a PNG under benchmarks/results/.

Without CUDA it says so and what a GPU run prints, and runs a correctness pass instead (no
timing): eager PyTorch, torch.compile (Inductor's C++ backend, default mode: without CUDA graphs
max-autotune only adds autotuning time) and the fused Triton kernel in Triton's interpreter, at a tiny
size (block 3a, batch 2, 5x5, fp32 by default; --family inception_v3: Mixed_5b and Mixed_6a at
batch 1, 5x5; the interpreter is slow), and exits 0 when every check passes.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import counting
import environment as E
import providers as P
import report as R
import runner
import timing as T
import torch

ALL = ",".join(P.DEFAULT_PROVIDERS)
GPU_DEFAULTS = {"blocks": "all", "batches": "1,32,256", "dtype": "fp16", "spatial": None, "providers": ALL,
                "compile_mode": "max-autotune"}
CPU_DEFAULTS = {"blocks": "3a", "batches": "2", "dtype": "fp32", "spatial": 5, "providers": ALL,
                "compile_mode": "default"}
FAMILIES = ("googlenet", "inception_v3", "fid")
# What --family inception_v3 / fid change in the defaults of each mode (GPU, CPU).
GRAPH_DEFAULTS = ({"batches": "1,50,256"}, {"blocks": "Mixed_5b,Mixed_6a", "batches": "1"})
GPU_OUTPUT = ("a table per block, batch and dtype: median and p20-p80 time, TFLOP/s, GB/s, % of the roofline "
              "floor and the speedup over eager, eager-graph and torch.compile, saved with JSON and a PNG "
              "in benchmarks/results/")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = runner.parser("bench_block.py", __doc__, GPU_DEFAULTS, CPU_DEFAULTS, rep_ms=100, max_buffers=64,
                      buffer_what="input buffers", timings=("auto", "events", "loop"), timing_help=T.TIMING_HELP)
    modes = runner.defaults_help(GPU_DEFAULTS, CPU_DEFAULTS)
    p.add_argument("--family", choices=FAMILIES, default="googlenet",
                   help="the blocks: GoogLeNet's nine, torchvision's Inception-v3 eleven, or pytorch-fid's FID "
                        f"variants of them [inception_v3/fid: batches GPU {GRAPH_DEFAULTS[0]['batches']}, CPU "
                        f"{GRAPH_DEFAULTS[1]['batches']}; CPU blocks {GRAPH_DEFAULTS[1]['blocks']}]")
    p.add_argument("--blocks", default=None, help="comma-separated blocks of the --family (googlenet: "
                   "fused_inception.GOOGLENET_BLOCKS 3a..5b; inception_v3, fid: fused_inception.graph."
                   "INCEPTION_V3_BLOCKS / FID_BLOCKS, Mixed_5b..Mixed_7c) or 'all'" + modes("blocks"))
    p.add_argument("--layout", default="channels_last", help="comma-separated memory layouts: channels_last, nchw")
    p.add_argument("--spatial", type=int, default=None,
                   help="input height = width for every block [GPU: each block's own size, 28/14/7 for "
                        f"GoogLeNet's 224x224 images, 35/17/8 for Inception-v3's 299x299; CPU: "
                        f"{CPU_DEFAULTS['spatial']}]")
    p.add_argument("--launch-bound-us", type=float, default=20.0,
                   help="--timing auto uses 'loop' below this roofline floor (microseconds)")
    return p.parse_args(argv)


def block_table(fi, family: str) -> dict:
    """Block name -> (its description: an InceptionSpec or a BlockGraph, its input H = W in the
    family's network) for ``family``."""
    if family == "googlenet":
        return {b: (fi.googlenet_spec(b, "torchvision"), fi.GOOGLENET_SPATIAL[b]) for b in fi.GOOGLENET_BLOCKS}
    from fused_inception.graph import FID_BLOCKS, INCEPTION_V3_BLOCKS

    return dict(FID_BLOCKS if family == "fid" else INCEPTION_V3_BLOCKS)


def resolve(args: argparse.Namespace, cuda: bool) -> argparse.Namespace:
    import fused_inception as fi  # imported after the interpreter was switched on

    d = GPU_DEFAULTS if cuda else CPU_DEFAULTS
    if args.family != "googlenet":
        d = {**d, **GRAPH_DEFAULTS[0 if cuda else 1]}
    args.dtype, args.batches = runner.resolve_common(args, d, cuda)
    table = block_table(fi, args.family)
    args.blocks = runner.parse_list(args.blocks or d["blocks"], table, "block")
    args.layout = runner.parse_list(args.layout, ("channels_last", "nchw"), "layout")
    if args.spatial is None:
        args.spatial = d["spatial"]
    if args.spatial is not None and args.spatial < 1:
        raise ValueError("--spatial must be >= 1")
    for b in args.blocks:  # a stride-2 block needs a 3x3 input at least
        counting.block_graph(table[b][0]).out_size(args.spatial or table[b][1], args.spatial or table[b][1])
    return args


class Runner(runner.CaseRunner):
    def __init__(self, fi, args: argparse.Namespace, cuda: bool, device: torch.device | None = None) -> None:
        super().__init__(fi, args, cuda, device)
        self.table = block_table(fi, args.family)

    def run_case(self, block: str, batch: int, dtype_name: str, layout: str, progress: runner.Progress) -> dict:
        fi, args = self.fi, self.args
        desc, own_hw = self.table[block]  # an InceptionSpec (GoogLeNet) or a BlockGraph
        hw = args.spatial or own_hw
        ho, wo = counting.block_graph(desc).out_size(hw, hw)
        dtype, elem = E.torch_dtype(dtype_name), E.element_bytes(dtype_name)
        channels_last = layout == "channels_last"
        E.set_precision(dtype_name)
        flops = counting.block_flops(desc, batch, hw, hw)
        min_bytes = counting.block_min_bytes(desc, batch, hw, hw, elem)
        tol = P.TOLERANCE_BLOCK[dtype_name]
        case: dict = {"block": block, "family": args.family, "batch": batch, "dtype": dtype_name, "layout": layout,
                      "height": hw, "width": hw, "out_height": ho, "out_width": wo, "flops": flops,
                      "min_bytes": min_bytes, "tolerance": tol, "providers": {}}
        if args.family == "googlenet":
            case.update(channels=list(desc.channels), k3=desc.k3, k5=desc.k5)
        else:
            case.update(kind=desc.kind, channels=[desc.in_channels, desc.out_channels])
        in_bytes = min_bytes["input"]
        if self.cuda:
            peak_flops = self.ceilings["matmul_tflops"][dtype_name] * 1e12
            peak_bw = self.ceilings["copy_gbps"] * 1e9
            floor_s, bound = counting.roofline_floor_s(flops, min_bytes["total"], peak_flops, peak_bw)
            method = T.choose_method(args.timing, floor_s, args.launch_bound_us)
            nbuf = T.rotation_buffers(in_bytes, self.l2, args.max_buffers)
            case.update(floor_ms=floor_s * 1e3, floor_bound=bound, method=method, buffers=nbuf,
                        rotated_bytes=nbuf * in_bytes, l2_bytes=self.l2)
        else:
            method, nbuf = None, 1

        seed = args.seed * 1000 + list(self.table).index(block)
        torch.manual_seed(seed)  # the block's conv weights (PyTorch's default init)
        module = fi.ReferenceInception(desc) if args.family == "googlenet" else fi.ReferenceBlock(desc)
        base = P.randomize_batch_norms(module.eval(), seed)
        ref_model = copy.deepcopy(base).to(device=self.device, dtype=torch.float64)
        gen = torch.Generator(self.device).manual_seed(seed + 7919 * batch)
        fmt = torch.channels_last if channels_last else torch.contiguous_format

        def fresh() -> torch.Tensor:
            x = torch.randn(batch, desc.in_channels, hw, hw, generator=gen, device=self.device)
            return x.to(dtype).contiguous(memory_format=fmt)

        inputs = [fresh() for _ in range(nbuf)]
        # A fresh input that no provider is warmed up on, and its fp64 reference on a spread of images.
        x_check = fresh()
        idx = P.check_indices(batch)
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
def _hw(c: dict) -> str:
    """The input map, and the output map where a stride-2 block makes it smaller."""
    out = (c.get("out_height", c["height"]), c.get("out_width", c["width"]))
    return f"{c['height']}x{c['width']}" + ("" if out == (c["height"], c["width"]) else f"->{out[0]}x{out[1]}")


def gpu_table(data: dict) -> str:
    out = []
    ce = data["ceilings"]
    env = data["env"]
    out.append(f"device: {env['gpu']['name']}  torch {env['torch']}  triton {env['triton']}  CUDA {env['torch_cuda']}")
    out.append(f"ceilings (measured in this run): copy {ce['copy_gbps']:.0f} GB/s (read + write), matmul "
               + ", ".join(f"{k} {v:.0f} TFLOP/s" for k, v in ce["matmul_tflops"].items()))
    out.append("FLOPs: 2 x the convs' multiply-accumulates (GoogLeNet: 2*N*H*W*(Cin*(C1+C3r+C5r+Cp) + "
               "K3^2*C3r*C3 + K5^2*C5r*C5)), pools excluded. Minimum bytes: input read once + output written "
               "once + weights once.")
    out.append("%floor = roofline floor (max of FLOPs/matmul rate, bytes/copy bandwidth) / measured median.")
    headers = ["provider", "check", "median us", "p20-p80 us", "TFLOP/s", "GB/s", "%floor", "x eager",
               "x best peer", "note"]
    rows: list = []
    for c in data["cases"]:
        rows.append(f"{c['block']} N={c['batch']} {_hw(c)} {c['dtype']} {c['layout']}: "
                    f"{c['flops'] / 1e9:.3g} GFLOP, {c['min_bytes']['total'] / 1e6:.3g} MB, floor "
                    f"{R.fmt(c['floor_ms'] * 1e3)} us ({c['floor_bound']}-bound), timing {c['method']} over "
                    f"{c['buffers']} input buffers, best peer {c.get('best_peer') or '-'}")
        for name, r in c["providers"].items():
            timed = r.get("median_ms") is not None
            rows.append([name, R.status_cell(r), R.fmt(r["median_ms"] * 1e3) if timed else "-",
                         f"{R.fmt(r['p20_ms'] * 1e3)}-{R.fmt(r['p80_ms'] * 1e3)}" if timed else "",
                         R.fmt(r.get("tflops")), R.fmt(r.get("gbps")), R.fmt(r.get("pct_floor")),
                         R.fmt(r.get("speedup_vs_eager")), R.fmt(r.get("speedup_vs_best_peer")),
                         (r.get("message") or "")[:70]])
        rows.append(None)
    out.append(R.format_table(headers, rows[:-1], right=(2, 4, 5, 6, 7, 8)))
    return "\n".join(out)


def cpu_table(data: dict) -> str:
    headers = ["block", "N", "HxW", "dtype", "layout", "provider", "status", "rel err", "tol", "wall s", "note"]
    rows = []
    for c in data["cases"]:
        for name, r in c["providers"].items():
            wall = (r.get("prepare_s") or 0) + (r.get("check_s") or 0)
            rows.append([c["block"], c["batch"], _hw(c), c["dtype"], c["layout"], name,
                         r.get("status", "-").upper() if r.get("status") in ("mismatch", "error") else r.get("status"),
                         R.fmt(r.get("rel_err"), 2), f"{c['tolerance']:g}", R.fmt(wall, 2) if wall else "-",
                         r.get("message", "")[:70]])
    return ("correctness pass (CPU, no timing; 'wall s' is preparation (compile, packing) and the checked forward "
            "in the interpreter or on CPU, not a benchmark)\n"
            + R.format_table(headers, rows, right=(1, 7, 8, 9)))


def plot(data: dict, path: Path) -> bool:
    plt = R.pyplot_or_warn()
    if plt is None:
        return False
    groups = R.group_cases(data["cases"], ("dtype", "layout"))
    width = max(10.0, 0.5 * max(len(v) for v in groups.values()) + 2)
    fig, axes = plt.subplots(2, len(groups), figsize=(width * len(groups), 9), squeeze=False)
    for col, ((dtype, layout), cases) in enumerate(groups.items()):
        labels = [f"{c['block']} N={c['batch']}" for c in cases]
        names = list(dict.fromkeys(n for c in cases for n in c["providers"]))
        frac = {n: [c["providers"].get(n, {}).get("pct_floor") for c in cases] for n in names}
        gpu = data["env"].get("gpu", {}).get("name", "")
        R.plot_speedups(plt, axes[0][col], labels, cases,
                        f"{gpu} {dtype} {layout}: fused vs best of eager / eager-graph / compile")
        R.plot_bars(plt, axes[1][col], labels, frac, log=True, ylabel="% of roofline floor",
                    title="measured time vs roofline floor (100% = at the measured ceilings)", hline=100.0)
    return R.save_figure(plt, fig, path)


def main(argv: list[str] | None = None) -> int:
    args, cuda, fi = runner.set_up_run("bench_block.py", parse_args(argv), resolve, GPU_OUTPUT)
    cases_runner = Runner(fi, args, cuda)
    name = "bench_block" + ("" if args.family == "googlenet" else f"_{args.family}")  # also the files' name
    data = runner.start_run(name, args, cuda, P.TOLERANCE_BLOCK, ceiling_dtypes=args.dtype,
                            device=cases_runner.device, family=args.family)
    cases_runner.ceilings = data.get("ceilings")
    if not cuda:
        data["note"] = ("CPU correctness pass: no timing. Providers that need CUDA are listed as unavailable. "
                        f"Triton interpreter: {'on' if E.interpreter_on() else 'off'}.")
    cases = [{"block": b, "batch": n, "dtype_name": d, "layout": lay}
             for d in args.dtype for lay in args.layout for b in args.blocks for n in args.batches]
    runner.run_cases(data, args, cases, cases_runner.run_case, label="{block} N={batch} {dtype_name} {layout}")
    table = gpu_table(data) if cuda else cpu_table(data)
    return runner.finish_run(data, args, table, plot, failure_keys=("block", "batch", "dtype"),
                             failure_label="{block} N={batch} {dtype}")


if __name__ == "__main__":
    sys.exit(main())
