"""Timing on CUDA (``do_bench`` per call, or back-to-back loops), input rotation past the L2,
and the device ceilings (copy bandwidth, matmul rate) measured in the run."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence

import environment as E
import torch


# -- rotation and timing --------------------------------------------------------------------------
def rotation_buffers(bytes_per_input: int, l2_bytes: int, max_buffers: int = 64,
                     max_total_bytes: int = 4 << 30) -> int:
    """How many input buffers to rotate over so that their sum exceeds twice the L2 (at least 2,
    capped by ``max_buffers`` and ``max_total_bytes``)."""
    want = math.ceil(2 * l2_bytes / max(bytes_per_input, 1)) + 1
    cap = max(2, max_total_bytes // max(bytes_per_input, 1))
    return int(max(2, min(want, max_buffers, cap)))


def quantiles(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, p20, p80) by linear interpolation."""
    xs = sorted(values)

    def q(p: float) -> float:
        pos = p * (len(xs) - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)

    return statistics.median(xs), q(0.2), q(0.8)


def time_events(fn: Callable[[], object], warmup_ms: float, rep_ms: float) -> tuple[float, float, float]:
    """``triton.testing.do_bench``: events around every call, L2 flushed before each call;
    returns (median, p20, p80) in ms."""
    import triton.testing

    med, p20, p80 = triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
    return float(med), float(p20), float(p80)


def time_loop(fn: Callable[[], object], warmup_ms: float, rep_ms: float,
              samples: int = 20) -> tuple[float, float, float]:
    """Back-to-back calls between two events, per-call time = elapsed / calls; ``samples`` such
    windows give (median, p20, p80) in ms. What a caller gets per call in steady state: the device
    time when the device is the bottleneck, the host's launch overhead when the host is."""
    # Warm up for about warmup_ms, sized from one synchronous call: a host-timed loop could queue
    # far more device work than intended when the host is much faster than the device.
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    first_ms = max((time.perf_counter() - t0) * 1e3, 1e-3)
    for _ in range(int(min(1000, max(2, warmup_ms / first_ms)))):
        fn()
    torch.cuda.synchronize()

    def window(calls: int) -> float:  # ms per call of ``calls`` back-to-back calls
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / calls

    est = max(window(int(min(10, max(1, 20 / first_ms)))), 1e-4)  # about 20 ms to estimate the per-call time
    calls = int(min(10_000, max(1, math.ceil(rep_ms / samples / est))))
    if calls == 1:  # long calls (>= rep_ms / samples): launch gaps don't matter, keep the run short
        samples = int(max(10, min(samples, math.ceil(rep_ms / est))))
    return quantiles([window(calls) for _ in range(samples)])


def choose_method(timing: str, floor_s: float, launch_bound_us: float) -> str:
    if timing != "auto":
        return timing
    return "loop" if floor_s * 1e6 < launch_bound_us else "events"



TIMING_HELP = (
    "events: triton.testing.do_bench, device events around every call, L2 flushed before each "
    "call (median, p20, p80); loop: back-to-back calls between two events (per-call time = "
    "elapsed / calls), 20 windows (median, p20, p80), for launch-bound cases where per-call events "
    "would time launch gaps; auto: loop when the case's roofline floor is under --launch-bound-us, "
    "events otherwise. Either way the inputs rotate over buffers adding up to more than 2x L2 "
    "(as far as --max-buffers allows)"
)


# -- ceilings -------------------------------------------------------------------------------------
def measure_ceilings(dtypes: Iterable[str], device: torch.device, warmup_ms: float = 25,
                     rep_ms: float = 200, copy_bytes: int = 1 << 30, matmul_n: int = 8192) -> dict:
    """Measured in this run, on random data: device-to-device copy bandwidth (bytes read plus
    bytes written) and an ``matmul_n``-cubed matmul rate for each compute dtype of the run."""
    import triton.testing

    out: dict = {"copy_bytes_moved": 2 * copy_bytes, "matmul_n": matmul_n, "matmul_tflops": {}}
    def bench(fn) -> float:
        return triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median")

    src = torch.empty(copy_bytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    ms = bench(lambda src=src, dst=dst: dst.copy_(src))
    out["copy_ms"] = ms
    out["copy_gbps"] = 2 * copy_bytes / (ms * 1e-3) / 1e9
    src = dst = None
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        for name in dict.fromkeys(dtypes):
            E.set_precision(name)
            a = torch.randn(matmul_n, matmul_n, device=device, dtype=E.torch_dtype(name))
            b = torch.randn(matmul_n, matmul_n, device=device, dtype=E.torch_dtype(name))
            ms = bench(lambda a=a, b=b: a @ b)
            out["matmul_tflops"][name] = 2 * matmul_n**3 / (ms * 1e-3) / 1e12
            a = b = None
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    torch.cuda.empty_cache()
    return out
