"""The driver the benchmark scripts share: their common options, setting up a run (CUDA or the
CPU pass), running the cases with progress, checking and timing each provider, and writing the
results. ``networks.py`` adds what the whole-network scripts share."""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import environment as E
import providers as P
import report as R
import timing as T
import torch

NO_CUDA_MESSAGE = (
    "CUDA is not available: timings need a CUDA GPU, so no timing is done here.\n"
    "On a GPU this prints {gpu_output}.\n"
    "Running a small correctness pass instead: every provider that can run on CPU (eager PyTorch,\n"
    "torch.compile with Inductor's C++ backend, the fused Triton kernel in Triton's interpreter)\n"
    "against an fp64 reference."
)


def parse_list(text: str, choices: Sequence[str] | None = None, what: str = "value") -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if choices is not None:
        if items == ["all"]:
            return list(choices)
        bad = [t for t in items if t not in choices]
        if bad:
            raise ValueError(f"unknown {what} {bad}; choose from {list(choices)} (or 'all')")
    if not items:
        raise ValueError(f"empty {what} list")
    return items


def parse_ints(text: str, what: str = "value") -> list[int]:
    try:
        values = [int(t) for t in parse_list(text, what=what)]
    except ValueError as e:
        raise ValueError(f"{what} must be comma-separated integers, got {text!r}") from e
    if any(v < 1 for v in values):
        raise ValueError(f"{what} must be >= 1, got {values}")
    return values


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except the None/False of options whose help states the defaults itself."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def defaults_help(gpu: dict, cpu: dict) -> Callable[[str], str]:
    """``key`` -> " [GPU: <gpu[key]>; CPU: <cpu[key]>]", the end of an option's help."""
    return lambda key: f" [GPU: {gpu[key]}; CPU: {cpu[key]}]"


def parser(prog: str, doc: str, gpu: dict, cpu: dict, rep_ms: float, max_buffers: int, buffer_what: str,
           timings: Sequence[str], timing_help: str) -> argparse.ArgumentParser:
    """The options bench_block.py and bench_googlenet.py share; ``gpu`` / ``cpu``: the defaults of
    --dtype, --batches, --providers and --compile-mode in each mode; ``doc``: the script's
    docstring, its description; ``timings``: the --timing methods, the default first."""
    p = argparse.ArgumentParser(prog=prog, description=" ".join(doc.split("\n\n")).replace("\n", " "),
                                formatter_class=HelpFormatter)
    modes = defaults_help(gpu, cpu)

    p.add_argument("--dtype", default=None, help="comma-separated compute dtypes: fp32 (TF32 off), tf32 (fp32 "
                   "tensors, TF32 on), fp16, bf16" + modes("dtype"))
    p.add_argument("--batches", default=None, help="comma-separated batch sizes" + modes("batches"))
    p.add_argument("--providers", default=None, help=f"comma-separated, from {','.join(P.ALL_PROVIDERS)} or "
                   f"'all'. {P.PROVIDER_HELP}" + modes("providers"))
    p.add_argument("--warmup", type=float, default=25, help="warm-up time per provider and case, ms")
    p.add_argument("--rep", "--reps", type=float, default=rep_ms, help="measurement time per provider and case, ms")
    p.add_argument("--timing", choices=timings, default=timings[0], help=timing_help)
    p.add_argument("--max-buffers", type=int, default=max_buffers, help=f"most {buffer_what} rotated per case")
    p.add_argument("--compile-mode", default=None,
                   help="torch.compile mode of the 'compile' provider (max-autotune uses CUDA graphs and "
                        "autotunes; reduce-overhead compiles much faster)" + modes("compile_mode"))
    p.add_argument("--compile-dynamic", action="store_true",
                   help="torch.compile(dynamic=None) (PyTorch's automatic dynamic shapes: fewer recompiles "
                        "across batch sizes) instead of one static compile per shape")
    p.add_argument("--time-mismatches", action="store_true",
                   help="time providers whose output check failed too (flagged MISMATCH in the table)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="start no new case after this many minutes; the results say the run is incomplete")
    p.add_argument("--out", type=Path, default=None, help=f"folder for {prog.removesuffix('.py')}<tag>.json/.txt/"
                   ".png [GPU: benchmarks/results; CPU: none written]")
    p.add_argument("--tag", default="", help="suffix of the output file names, e.g. '_h200_fp16'")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, BN statistics and inputs")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG (matplotlib)")
    p.add_argument("--no-table-file", action="store_true", help="skip the .txt (the table is on stdout anyway)")
    p.add_argument("--no-progress", action="store_true", help="no progress output for preparation steps")
    p.add_argument("--cpu", action="store_true", help="the CPU correctness pass even when CUDA is available")
    return p


def resolve_common(args: argparse.Namespace, d: dict, cuda: bool) -> tuple[list[str], list[int]]:
    """The shared options resolved for the mode whose defaults are ``d``; returns the dtypes and
    the batch sizes (which each script lays out its own way)."""
    batches = parse_ints(args.batches or d["batches"], "batch size")
    args.providers = parse_list(args.providers or d["providers"], P.ALL_PROVIDERS, "provider")
    args.compile_mode = args.compile_mode or d["compile_mode"]
    if args.out is None and cuda:
        args.out = E.RESULTS_DIR
    return parse_list(args.dtype or d["dtype"], E.DTYPE_CHOICES, "dtype"), batches


# -- progress -------------------------------------------------------------------------------------
class Progress:
    """Preparation steps (compilation, autotuning, graph capture), outside the timings: a tqdm bar
    on a terminal, one plain line per step otherwise (logs stay readable)."""

    def __init__(self, total: int, enabled: bool = True) -> None:
        self.total, self.done, self.enabled = total, 0, enabled
        self.bar = None
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, file=sys.stderr, unit="step", dynamic_ncols=True)

    def step(self, desc: str) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.set_description_str(desc)
            self.bar.update(1)
        elif self.enabled:
            print(f"[{self.done}/{self.total}] {desc}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# -- the driver of bench_block.py and bench_googlenet.py ------------------------------------------
def set_up_run(prog: str, args: argparse.Namespace,
               resolve: Callable[[argparse.Namespace, bool], argparse.Namespace], gpu_output: str):
    """CUDA or the CPU pass (the interpreter switched on first), the package imported, the
    arguments resolved for that mode. ``gpu_output``: what the script prints on a GPU, in a few
    words, told to whoever runs it without one. Returns ``(args, cuda, fused_inception)``; a bad
    argument is reported and exits with status 2."""
    cuda = E.use_interpreter_if_no_cuda(force_cpu=args.cpu)
    if not cuda:
        print(NO_CUDA_MESSAGE.format(gpu_output=gpu_output) if not args.cpu
              else "--cpu: correctness pass on CPU, no timing.")
    fi = E.import_fused_inception()
    try:
        args = resolve(args, cuda)
    except ValueError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if cuda:
        torch.backends.cudnn.benchmark = True
    return args, cuda, fi


def start_run(benchmark: str, args: argparse.Namespace, cuda: bool, tolerance: dict, *,
              ceiling_dtypes: Iterable[str] = (), device: torch.device | None = None, **fields) -> dict:
    """The results of a run (``benchmark`` also names its files): environment, arguments, the
    script's own ``fields``, the tolerances; on CUDA the ceilings of ``ceiling_dtypes``, measured now."""
    data: dict = {"benchmark": benchmark, "schema": 1, "mode": "gpu" if cuda else "cpu-correctness",
                  "env": E.environment(), "args": {k: (str(v) if isinstance(v, Path) else v)
                                                for k, v in vars(args).items()},
                  **fields, "tolerance": tolerance, "cases": [], "complete": False}
    if cuda:
        print(f"measuring ceilings on {torch.cuda.get_device_name()} ...", file=sys.stderr, flush=True)
        data["ceilings"] = T.measure_ceilings(ceiling_dtypes, device)
    return data


def result_path(data: dict, args: argparse.Namespace, suffix: str) -> Path | None:
    """``<--out>/<benchmark><--tag><suffix>``; None when no --out (the CPU pass by default)."""
    return args.out / f"{data['benchmark']}{args.tag}{suffix}" if args.out else None


def run_cases(data: dict, args: argparse.Namespace, cases: Sequence[dict], run_case: Callable[..., dict],
              label: str) -> None:
    """``run_case(**case, progress=...)`` for each case, the JSON rewritten after each one (a run
    stopped mid-way keeps what it measured); no new case after --max-minutes (``label``, formatted
    with the case, says which was next). Sets ``complete`` when every case ran."""
    json_path = result_path(data, args, ".json")
    progress = Progress(len(cases) * len(args.providers), enabled=not args.no_progress)
    t_start = time.perf_counter()
    with torch.no_grad():
        for case in cases:
            if args.max_minutes is not None and time.perf_counter() - t_start > 60 * args.max_minutes:
                data["stopped"] = f"--max-minutes {args.max_minutes} reached before {label.format(**case)}"
                print(data["stopped"], file=sys.stderr)
                break
            data["cases"].append(run_case(**case, progress=progress))
            if json_path:
                R.write_json(json_path, data)
        else:
            data["complete"] = True
    progress.close()
    if data["mode"] == "gpu":
        data["env"]["nvidia_smi_end"] = E.nvidia_smi_query()


def finish_run(data: dict, args: argparse.Namespace, table: str, plot: Callable[[dict, Path], bool],
               failure_keys: Sequence[str], failure_label: str) -> int:
    """Failures recorded (``failure_keys`` of the case, provider, status), JSON, table and PNG
    written under --out, the table and a verdict printed. Returns the exit status: 1 when a check
    failed, else 0."""
    bad, said = [], []
    for c in data["cases"]:
        for n, r in c["providers"].items():
            if r.get("status") in ("mismatch", "error"):
                bad.append(tuple(c[k] for k in failure_keys) + (n, r["status"]))
                said.append(f"{failure_label.format(**c)} {n}: {r['status']}")
    data["failures"] = bad
    json_path = result_path(data, args, ".json")
    if json_path:
        R.write_json(json_path, data)
        if not args.no_table_file:
            result_path(data, args, ".txt").write_text(table + "\n")
        if data["mode"] == "gpu" and not args.no_plot and data["cases"]:
            png = result_path(data, args, ".png")
            if plot(data, png):
                print(f"wrote {png}", file=sys.stderr)
        print(f"wrote {json_path}", file=sys.stderr)
    print(table)
    if bad:
        print(f"\nFAILED checks: {len(bad)}: " + "; ".join(said))
        return 1
    summary = "all providers that ran passed their check against the fp64 reference"
    skipped = sorted({n for c in data["cases"] for n, r in c["providers"].items() if r.get("status") == "unavailable"})
    if skipped:
        summary += f"; unavailable here: {', '.join(skipped)}"
    print(f"\n{summary}" + ("" if data["complete"] else " (run stopped early)"))
    return 0


class CaseRunner:
    """What the runners of the two scripts share: the device, one provider built, checked against
    the fp64 reference and (on CUDA) timed, and the speedups. A script's runner adds ``run_case``
    and ``add_rates`` (its throughput numbers of one timed provider)."""

    record_block_backends = False  # also record which backend each fused block ran

    def __init__(self, fi, args: argparse.Namespace, cuda: bool, device: torch.device | None = None) -> None:
        """``cuda``: the timed GPU run (else the CPU correctness pass); ``device`` overrides the
        device (the tests run the GPU code path on CPU with stubbed timers)."""
        self.fi, self.args, self.cuda = fi, args, cuda
        self.device = device or torch.device("cuda" if cuda else "cpu")
        self.warmup_calls = 3 if self.device.type == "cuda" else 0  # the interpreter needs no warm-up
        self.ceilings: dict | None = None
        self.l2 = E.l2_bytes() if cuda else 0

    def run_provider(self, name, model, inputs, x_check, ref, idx, tol, dtype, channels_last, method,
                     **build_kwargs) -> dict:
        args = self.args
        res: dict = {"group": P.provider_group(name)}
        prov = None
        try:
            t0 = time.perf_counter()
            prov = P.build_provider(name, model, dtype=dtype, channels_last=channels_last, device=self.device,
                                  compile_mode=args.compile_mode,
                                  compile_dynamic=None if args.compile_dynamic else False, **build_kwargs)
            prov.prepare(inputs, warmup_calls=self.warmup_calls)
            res["prepare_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            out = prov.check_output(x_check)
            ok, err, msg = P.check_against(out, ref, idx, tol)
            res["check_s"] = time.perf_counter() - t0
            res.update(rel_err=err, checked_images=idx)
            if self.record_block_backends and prov.fused_module is not None:
                res["block_backends"] = prov.backends_used()
            res["status"] = "ok" if ok else "mismatch"
            fallback = prov.backends_ok()
            if fallback:  # a silent fallback to another backend is an error, whatever the numbers
                ok, msg, res["status"] = False, fallback, "error"
            if msg:
                res["message"] = msg
            if self.cuda and (ok or args.time_mismatches):
                fn = prov.bench_fn(inputs)
                timer = T.time_events if method == "events" else T.time_loop
                med, p20, p80 = timer(fn, args.warmup, args.rep)
                res.update(median_ms=med, p20_ms=p20, p80_ms=p80)
        except P.ProviderUnavailableError as e:
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
        """The script's rates (``add_rates``) and the speedups from the medians."""
        prov = case["providers"]
        timed = {n: r for n, r in prov.items() if r.get("median_ms") is not None}
        peers = {n: r["median_ms"] for n, r in timed.items() if r["group"] == "peer" and r["status"] == "ok"}
        best_peer = min(peers, key=peers.get) if peers else None
        case["best_peer"] = best_peer
        eager = timed.get("eager") if prov.get("eager", {}).get("status") == "ok" else None
        for r in timed.values():
            self.add_rates(case, r)
            r["speedup_vs_eager"] = eager["median_ms"] / r["median_ms"] if eager else None
            r["speedup_vs_best_peer"] = peers[best_peer] / r["median_ms"] if best_peer else None

    def add_rates(self, case: dict, r: dict) -> None:
        raise NotImplementedError

