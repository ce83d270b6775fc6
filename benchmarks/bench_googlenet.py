#!/usr/bin/env python
"""End-to-end GoogLeNet inference: the converted network versus the same providers on the whole model.

Default (on a CUDA GPU): fused_inception.models.googlenet("torchvision") in eval mode, 224x224
images, channels_last, batch 1, 32 and 256 in fp16 and in fp32 (TF32 off), plus fp32 at batch 10.
Providers as in bench_block.py, applied to the whole network: 'eager' is the network with every
BatchNorm folded; the fused providers are fused_inception.convert(...) of it (the nine Inception
blocks fused, the stem's BatchNorms folded). Each provider's logits are checked against an fp64
reference before timing. Reports images/s (median, p20-p80), TFLOP/s and speedups; writes JSON,
the table and a PNG under benchmarks/results/.

Without CUDA it says so and runs a correctness pass instead (no timing): the PyTorch reference and
the converted network with block 3a on Triton's interpreter (the other blocks converted too, on
their PyTorch reference path: the interpreter takes seconds per block), at 32x32 images, batch 1,
fp32, and exits 0 when every check passes.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import traceback
from pathlib import Path

import _common as C
import torch

BLOCK_NAMES = ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")
GPU_DEFAULTS = {"dtype": "fp16,fp32", "batches": "1,32,256", "extra": "fp32:10", "image_size": 224}
CPU_DEFAULTS = {"dtype": "fp32", "batches": "1", "extra": "none", "image_size": 32}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    paras = __doc__.split("\n\n")
    p = argparse.ArgumentParser(prog="bench_googlenet.py", description=" ".join(paras).replace("\n", " "),
                                formatter_class=C.HelpFormatter)
    p.add_argument("--dtype", default=None,
                   help="comma-separated compute dtypes: fp32 (TF32 off), tf32, fp16, bf16 "
                        f"[GPU: {GPU_DEFAULTS['dtype']}; CPU: {CPU_DEFAULTS['dtype']}]")
    p.add_argument("--batches", default=None,
                   help=f"comma-separated batch sizes, run for every dtype [GPU: {GPU_DEFAULTS['batches']}; "
                        f"CPU: {CPU_DEFAULTS['batches']}]")
    p.add_argument("--extra", default=None,
                   help="extra dtype:batch cases, comma-separated (e.g. fp32:10,bf16:64), or 'none' "
                        f"[GPU: {GPU_DEFAULTS['extra']}; CPU: {CPU_DEFAULTS['extra']}]")
    p.add_argument("--image-size", type=int, default=None,
                   help=f"input height = width [GPU: {GPU_DEFAULTS['image_size']}; CPU: {CPU_DEFAULTS['image_size']}]")
    p.add_argument("--layout", choices=("channels_last", "nchw"), default="channels_last", help="memory layout")
    p.add_argument("--providers", default=",".join(C.DEFAULT_PROVIDERS),
                   help=f"comma-separated, from {','.join(C.ALL_PROVIDERS)} or 'all'. {C.PROVIDER_HELP}")
    p.add_argument("--warmup", type=float, default=25, help="warm-up time per provider and case, ms")
    p.add_argument("--rep", "--reps", type=float, default=200, help="measurement time per provider and case, ms")
    p.add_argument("--timing", choices=("loop", "events"), default="loop",
                   help="loop: back-to-back forwards between two events, inputs rotated over buffers larger "
                        "than 2x L2, 20 windows (median, p20, p80): steady-state images/s; events: "
                        "triton.testing.do_bench (per-call events, L2 flushed before each call)")
    p.add_argument("--max-buffers", type=int, default=16, help="most input batches rotated per case")
    p.add_argument("--compile-mode", default="max-autotune", help="torch.compile mode of the 'compile' provider")
    p.add_argument("--compile-dynamic", action="store_true",
                   help="torch.compile(dynamic=None) (automatic dynamic shapes) instead of static shapes")
    p.add_argument("--cpu-fused-blocks", default="3a",
                   help="CPU pass only: the blocks (3a..5b or 'all') that run on Triton's interpreter")
    p.add_argument("--time-mismatches", action="store_true", help="time providers whose check failed too")
    p.add_argument("--max-minutes", type=float, default=None, help="start no new case after this many minutes")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for bench_googlenet<tag>.json/.txt/.png [GPU: benchmarks/results; CPU: none written]")
    p.add_argument("--tag", default="", help="suffix of the output file names")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, BN statistics and inputs")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG (matplotlib)")
    p.add_argument("--no-progress", action="store_true", help="no progress output for preparation steps")
    p.add_argument("--cpu", action="store_true", help="the CPU correctness pass even when CUDA is available")
    return p.parse_args(argv)


def resolve(args: argparse.Namespace, cuda: bool) -> argparse.Namespace:
    d = GPU_DEFAULTS if cuda else CPU_DEFAULTS
    dtypes = C.parse_list(args.dtype or d["dtype"], C.DTYPE_CHOICES, "dtype")
    batches = C.parse_ints(args.batches or d["batches"], "batch size")
    cases = [(dt, b) for dt in dtypes for b in batches]
    extra = args.extra or d["extra"]
    if extra != "none":
        for item in C.parse_list(extra, what="extra case"):
            dt, _, b = item.partition(":")
            if dt not in C.DTYPE_CHOICES or not b.isdigit() or int(b) < 1:
                raise ValueError(f"--extra wants dtype:batch items such as fp32:10, got {item!r}")
            if (dt, int(b)) not in cases:
                cases.append((dt, int(b)))
    args.cases = cases
    args.image_size = args.image_size or d["image_size"]
    if args.image_size < 16:
        raise ValueError("--image-size must be >= 16 (GoogLeNet downsamples by 32)")
    args.providers = C.parse_list(args.providers, C.ALL_PROVIDERS, "provider")
    blocks = C.parse_list(args.cpu_fused_blocks, BLOCK_NAMES, "block")
    args.cpu_fused_paths = [f"inception{b}" for b in blocks]
    if args.out is None and cuda:
        args.out = C.RESULTS_DIR
    return args


def build_base_model(fi, image_size: int, seed: int) -> torch.nn.Module:
    """The torchvision-style GoogLeNet with weights that keep activations at unit scale and BN
    statistics calibrated on random images (see _common.calibrate_batch_norms)."""
    torch.manual_seed(seed)
    model = fi.models.googlenet("torchvision", init_weights=False)
    C.scale_preserving_init(model, seed)
    g = torch.Generator().manual_seed(seed + 1)
    calib = torch.randn(4, 3, image_size, image_size, generator=g)
    return C.calibrate_batch_norms(model, calib, seed + 2)


class Runner:
    def __init__(self, fi, args: argparse.Namespace, cuda: bool, device: torch.device | None = None) -> None:
        """``cuda``: the timed GPU run (else the CPU correctness pass); ``device`` overrides the
        device (the tests run the GPU code path on CPU with stubbed timers)."""
        self.fi, self.args, self.cuda = fi, args, cuda
        self.device = device or torch.device("cuda" if cuda else "cpu")
        self.warmup_calls = 3 if self.device.type == "cuda" else 0  # the interpreter needs no warm-up
        self.l2 = C.l2_bytes() if cuda else 0
        self.base = build_base_model(fi, args.image_size, args.seed)
        self.ref_model = copy.deepcopy(self.base).to(device=self.device, dtype=torch.float64)
        one = torch.randn(1, 3, args.image_size, args.image_size)
        self.flops_per_image = C.model_flops(C.fold_batch_norms(copy.deepcopy(self.base)), one)
        self.ceilings: dict | None = None

    def run_case(self, dtype_name: str, batch: int, progress: C.Progress) -> dict:
        args = self.args
        s = args.image_size
        dtype, elem = C.torch_dtype(dtype_name), C.element_bytes(dtype_name)
        channels_last = args.layout == "channels_last"
        C.set_precision(dtype_name)
        tol = C.TOLERANCE_MODEL[dtype_name]
        case: dict = {"dtype": dtype_name, "batch": batch, "image_size": s, "layout": args.layout,
                      "flops": self.flops_per_image * batch, "tolerance": tol, "providers": {}}
        in_bytes = batch * 3 * s * s * elem
        if self.cuda:
            nbuf = C.rotation_buffers(in_bytes, self.l2, args.max_buffers)
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
        idx = C.check_indices(batch)
        with torch.no_grad():
            ref = self.ref_model(x_check[idx].to(torch.float64))
        for name in args.providers:
            progress.step(f"GoogLeNet N={batch} {dtype_name}: {name}")
            case["providers"][name] = self.run_provider(name, inputs, x_check, ref, idx, tol, dtype, channels_last)
        if self.cuda:
            self.derive(case)
        return case

    def run_provider(self, name, inputs, x_check, ref, idx, tol, dtype, channels_last) -> dict:
        args = self.args
        res: dict = {"group": C.provider_group(name)}
        prov = None
        try:
            t0 = time.perf_counter()
            prov = C.build_provider(name, self.base, dtype=dtype, channels_last=channels_last, device=self.device,
                                    compile_mode=args.compile_mode,
                                    compile_dynamic=None if args.compile_dynamic else False,
                                    cpu_fused_blocks=None if self.cuda else args.cpu_fused_paths)
            prov.prepare(inputs, warmup_calls=self.warmup_calls)
            res["prepare_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            out = prov.check_output(x_check)
            ok, err, msg = C.check_against(out, ref, idx, tol)
            res["check_s"] = time.perf_counter() - t0
            res.update(rel_err=err, checked_images=idx)
            if prov.fused_module is not None:
                res["block_backends"] = prov.backends_used()
            res["status"] = "ok" if ok else "mismatch"
            fallback = prov.backends_ok()
            if fallback:  # a silent fallback to another backend is an error, whatever the numbers
                ok, msg, res["status"] = False, fallback, "error"
            if msg:
                res["message"] = msg
            if self.cuda and (ok or args.time_mismatches):
                fn = prov.bench_fn(inputs)
                timer = C.time_events if args.timing == "events" else C.time_loop
                med, p20, p80 = timer(fn, args.warmup, args.rep)
                res.update(median_ms=med, p20_ms=p20, p80_ms=p80)
        except C.ProviderUnavailableError as e:
            res.update(status="unavailable", message=str(e))
        except Exception as e:  # noqa: BLE001 - reported in the table and the exit status
            res.update(status="error", message=f"{type(e).__name__}: {e}".splitlines()[0][:300])
            traceback.print_exc(file=sys.stderr)
        finally:
            del prov
            if name == "compile":
                torch._dynamo.reset()
            if self.cuda:
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
        return res

    def derive(self, case: dict) -> None:
        prov = case["providers"]
        timed = {n: r for n, r in prov.items() if r.get("median_ms") is not None}
        peers = {n: r["median_ms"] for n, r in timed.items() if r["group"] == "peer" and r["status"] == "ok"}
        best_peer = min(peers, key=peers.get) if peers else None
        case["best_peer"] = best_peer
        eager = timed.get("eager") if prov.get("eager", {}).get("status") == "ok" else None
        for r in timed.values():
            r["images_per_s"] = case["batch"] / (r["median_ms"] * 1e-3)
            # p20 of the time is the fast end: p80 of throughput.
            r["images_per_s_p20"] = case["batch"] / (r["p80_ms"] * 1e-3)
            r["images_per_s_p80"] = case["batch"] / (r["p20_ms"] * 1e-3)
            r["tflops"] = case["flops"] / (r["median_ms"] * 1e-3) / 1e12
            r["speedup_vs_eager"] = eager["median_ms"] / r["median_ms"] if eager else None
            r["speedup_vs_best_peer"] = peers[best_peer] / r["median_ms"] if best_peer else None


def status_cell(r: dict) -> str:
    st = r.get("status", "-")
    if st == "ok":
        return f"ok {C.fmt(r.get('rel_err'), 2)}"
    if st == "mismatch":
        return f"MISMATCH {C.fmt(r.get('rel_err'), 2)}"
    return st.upper() if st == "error" else st


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
            rows.append([name, status_cell(r), C.fmt(r.get("median_ms")),
                         f"{C.fmt(r['p20_ms'])}-{C.fmt(r['p80_ms'])}" if timed else "",
                         C.fmt(r.get("images_per_s")), C.fmt(r.get("tflops")), C.fmt(r.get("speedup_vs_eager")),
                         C.fmt(r.get("speedup_vs_best_peer")), (r.get("message") or "")[:70]])
        rows.append(None)
    lines.append(C.format_table(headers, rows[:-1], right=(2, 4, 5, 6, 7)))
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
                         st.upper() if st in ("mismatch", "error") else st, C.fmt(r.get("rel_err"), 2),
                         f"{c['tolerance']:g}", C.fmt(wall, 2) if wall else "-", note[:90]])
    return ("correctness pass (CPU, no timing; 'wall s' is the interpreter's time, not a benchmark)\n"
            + C.format_table(headers, rows, right=(1, 2, 6, 7, 8)))


def plot(data: dict, path: Path) -> bool:
    plt = C.try_import_pyplot()
    if plt is None:
        print("matplotlib is not installed: no PNG (pip install matplotlib)", file=sys.stderr)
        return False
    cases = data["cases"]
    labels = [f"{c['dtype']} N={c['batch']}" for c in cases]
    names = list(dict.fromkeys(n for c in cases for n in c["providers"]))
    ips = {n: [c["providers"].get(n, {}).get("images_per_s") for c in cases] for n in names}
    fused = [n for n in names if C.provider_group(n) == "fused"]
    speed = {n: [c["providers"].get(n, {}).get("speedup_vs_best_peer") for c in cases] for n in fused}
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 1.6 * len(cases)), 9))
    gpu = data["env"].get("gpu", {}).get("name", "")
    C.plot_bars(plt, axes[0], labels, ips, log=True, ylabel="images/s",
                title=f"GoogLeNet inference on {gpu}, {data['args']['image_size']}px, {data['args']['layout']}")
    C.plot_bars(plt, axes[1], labels, speed, log=True, ylabel="speedup over best peer (x)",
                title="fused vs best of eager / eager-graph / compile", hline=1.0)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cuda = C.use_interpreter_if_no_cuda(force_cpu=args.cpu)
    if not cuda:
        print(C.NO_CUDA_MESSAGE if not args.cpu else "--cpu: correctness pass on CPU, no timing.")
    fi = C.import_fused_inception()
    try:
        args = resolve(args, cuda)
    except ValueError as e:
        print(f"bench_googlenet.py: error: {e}", file=sys.stderr)
        return 2
    if cuda:
        torch.backends.cudnn.benchmark = True
    else:
        print(f"CPU pass: the converted network runs blocks {','.join(args.cpu_fused_paths)} on the Triton "
              "interpreter and the other converted blocks on their PyTorch reference path.")
    runner = Runner(fi, args, cuda)
    data: dict = {"benchmark": "bench_googlenet", "schema": 1, "mode": "gpu" if cuda else "cpu-correctness",
                  "env": C.environment(),
                  "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                  "flops_per_image": runner.flops_per_image, "tolerance": C.TOLERANCE_MODEL,
                  "cases": [], "complete": False}
    out_dir = args.out
    json_path = out_dir / f"bench_googlenet{args.tag}.json" if out_dir else None
    if cuda:
        print(f"measuring ceilings on {torch.cuda.get_device_name()} ...", file=sys.stderr, flush=True)
        runner.ceilings = data["ceilings"] = C.measure_ceilings([d for d, _ in args.cases], runner.device)
    progress = C.Progress(len(args.cases) * len(args.providers), enabled=not args.no_progress)
    t_start = time.perf_counter()
    with torch.no_grad():
        for d, b in args.cases:
            if args.max_minutes is not None and time.perf_counter() - t_start > 60 * args.max_minutes:
                data["stopped"] = f"--max-minutes {args.max_minutes} reached before N={b} {d}"
                print(data["stopped"], file=sys.stderr)
                break
            data["cases"].append(runner.run_case(d, b, progress))
            if json_path:
                C.write_json(json_path, data)
        else:
            data["complete"] = True
    progress.close()
    if cuda:
        data["env"]["nvidia_smi_end"] = C.nvidia_smi_query()
    table = gpu_table(data) if cuda else cpu_table(data)
    bad = [(c["dtype"], c["batch"], n, r["status"]) for c in data["cases"]
           for n, r in c["providers"].items() if r.get("status") in ("mismatch", "error")]
    data["failures"] = bad
    if json_path:
        C.write_json(json_path, data)
        (out_dir / f"bench_googlenet{args.tag}.txt").write_text(table + "\n")
        if cuda and not args.no_plot and data["cases"]:
            png = out_dir / f"bench_googlenet{args.tag}.png"
            if plot(data, png):
                print(f"wrote {png}", file=sys.stderr)
        print(f"wrote {json_path}", file=sys.stderr)
    print(table)
    if bad:
        print(f"\nFAILED checks: {len(bad)}: " + "; ".join(f"N={b} {d} {p}: {s}" for d, b, p, s in bad))
        return 1
    summary = "all providers that ran passed their check against the fp64 reference"
    skipped = sorted({n for c in data["cases"] for n, r in c["providers"].items() if r.get("status") == "unavailable"})
    if skipped:
        summary += f"; unavailable here: {', '.join(skipped)}"
    print(f"\n{summary}" + ("" if data["complete"] else " (run stopped early)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
