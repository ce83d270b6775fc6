#!/usr/bin/env python
"""One Inception block, fused versus what you would use instead: time, spread, roofline.

Default (on a CUDA GPU): the nine GoogLeNet blocks at batch 1, 32 and 256 at their GoogLeNet map
sizes, fp16, channels_last, torchvision-style blocks (BatchNorm, folded for every provider), eval
mode, every provider. The run first measures its own ceilings (device copy bandwidth, matmul
rate), checks each provider against an fp64 reference, then times it. Results: a table on stdout,
and JSON (every number and the environment), the table and a PNG under benchmarks/results/.

Without CUDA it says so and runs a correctness pass instead (no timing): the PyTorch reference and
the fused Triton kernel in Triton's interpreter, at a tiny size (block 3a, batch 2, 5x5, fp32 by
default; the interpreter is slow), and exits 0 when every check passes.
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

GPU_DEFAULTS = {"blocks": "all", "batches": "1,32,256", "dtype": "fp16", "spatial": None}
CPU_DEFAULTS = {"blocks": "3a", "batches": "2", "dtype": "fp32", "spatial": 5}
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
    p.add_argument("--compile-mode", default="max-autotune",
                   help="torch.compile mode of the 'compile' provider (max-autotune uses CUDA graphs and "
                        "autotunes; reduce-overhead compiles much faster)")
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
    if args.spatial is None:
        args.spatial = d["spatial"]
    if args.spatial is not None and args.spatial < 1:
        raise ValueError("--spatial must be >= 1")
    if args.out is None and cuda:
        args.out = C.RESULTS_DIR
    return args


class Runner:
    def __init__(self, fi, args: argparse.Namespace, cuda: bool, device: torch.device | None = None) -> None:
        """``cuda``: the timed GPU run (else the CPU correctness pass); ``device`` overrides the
        device (the tests run the GPU code path on CPU with stubbed timers)."""
        self.fi, self.args, self.cuda = fi, args, cuda
        self.device = device or torch.device("cuda" if cuda else "cpu")
        self.warmup_calls = 3 if self.device.type == "cuda" else 0  # the interpreter needs no warm-up
        self.ceilings: dict | None = None
        self.l2 = C.l2_bytes() if cuda else 0

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

    def run_provider(self, name, base, inputs, x_check, ref, idx, tol, dtype, channels_last, method) -> dict:
        args = self.args
        res: dict = {"group": C.provider_group(name)}
        prov = None
        try:
            t0 = time.perf_counter()
            prov = C.build_provider(name, base, dtype=dtype, channels_last=channels_last, device=self.device,
                                    compile_mode=args.compile_mode,
                                    compile_dynamic=None if args.compile_dynamic else False)
            prov.prepare(inputs, warmup_calls=self.warmup_calls)
            res["prepare_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            out = prov.check_output(x_check)
            ok, err, msg = C.check_against(out, ref, idx, tol)
            res["check_s"] = time.perf_counter() - t0
            res.update(rel_err=err, checked_images=idx)
            res["status"] = "ok" if ok else "mismatch"
            fallback = prov.backends_ok()
            if fallback:  # a silent fallback to another backend is an error, whatever the numbers
                ok, msg, res["status"] = False, fallback, "error"
            if msg:
                res["message"] = msg
            if self.cuda and (ok or args.time_mismatches):
                fn = prov.bench_fn(inputs)
                timer = C.time_events if method == "events" else C.time_loop
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
                torch._dynamo.reset()  # a fresh compile per case, no recompile limit reached
            if self.cuda:
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
        return res

    def derive(self, case: dict) -> None:
        """Throughput, roofline fraction and speedups from the medians."""
        prov = case["providers"]
        timed = {n: r for n, r in prov.items() if r.get("median_ms") is not None}
        peers = {n: r["median_ms"] for n, r in timed.items() if r["group"] == "peer" and r["status"] == "ok"}
        best_peer = min(peers, key=peers.get) if peers else None
        case["best_peer"] = best_peer
        eager = timed.get("eager") if prov.get("eager", {}).get("status") == "ok" else None
        for r in timed.values():
            s = r["median_ms"] * 1e-3
            r["tflops"] = case["flops"] / s / 1e12
            r["gbps"] = case["min_bytes"]["total"] / s / 1e9
            r["pct_floor"] = 100.0 * case["floor_ms"] / r["median_ms"]
            r["speedup_vs_eager"] = eager["median_ms"] / r["median_ms"] if eager else None
            r["speedup_vs_best_peer"] = peers[best_peer] / r["median_ms"] if best_peer else None


# -- output ---------------------------------------------------------------------------------------
def status_cell(r: dict) -> str:
    st = r.get("status", "-")
    if st == "ok":
        return f"ok {C.fmt(r.get('rel_err'), 2)}"
    if st == "mismatch":
        return f"MISMATCH {C.fmt(r.get('rel_err'), 2)}"
    return st.upper() if st == "error" else st


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
            rows.append([name, status_cell(r), C.fmt(r["median_ms"] * 1e3) if timed else "-",
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
    return ("correctness pass (CPU, no timing; 'wall s' is the interpreter's time, not a benchmark)\n"
            + C.format_table(headers, rows, right=(1, 7, 8, 9)))


def plot(data: dict, path: Path) -> bool:
    plt = C.try_import_pyplot()
    if plt is None:
        print("matplotlib is not installed: no PNG (pip install matplotlib)", file=sys.stderr)
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
        print(f"bench_block.py: error: {e}", file=sys.stderr)
        return 2
    if cuda:
        torch.backends.cudnn.benchmark = True
    runner = Runner(fi, args, cuda)
    data: dict = {"benchmark": "bench_block", "schema": 1, "mode": "gpu" if cuda else "cpu-correctness",
                  "env": C.environment(), "args": {k: (str(v) if isinstance(v, Path) else v)
                                                    for k, v in vars(args).items()},
                  "tolerance": C.TOLERANCE_BLOCK, "cases": [], "complete": False}
    if not cuda:
        data["note"] = ("CPU correctness pass: no timing. Providers that need CUDA are listed as unavailable. "
                        f"Triton interpreter: {'on' if C.interpreter_on() else 'off'}.")
    out_dir = args.out
    json_path = out_dir / f"bench_block{args.tag}.json" if out_dir else None
    cases = [(d, lay, b, n) for d in args.dtype for lay in args.layout for b in args.blocks for n in args.batches]
    if cuda:
        print(f"measuring ceilings on {torch.cuda.get_device_name()} ...", file=sys.stderr, flush=True)
        runner.ceilings = data["ceilings"] = C.measure_ceilings(args.dtype, runner.device)
    progress = C.Progress(len(cases) * len(args.providers), enabled=not args.no_progress)
    t_start = time.perf_counter()
    with torch.no_grad():
        for d, lay, b, n in cases:
            if args.max_minutes is not None and time.perf_counter() - t_start > 60 * args.max_minutes:
                data["stopped"] = f"--max-minutes {args.max_minutes} reached before {b} N={n} {d} {lay}"
                print(data["stopped"], file=sys.stderr)
                break
            data["cases"].append(runner.run_case(b, n, d, lay, progress))
            if json_path:
                C.write_json(json_path, data)
        else:
            data["complete"] = True
    progress.close()
    if cuda:
        data["env"]["nvidia_smi_end"] = C.nvidia_smi_query()
    table = gpu_table(data) if cuda else cpu_table(data)
    bad = [(c["block"], c["batch"], c["dtype"], n, r["status"]) for c in data["cases"]
           for n, r in c["providers"].items() if r.get("status") in ("mismatch", "error")]
    data["failures"] = bad
    if json_path:
        C.write_json(json_path, data)
        (out_dir / f"bench_block{args.tag}.txt").write_text(table + "\n")
        if cuda and not args.no_plot and data["cases"]:
            png = out_dir / f"bench_block{args.tag}.png"
            if plot(data, png):
                print(f"wrote {png}", file=sys.stderr)
        print(f"wrote {json_path}", file=sys.stderr)
    print(table)
    if bad:
        print(f"\nFAILED checks: {len(bad)}: " + "; ".join(f"{b} N={n} {d} {p}: {s}" for b, n, d, p, s in bad))
        return 1
    summary = "all providers that ran passed their check against the fp64 reference"
    skipped = sorted({n for c in data["cases"] for n, r in c["providers"].items() if r.get("status") == "unavailable"})
    if skipped:
        summary += f"; unavailable here: {', '.join(skipped)}"
    print(f"\n{summary}" + ("" if data["complete"] else " (run stopped early)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
