"""What the whole-network benchmarks (bench_googlenet.py, bench_inception_v3.py) share on top of
``runner.py``: their options and cases, the runner of one (dtype, batch) case (images/s, TFLOP/s,
% of the roofline floor), the tables, the plot and ``main``. A script says which network
(``Network``) and its defaults."""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import counting
import environment as E
import providers as P
import report as R
import runner
import timing as T
import torch

NETWORK_TIMING_HELP = ("loop: back-to-back forwards between two events, inputs rotated over buffers larger than 2x "
                       "L2, 20 windows (median, p20, p80): steady-state images/s; events: triton.testing.do_bench "
                       "(per-call events, L2 flushed before each call)")


GPU_OUTPUT = ("time and images/s (median, p20-p80), TFLOP/s, % of the roofline floor and the speedup over eager, "
              "eager-graph and torch.compile per dtype and batch, saved with JSON and a PNG in benchmarks/results/")


def defaults(gpu_batches: str, gpu_extra: str, image_size: tuple[int, int]) -> tuple[dict, dict]:
    """The GPU and CPU defaults of a network script: fp16 and fp32 at ``gpu_batches`` (plus
    ``gpu_extra``) with every provider on a GPU; fp32 at batch 1 without 'compile' (minutes of
    Inductor for a whole network) on CPU; ``image_size``: (GPU, CPU)."""
    gpu = {"dtype": "fp16,fp32", "batches": gpu_batches, "extra": gpu_extra, "image_size": image_size[0],
           "providers": ",".join(P.DEFAULT_PROVIDERS), "compile_mode": "max-autotune"}
    cpu = {"dtype": "fp32", "batches": "1", "extra": "none", "image_size": image_size[1],
           "providers": ",".join(p for p in P.DEFAULT_PROVIDERS if p != "compile"), "compile_mode": "default"}
    return gpu, cpu


@dataclass(frozen=True)
class Network:
    """What a network benchmark runs: ``build()`` gives the randomly initialised model (its BN
    statistics are calibrated here); ``blocks`` maps the names --cpu-fused-blocks takes to the
    blocks' module paths; ``cpu_blocks``: the default of --cpu-fused-blocks; ``min_image``: the
    smallest input size it takes."""

    name: str
    build: Callable[[], torch.nn.Module]
    blocks: dict[str, str]
    cpu_blocks: str
    min_image: int


def parser(prog: str, doc: str, gpu: dict, cpu: dict, cpu_blocks: str) -> argparse.ArgumentParser:
    """``runner.parser`` with the options of a network benchmark; ``gpu``/``cpu`` also hold the
    defaults of --extra and --image-size; ``cpu_blocks``: the default of --cpu-fused-blocks, in words."""
    p = runner.parser(prog, doc, gpu, cpu, rep_ms=200, max_buffers=16, buffer_what="input batches",
                      timings=("loop", "events"), timing_help=NETWORK_TIMING_HELP)
    modes = runner.defaults_help(gpu, cpu)
    p.add_argument("--extra", default=None, help="extra dtype:batch cases, comma-separated (e.g. fp32:10,bf16:64), "
                   "or 'none'" + modes("extra"))
    p.add_argument("--image-size", type=int, default=None, help="input height = width" + modes("image_size"))
    p.add_argument("--layout", choices=("channels_last", "nchw"), default="channels_last", help="memory layout")
    p.add_argument("--cpu-fused-blocks", default=None, help="CPU pass only: the blocks (comma-separated, or 'all') "
                   f"that run on Triton's interpreter [{cpu_blocks}]")
    return p


def resolve(args: argparse.Namespace, cuda: bool, gpu: dict, cpu: dict, net: Network) -> argparse.Namespace:
    """The shared options, the (dtype, batch) cases with --extra, the image size and the module
    paths of --cpu-fused-blocks."""
    d = gpu if cuda else cpu
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
    if args.image_size < net.min_image:
        raise ValueError(f"--image-size must be >= {net.min_image} for {net.name}")
    blocks = runner.parse_list(args.cpu_fused_blocks or net.cpu_blocks, net.blocks, "block")
    args.cpu_fused_paths = [net.blocks[b] for b in blocks]
    return args


class NetworkRunner(runner.CaseRunner):
    """A network's cases (dtype, batch): ``network(fi, args)`` says which network."""

    record_block_backends = True  # the CPU pass runs some blocks on the interpreter, the rest on the reference

    @staticmethod
    def network(fi, args: argparse.Namespace) -> Network:
        raise NotImplementedError

    def __init__(self, fi, args: argparse.Namespace, cuda: bool, device: torch.device | None = None) -> None:
        super().__init__(fi, args, cuda, device)
        self.net = self.network(fi, args)
        s, seed = args.image_size, args.seed
        torch.manual_seed(seed)
        model = P.scale_preserving_init(self.net.build(), seed)
        calib = torch.randn(4, 3, s, s, generator=torch.Generator().manual_seed(seed + 1))
        self.base = P.calibrate_batch_norms(model, calib, seed + 2)
        self.ref_model = copy.deepcopy(self.base).to(device=self.device, dtype=torch.float64)
        self.counts = counting.model_counts(P.fold_batch_norms(copy.deepcopy(self.base)), torch.randn(1, 3, s, s))
        self.flops_per_image = self.counts["flops"]

    def run_case(self, dtype_name: str, batch: int, progress: runner.Progress) -> dict:
        args = self.args
        s = args.image_size
        dtype, elem = E.torch_dtype(dtype_name), E.element_bytes(dtype_name)
        channels_last = args.layout == "channels_last"
        E.set_precision(dtype_name)
        tol = P.TOLERANCE_MODEL[dtype_name]
        min_bytes = counting.network_min_bytes(self.counts, (batch, 3, s, s), elem)
        case: dict = {"dtype": dtype_name, "batch": batch, "image_size": s, "layout": args.layout,
                      "flops": self.flops_per_image * batch, "min_bytes": min_bytes, "tolerance": tol,
                      "providers": {}}
        in_bytes = min_bytes["input"]
        if self.cuda:
            nbuf = T.rotation_buffers(in_bytes, self.l2, args.max_buffers)
            floor_s, bound = counting.roofline_floor_s(case["flops"], min_bytes["total"],
                                                       self.ceilings["matmul_tflops"][dtype_name] * 1e12,
                                                       self.ceilings["copy_gbps"] * 1e9)
            case.update(method=args.timing, buffers=nbuf, rotated_bytes=nbuf * in_bytes, l2_bytes=self.l2,
                        floor_ms=floor_s * 1e3, floor_bound=bound)
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
            progress.step(f"{self.net.name} N={batch} {dtype_name}: {name}")
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
        if case.get("floor_ms"):
            r["pct_floor"] = 100.0 * case["floor_ms"] / r["median_ms"]


def gpu_table(data: dict) -> str:
    env = data["env"]
    lines = [f"device: {env['gpu']['name']}  torch {env['torch']}  triton {env['triton']}  CUDA {env['torch_cuda']}",
             f"{data.get('network', data['benchmark'])}, {data['flops_per_image'] / 1e9:.3g} GFLOP per image "
             "(convs + fc; pooling, BN and ReLU excluded), eval mode. %floor: roofline floor (FLOPs / matmul rate "
             "or input + output + weights once / copy bandwidth) / median"]
    ce = data.get("ceilings")
    if ce:
        lines.append(f"ceilings (measured in this run): copy {ce['copy_gbps']:.0f} GB/s, matmul "
                     + ", ".join(f"{k} {v:.0f} TFLOP/s" for k, v in ce["matmul_tflops"].items()))
    headers = ["provider", "check", "median ms", "p20-p80 ms", "images/s", "TFLOP/s", "%floor", "x eager",
               "x best peer", "note"]
    rows: list = []
    for c in data["cases"]:
        rows.append(f"{c['dtype']} N={c['batch']} {c['image_size']}x{c['image_size']} {c['layout']}: timing "
                    f"{c['method']} over {c['buffers']} input batches, best peer {c.get('best_peer') or '-'}")
        for name, r in c["providers"].items():
            timed = r.get("median_ms") is not None
            rows.append([name, R.status_cell(r), R.fmt(r.get("median_ms")),
                         f"{R.fmt(r['p20_ms'])}-{R.fmt(r['p80_ms'])}" if timed else "",
                         R.fmt(r.get("images_per_s")), R.fmt(r.get("tflops")), R.fmt(r.get("pct_floor")),
                         R.fmt(r.get("speedup_vs_eager")), R.fmt(r.get("speedup_vs_best_peer")),
                         (r.get("message") or "")[:70]])
        rows.append(None)
    lines.append(R.format_table(headers, rows[:-1], right=(2, 4, 5, 6, 7, 8)))
    return "\n".join(lines)


def cpu_table(data: dict) -> str:
    headers = ["dtype", "N", "img", "layout", "provider", "status", "rel err", "tol", "wall s", "note"]
    rows = []
    for c in data["cases"]:
        for name, r in c["providers"].items():
            wall = (r.get("prepare_s") or 0) + (r.get("check_s") or 0)
            note = r.get("message", "")
            if r.get("block_backends"):
                ran: dict[str, list[str]] = {}
                for path, b in r["block_backends"].items():  # inception3a -> 3a, inception.Mixed_5b -> Mixed_5b
                    ran.setdefault(b, []).append(path.rsplit(".", 1)[-1].removeprefix("inception"))
                ran = dict(sorted(ran.items(), key=lambda kv: kv[0] == "reference"))  # the interpreted first
                note = (note + " " if note else "") + "; ".join(f"{b}: {','.join(p)}" for b, p in ran.items())
            st = r.get("status", "-")
            rows.append([c["dtype"], c["batch"], c["image_size"], c["layout"], name,
                         st.upper() if st in ("mismatch", "error") else st, R.fmt(r.get("rel_err"), 2),
                         f"{c['tolerance']:g}", R.fmt(wall, 2) if wall else "-", note[:90]])
    return ("correctness pass (CPU, no timing; 'wall s' is preparation (packing) and the checked forward in the "
            "interpreter or on CPU, not a benchmark)\n" + R.format_table(headers, rows, right=(1, 2, 6, 7, 8)))


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
                title=f"{data.get('network', data['benchmark'])} inference on {gpu}, {data['args']['image_size']}px, "
                      f"{data['args']['layout']}")
    R.plot_speedups(plt, axes[1], labels, cases, "fused vs best of eager / eager-graph / compile")
    return R.save_figure(plt, fig, path)


def main(prog: str, args: argparse.Namespace, resolve_args: Callable, runner_cls: type[NetworkRunner],
         gpu_output: str) -> int:
    """A network benchmark from its parsed arguments to its exit status."""
    args, cuda, fi = runner.set_up_run(prog, args, resolve_args, gpu_output)
    cases_runner = runner_cls(fi, args, cuda)
    if not cuda:
        print(f"CPU pass: the converted network runs blocks {','.join(args.cpu_fused_paths)} on the Triton "
              "interpreter and the other converted blocks on their PyTorch reference path.")
        if "compile" not in args.providers:
            print("'compile' is left out (Inductor compiles the whole network on CPU for minutes); "
                  "--providers eager,compile,fused-triton adds it.")
    data = runner.start_run(prog.removesuffix(".py"), args, cuda, P.TOLERANCE_MODEL,
                            ceiling_dtypes=[d for d, _ in args.cases], device=cases_runner.device,
                            network=cases_runner.net.name, flops_per_image=cases_runner.flops_per_image)
    cases_runner.ceilings = data.get("ceilings")
    cases = [{"dtype_name": d, "batch": b} for d, b in args.cases]
    runner.run_cases(data, args, cases, cases_runner.run_case, label="N={batch} {dtype_name}")
    table = gpu_table(data) if cuda else cpu_table(data)
    return runner.finish_run(data, args, table, plot, failure_keys=("dtype", "batch"),
                             failure_label="N={batch} {dtype}")
