#!/usr/bin/env python
"""End-to-end GoogLeNet inference: the converted network versus the same providers on the whole model.

Default (on a CUDA GPU): fused_inception.models.googlenet("torchvision") in eval mode, 224x224
images, channels_last, batch 1, 32 and 256 in fp16 and in fp32 (TF32 off), plus fp32 at batch 10.
Providers as in bench_block.py, applied to the whole network: 'eager' is the network with every
BatchNorm folded; the fused providers are fused_inception.convert(...) of it (the nine Inception
blocks fused, the stem's BatchNorms folded). Each provider's logits are checked against an fp64
reference before timing. Reports images/s (median, p20-p80), TFLOP/s and speedups; writes JSON,
the table and a PNG under benchmarks/results/.

Without CUDA it says so and what a GPU run prints, and runs a correctness pass instead (no
timing): the PyTorch reference and the converted network with block 3a on Triton's interpreter
(the other blocks converted too, on their PyTorch reference path: the interpreter takes seconds
per block), at 32x32 images, batch 1, fp32, and exits 0 when every check passes. The 'compile'
provider is left out of it unless asked for (--providers): Inductor compiles the whole network on
CPU for a minute or two; bench_block.py's CPU pass covers compile.
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

GPU_DEFAULTS = {"dtype": "fp16,fp32", "batches": "1,32,256", "extra": "fp32:10", "image_size": 224,
                "providers": ",".join(P.DEFAULT_PROVIDERS), "compile_mode": "max-autotune"}
CPU_DEFAULTS = {"dtype": "fp32", "batches": "1", "extra": "none", "image_size": 32,
                "providers": ",".join(p for p in P.DEFAULT_PROVIDERS if p != "compile"), "compile_mode": "default"}
TIMING_HELP = ("loop: back-to-back forwards between two events, inputs rotated over buffers larger than 2x L2, "
               "20 windows (median, p20, p80): steady-state images/s; events: triton.testing.do_bench (per-call "
               "events, L2 flushed before each call)")
GPU_OUTPUT = ("images/s (median, p20-p80), TFLOP/s and the speedup over eager, eager-graph and torch.compile per "
              "dtype and batch, saved with JSON and a PNG in benchmarks/results/")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = runner.parser("bench_googlenet.py", __doc__, GPU_DEFAULTS, CPU_DEFAULTS, rep_ms=200, max_buffers=16,
                      buffer_what="input batches", timings=("loop", "events"), timing_help=TIMING_HELP)
    modes = runner.defaults_help(GPU_DEFAULTS, CPU_DEFAULTS)
    p.add_argument("--extra", default=None, help="extra dtype:batch cases, comma-separated (e.g. fp32:10,bf16:64), "
                   "or 'none'" + modes("extra"))
    p.add_argument("--image-size", type=int, default=None, help="input height = width" + modes("image_size"))
    p.add_argument("--layout", choices=("channels_last", "nchw"), default="channels_last", help="memory layout")
    p.add_argument("--cpu-fused-blocks", default="3a",
                   help="CPU pass only: the blocks (3a..5b or 'all') that run on Triton's interpreter")
    return p.parse_args(argv)


def resolve(args: argparse.Namespace, cuda: bool) -> argparse.Namespace:
    from fused_inception import GOOGLENET_BLOCKS  # imported after the interpreter was switched on

    d = GPU_DEFAULTS if cuda else CPU_DEFAULTS
    dtypes, batches = runner.resolve_common(args, d, cuda)
    cases = [(dt, b) for dt in dtypes for b in batches]
    extra = args.extra or d["extra"]
    if extra != "none":
        for item in runner.parse_list(extra, what="extra case"):
            dt, _, b = item.partition(":")
            if dt not in E.DTYPE_CHOICES or not b.isdigit() or int(b) < 1:
                raise ValueError(f"--extra wants dtype:batch items such as fp32:10, got {item!r}")
            if (dt, int(b)) not in cases:
                cases.append((dt, int(b)))
    args.cases = cases
    args.image_size = args.image_size or d["image_size"]
    if args.image_size < 16:
        raise ValueError("--image-size must be >= 16 (GoogLeNet downsamples by 32)")
    blocks = runner.parse_list(args.cpu_fused_blocks, GOOGLENET_BLOCKS, "block")
    args.cpu_fused_paths = [f"inception{b}" for b in blocks]
    return args


def build_base_model(fi, image_size: int, seed: int) -> torch.nn.Module:
    """The torchvision-style GoogLeNet with weights that keep activations at unit scale and BN
    statistics calibrated on random images (see providers.calibrate_batch_norms)."""
    torch.manual_seed(seed)
    model = fi.models.googlenet("torchvision", init_weights=False)
    P.scale_preserving_init(model, seed)
    g = torch.Generator().manual_seed(seed + 1)
    calib = torch.randn(4, 3, image_size, image_size, generator=g)
    return P.calibrate_batch_norms(model, calib, seed + 2)


class Runner(runner.CaseRunner):
    record_block_backends = True  # the CPU pass runs some blocks on the interpreter, the rest on the reference

    def __init__(self, fi, args: argparse.Namespace, cuda: bool, device: torch.device | None = None) -> None:
        super().__init__(fi, args, cuda, device)
        self.base = build_base_model(fi, args.image_size, args.seed)
        self.ref_model = copy.deepcopy(self.base).to(device=self.device, dtype=torch.float64)
        one = torch.randn(1, 3, args.image_size, args.image_size)
        self.flops_per_image = counting.model_flops(P.fold_batch_norms(copy.deepcopy(self.base)), one)

    def run_case(self, dtype_name: str, batch: int, progress: runner.Progress) -> dict:
        args = self.args
        s = args.image_size
        dtype, elem = E.torch_dtype(dtype_name), E.element_bytes(dtype_name)
        channels_last = args.layout == "channels_last"
        E.set_precision(dtype_name)
        tol = P.TOLERANCE_MODEL[dtype_name]
        case: dict = {"dtype": dtype_name, "batch": batch, "image_size": s, "layout": args.layout,
                      "flops": self.flops_per_image * batch, "tolerance": tol, "providers": {}}
        in_bytes = batch * 3 * s * s * elem
        if self.cuda:
            nbuf = T.rotation_buffers(in_bytes, self.l2, args.max_buffers)
            case.update(method=args.timing, buffers=nbuf, rotated_bytes=nbuf * in_bytes, l2_bytes=self.l2)
        else:
            nbuf = 1
        gen = torch.Generator(self.device).manual_seed(args.seed * 1000 + 31 * batch + len(dtype_name))
        fmt = torch.channels_last if channels_last else torch.contiguous_format

        def fresh() -> torch.Tensor:
            x = torch.randn(batch, 3, s, s, generator=gen, device=self.device)
            return x.to(dtype).contiguous(memory_format=fmt)

        inputs = [fresh() for _ in range(nbuf)]
        # A fresh input that no provider is warmed up on, and its fp64 reference on a spread of images.
        x_check = fresh()
        idx = P.check_indices(batch)
        with torch.no_grad():
            ref = self.ref_model(x_check[idx].to(torch.float64))
        for name in args.providers:
            progress.step(f"GoogLeNet N={batch} {dtype_name}: {name}")
            case["providers"][name] = self.run_provider(
                name, self.base, inputs, x_check, ref, idx, tol, dtype, channels_last, args.timing,
                cpu_fused_blocks=None if self.cuda else args.cpu_fused_paths)
        if self.cuda:
            self.derive(case)
        return case

    def add_rates(self, case: dict, r: dict) -> None:
        r["images_per_s"] = case["batch"] / (r["median_ms"] * 1e-3)
        # p20 of the time is the fast end: p80 of throughput.
        r["images_per_s_p20"] = case["batch"] / (r["p80_ms"] * 1e-3)
        r["images_per_s_p80"] = case["batch"] / (r["p20_ms"] * 1e-3)
        r["tflops"] = case["flops"] / (r["median_ms"] * 1e-3) / 1e12


def gpu_table(data: dict) -> str:
    env = data["env"]
    lines = [f"device: {env['gpu']['name']}  torch {env['torch']}  triton {env['triton']}  CUDA {env['torch_cuda']}",
             f"GoogLeNet (torchvision variant), {data['flops_per_image'] / 1e9:.3g} GFLOP per image "
             "(convs + fc; pooling, BN and ReLU excluded), eval mode"]
    ce = data.get("ceilings")
    if ce:
        lines.append(f"ceilings (measured in this run): copy {ce['copy_gbps']:.0f} GB/s, matmul "
                     + ", ".join(f"{k} {v:.0f} TFLOP/s" for k, v in ce["matmul_tflops"].items()))
    headers = ["provider", "check", "median ms", "p20-p80 ms", "images/s", "TFLOP/s", "x eager", "x best peer",
               "note"]
    rows: list = []
    for c in data["cases"]:
        rows.append(f"{c['dtype']} N={c['batch']} {c['image_size']}x{c['image_size']} {c['layout']}: timing "
                    f"{c['method']} over {c['buffers']} input batches, best peer {c.get('best_peer') or '-'}")
        for name, r in c["providers"].items():
            timed = r.get("median_ms") is not None
            rows.append([name, R.status_cell(r), R.fmt(r.get("median_ms")),
                         f"{R.fmt(r['p20_ms'])}-{R.fmt(r['p80_ms'])}" if timed else "",
                         R.fmt(r.get("images_per_s")), R.fmt(r.get("tflops")), R.fmt(r.get("speedup_vs_eager")),
                         R.fmt(r.get("speedup_vs_best_peer")), (r.get("message") or "")[:70]])
        rows.append(None)
    lines.append(R.format_table(headers, rows[:-1], right=(2, 4, 5, 6, 7)))
    return "\n".join(lines)


def cpu_table(data: dict) -> str:
    headers = ["dtype", "N", "img", "layout", "provider", "status", "rel err", "tol", "wall s", "note"]
    rows = []
    for c in data["cases"]:
        for name, r in c["providers"].items():
            wall = (r.get("prepare_s") or 0) + (r.get("check_s") or 0)
            note = r.get("message", "")
            if r.get("block_backends"):
                ran = {}
                for path, b in r["block_backends"].items():
                    ran.setdefault(b, []).append(path.removeprefix("inception"))
                note = (note + " " if note else "") + "; ".join(f"{b}: {','.join(p)}" for b, p in ran.items())
            st = r.get("status", "-")
            rows.append([c["dtype"], c["batch"], c["image_size"], c["layout"], name,
                         st.upper() if st in ("mismatch", "error") else st, R.fmt(r.get("rel_err"), 2),
                         f"{c['tolerance']:g}", R.fmt(wall, 2) if wall else "-", note[:90]])
    return ("correctness pass (CPU, no timing; 'wall s' is preparation (packing) and the checked forward in the "
            "interpreter or on CPU, not a benchmark)\n"
            + R.format_table(headers, rows, right=(1, 2, 6, 7, 8)))


def plot(data: dict, path: Path) -> bool:
    plt = R.pyplot_or_warn()
    if plt is None:
        return False
    cases = data["cases"]
    labels = [f"{c['dtype']} N={c['batch']}" for c in cases]
    names = list(dict.fromkeys(n for c in cases for n in c["providers"]))
    ips = {n: [c["providers"].get(n, {}).get("images_per_s") for c in cases] for n in names}
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 1.6 * len(cases)), 9))
    gpu = data["env"].get("gpu", {}).get("name", "")
    R.plot_bars(plt, axes[0], labels, ips, log=True, ylabel="images/s",
                title=f"GoogLeNet inference on {gpu}, {data['args']['image_size']}px, {data['args']['layout']}")
    R.plot_speedups(plt, axes[1], labels, cases, "fused vs best of eager / eager-graph / compile")
    return R.save_figure(plt, fig, path)


def main(argv: list[str] | None = None) -> int:
    args, cuda, fi = runner.set_up_run("bench_googlenet.py", parse_args(argv), resolve, GPU_OUTPUT)
    if not cuda:
        print(f"CPU pass: the converted network runs blocks {','.join(args.cpu_fused_paths)} on the Triton "
              "interpreter and the other converted blocks on their PyTorch reference path.")
        if "compile" not in args.providers:
            print("'compile' is left out (Inductor compiles the whole network on CPU for a minute or two); "
                  "--providers eager,compile,fused-triton adds it.")
    cases_runner = Runner(fi, args, cuda)
    data = runner.start_run("bench_googlenet", args, cuda, P.TOLERANCE_MODEL, ceiling_dtypes=[d for d, _ in args.cases],
                            device=cases_runner.device, flops_per_image=cases_runner.flops_per_image)
    cases_runner.ceilings = data.get("ceilings")
    cases = [{"dtype_name": d, "batch": b} for d, b in args.cases]
    runner.run_cases(data, args, cases, cases_runner.run_case, label="N={batch} {dtype_name}")
    table = gpu_table(data) if cuda else cpu_table(data)
    return runner.finish_run(data, args, table, plot, failure_keys=("dtype", "batch"),
                             failure_label="N={batch} {dtype}")


if __name__ == "__main__":
    sys.exit(main())
