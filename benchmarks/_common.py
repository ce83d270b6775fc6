"""Shared helpers of the benchmark scripts: counting, ceilings, timing, providers, environment, output.

Nothing here imports ``fused_inception`` at module level: the scripts decide first whether CUDA is
there, and without it set ``TRITON_INTERPRET=1`` *before* the package (and so Triton's kernels)
is imported. ``python benchmarks/_common.py summary FILE.json ...`` prints the short headline
tables of saved results (used last by ``device_check.sh``).
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import importlib.metadata
import itertools
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"

NO_CUDA_MESSAGE = (
    "CUDA is not available: timings need a CUDA GPU, so no timing is done here.\n"
    "On a GPU this prints {gpu_output}.\n"
    "Running a small correctness pass instead: every provider that can run on CPU (eager PyTorch,\n"
    "torch.compile with Inductor's C++ backend, the fused Triton kernel in Triton's interpreter)\n"
    "against an fp64 reference."
)

def use_interpreter_if_no_cuda(force_cpu: bool = False) -> bool:
    """True when this run has CUDA (and ``force_cpu`` is off). Otherwise set ``TRITON_INTERPRET=1``
    (unless the caller set it), which must happen before ``fused_inception`` is imported, and
    return False."""
    if torch.cuda.is_available() and not force_cpu:
        return True
    if "fused_inception" in sys.modules:
        print("note: fused_inception was imported before the interpreter could be switched on",
              file=sys.stderr)
    elif not os.environ.get("TRITON_INTERPRET"):
        os.environ["TRITON_INTERPRET"] = "1"
    return False


def import_fused_inception():
    """The package of this checkout (the benchmarks measure the code beside them)."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    import fused_inception

    return fused_inception


def interpreter_on() -> bool:
    mod = sys.modules.get("fused_inception.kernels")
    return bool(mod is not None and mod.interpreting())


# -- dtypes ---------------------------------------------------------------------------------------
DTYPE_CHOICES = ("fp32", "tf32", "fp16", "bf16")
_TORCH_DTYPE = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# Relative error ||out - ref|| / ||ref|| against an fp64 reference, per compute dtype, about 10x
# what PyTorch's own ops give (measured on CPU: a block in fp16 3e-4, bf16 3e-3; the whole
# GoogLeNet's logits in fp16 1e-3 to 2e-3, bf16 1e-2 to 2e-2, fp32 2e-6). A wrong halo, branch or
# channel slice gives errors of order 1e-1 and more.
TOLERANCE_BLOCK = {"fp32": 1e-4, "tf32": 5e-3, "fp16": 5e-3, "bf16": 3e-2}
TOLERANCE_MODEL = {"fp32": 1e-3, "tf32": 1e-2, "fp16": 1e-2, "bf16": 6e-2}


def torch_dtype(name: str) -> torch.dtype:
    return _TORCH_DTYPE[name]


def element_bytes(name: str) -> int:
    return torch.empty((), dtype=_TORCH_DTYPE[name]).element_size()


def set_precision(name: str) -> None:
    """fp32 means full fp32 (TF32 off for convs and matmuls); tf32 turns TF32 on for both.

    The fused Triton kernel follows ``torch.backends.cudnn.allow_tf32`` (PyTorch's conv rule).
    """
    tf32 = name == "tf32"
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32


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


# -- counting -------------------------------------------------------------------------------------
def block_macs_per_pixel(spec) -> int:
    """Multiply-accumulates per output pixel of one image: the three 1x1 convs that read ``x``
    and the pool projection, plus the two KxK convs. Max-pool comparisons, bias and ReLU are not
    counted (they are not tensor-core work)."""
    s = spec
    return (s.in_channels * (s.ch1x1 + s.ch3x3red + s.ch5x5red + s.pool_proj)
            + s.k3 * s.k3 * s.ch3x3red * s.ch3x3 + s.k5 * s.k5 * s.ch5x5red * s.ch5x5)


def block_flops(spec, n: int, h: int, w: int) -> int:
    """2*N*H*W*(Cin*(C1+C3r+C5r+Cp) + K3^2*C3r*C3 + K5^2*C5r*C5); pool comparisons excluded."""
    return 2 * n * h * w * block_macs_per_pixel(spec)


def block_weight_elements(spec) -> int:
    return block_macs_per_pixel(spec)  # one weight per multiply-accumulate of one pixel


def block_bias_elements(spec) -> int:
    s = spec
    return s.ch1x1 + s.ch3x3red + s.ch5x5red + s.ch3x3 + s.ch5x5 + s.pool_proj


def block_min_bytes(spec, n: int, h: int, w: int, elem: int, bias_elem: int = 4) -> dict[str, int]:
    """Fewest bytes one forward must move through device memory: the input read once, the output
    written once, the (BN-folded) weights read once in the compute dtype and the biases in fp32
    (as ``PackedWeights`` holds them). Intermediate maps are not counted: a fused kernel need not
    store them."""
    parts = {
        "input": n * spec.in_channels * h * w * elem,
        "output": n * spec.out_channels * h * w * elem,
        "weights": block_weight_elements(spec) * elem,
        "biases": block_bias_elements(spec) * bias_elem,
    }
    parts["total"] = sum(parts.values())
    return parts


def roofline_floor_s(flops: float, nbytes: float, peak_flops: float, peak_bytes_per_s: float) -> tuple[float, str]:
    """The larger of compute time and memory time at the measured ceilings, and which bound it is."""
    t_compute = flops / peak_flops
    t_memory = nbytes / peak_bytes_per_s
    return (t_compute, "compute") if t_compute >= t_memory else (t_memory, "memory")


def model_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward (2 per multiply-accumulate of every Conv2d and Linear; the fused blocks
    by ``block_flops``), counted with forward hooks on ``x`` (pooling, BN, ReLU excluded)."""
    total = 0
    handles = []

    def conv_hook(m, inp, out):
        nonlocal total
        kh, kw = m.kernel_size
        total += 2 * out.numel() * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m, inp, out):
        nonlocal total
        total += 2 * out.numel() * m.in_features

    def block_hook(m, inp, out):
        nonlocal total
        n, _, h, w = inp[0].shape
        total += block_flops(m.spec, n, h, w)

    fused_types = _fused_types()
    for m in model.modules():
        if fused_types and isinstance(m, fused_types):
            handles.append(m.register_forward_hook(block_hook))
    inside = {id(c) for m in model.modules() if fused_types and isinstance(m, fused_types) for c in m.modules()}
    for m in model.modules():
        if id(m) in inside:
            continue
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return total


def _fused_types() -> tuple[type, ...]:
    mod = sys.modules.get("fused_inception.module")
    return (mod.FusedInception,) if mod is not None else ()


# -- model preparation ----------------------------------------------------------------------------
def randomize_batch_norms(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, so that folding them matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(c, generator=g) * 0.2)
    return model


def scale_preserving_init(model: nn.Module, seed: int) -> nn.Module:
    """Kaiming-normal convs (ReLU gain) so activations keep unit scale through a deep network;
    torchvision's std-0.01 init shrinks them towards fp16 underflow, which would make an
    end-to-end accuracy check meaningless."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2.0 / fan_in))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / math.sqrt(m.in_features))
                if m.bias is not None:
                    m.bias.zero_()
    return model


@torch.no_grad()
def calibrate_batch_norms(model: nn.Module, x: torch.Tensor, seed: int) -> nn.Module:
    """Running statistics from one training-mode forward on ``x`` (so every BN normalises its real
    input), then random affine parameters. Returns the model in eval mode."""
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: one batch sets the statistics exactly
    model.train()
    model(x)
    for bn, mom in zip(bns, saved):
        bn.momentum = mom
        if bn.affine:
            bn.weight.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
            bn.bias.copy_(torch.randn(bn.num_features, generator=g) * 0.1)
    return model.eval()


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """Fold every eval-mode ``conv`` + ``bn`` unit into its conv with ``torch.nn.utils.fusion``,
    in place. Fused blocks are left alone (their packing folds BN itself)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused_types = _fused_types()

    def visit(m: nn.Module) -> None:
        if fused_types and isinstance(m, fused_types):
            return
        conv, bn = getattr(m, "conv", None), getattr(m, "bn", None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            if bn.training or conv.training:
                raise RuntimeError("fold_batch_norms needs the model in eval mode")
            m.conv = fuse_conv_bn_eval(conv, bn)
            # fused_inception's ConvUnit skips a None bn; torchvision's BasicConv2d calls it.
            m.bn = None if "fused_inception" in type(m).__module__ else nn.Identity()
        for child in m.children():
            visit(child)

    visit(model)
    return model


# -- providers ------------------------------------------------------------------------------------
PEERS = ("eager", "eager-graph", "compile")
FUSED = ("fused-triton", "fused-triton-graph", "fused-cuda", "fused-cuda-graph")
ALL_PROVIDERS = PEERS + FUSED
DEFAULT_PROVIDERS = ("eager", "eager-graph", "compile", "fused-triton", "fused-triton-graph", "fused-cuda")
# What runs without CUDA: eager, compile (Inductor's C++ backend) and fused-triton (Triton's interpreter).
CPU_PROVIDERS = ("eager", "compile", "fused-triton")

PROVIDER_HELP = (
    "eager: the reference PyTorch module, BN folded with torch.nn.utils.fusion, cuDNN with "
    "cudnn.benchmark=True, same dtype and layout; "
    "eager-graph: the same captured in CUDA graphs and replayed; "
    "compile: torch.compile of the eager module (--compile-mode); "
    "fused-triton / fused-cuda: fused_inception.convert(..., backend='triton'/'cuda') "
    "(fused-cuda only when the CUDA extension imports and builds); "
    "fused-triton-graph / fused-cuda-graph: the fused module captured in CUDA graphs."
)


class ProviderUnavailableError(RuntimeError):
    """The provider cannot run here (no CUDA, extension missing): reported, not an error."""


def provider_group(name: str) -> str:
    return "peer" if name in PEERS else "fused"


def _expected_backend(name: str) -> str | None:
    base = name.removesuffix("-graph")
    return base.split("-", 1)[1] if base.startswith("fused-") else None


def cuda_extension_problem() -> str | None:
    """None when the optional CUDA extension is loaded (imported, or built just in time on this
    first call), else why it is not there. The extension is optional: its absence is reported,
    not an error of the benchmark."""
    import importlib

    try:
        ext = importlib.import_module("fused_inception.cuda_ext")
    except Exception as e:  # noqa: BLE001 - any import failure means "not available"
        return f"fused_inception.cuda_ext does not import ({type(e).__name__}: {e})"
    if not ext.available():
        return ext.load_error() or ("CUDA extension not available: no CUDA device, or neither a prebuilt "
                                    "fused_inception._C nor nvcc with the csrc/ sources")
    try:
        ext.load()
    except RuntimeError as e:
        return str(e)
    return None


@dataclass
class Provider:
    """One way of running the benchmarked model, prepared (compiled, captured) before timing."""

    name: str
    module: nn.Module | Callable
    graph: bool = False
    compiled: bool = False
    fused_module: nn.Module | None = None  # for the last_backend check
    interpreted_blocks: frozenset[str] | None = None  # CPU pass: blocks on the interpreter, None = all
    graphs: list = field(default_factory=list)
    static_in: list = field(default_factory=list)
    static_out: list = field(default_factory=list)
    # (shape, stride, dtype, device) of a warm-up output; not the tensor, which torch.compile's
    # CUDA graphs may overwrite (and then refuse to touch).
    out_meta: tuple | None = field(default=None, repr=False)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        if self.compiled:
            torch.compiler.cudagraph_mark_step_begin()  # outputs of cudagraph trees may be reused
        return self.module(x)

    def prepare(self, inputs: Sequence[torch.Tensor], warmup_calls: int = 3) -> None:
        """Warm up (compile, autotune, pack weights), and capture the CUDA graphs of a ``-graph``
        provider (one per input buffer, sharing one memory pool, warmed up on a side stream)."""
        with torch.no_grad():
            if not self.graph:
                for i in range(warmup_calls):
                    out = self._call(inputs[i % len(inputs)])
                    self.out_meta = (out.shape, out.stride(), out.dtype, out.device)
                if inputs[0].is_cuda:
                    torch.cuda.synchronize()
                return
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for i in range(max(warmup_calls, 1)):
                    self._call(inputs[i % len(inputs)])
            torch.cuda.current_stream().wait_stream(side)
            torch.cuda.synchronize()
            pool = None
            for x in inputs:
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g, pool=pool):
                    out = self._call(x)
                pool = g.pool()
                self.graphs.append(g)
                self.static_in.append(x)
                self.static_out.append(out)
            torch.cuda.synchronize()

    def check_output(self, x: torch.Tensor) -> torch.Tensor:
        """The provider's output on ``x`` (a fresh input), as a tensor it will not overwrite.

        Graph providers: ``x`` is copied into the first captured input and the captured output is
        poisoned with NaN before the replay, so an element the graph does not write shows up.
        Others: a NaN block of the output's size is freed just before the call, so the caching
        allocator most likely hands it to the output (best effort)."""
        with torch.no_grad():
            if self.graph:
                saved = self.static_in[0].clone()  # a rotation buffer: put its content back after
                self.static_in[0].copy_(x)
                self.static_out[0].fill_(float("nan"))
                self.graphs[0].replay()
                out = self.static_out[0].clone()
                self.static_in[0].copy_(saved)
                return out
            if self.out_meta is not None:
                shape, stride, dtype, device = self.out_meta
                poison = torch.empty_strided(shape, stride, dtype=dtype, device=device).fill_(float("nan"))
                del poison
            return self._call(x).clone()

    def bench_fn(self, inputs: Sequence[torch.Tensor]) -> Callable[[], object]:
        """A no-argument callable running one forward on the next input of the rotation."""
        if self.graph:
            graphs = self.graphs
            order = itertools.cycle(range(len(graphs)))
            return lambda: graphs[next(order)].replay()
        call = self._call
        order = itertools.cycle(range(len(inputs)))
        return lambda: call(inputs[next(order)])

    def backends_used(self) -> dict[str, str | None]:
        """Module path -> ``last_backend`` of every fused block (after a forward)."""
        if self.fused_module is None:
            return {}
        return {path or "<root>": m.last_backend for path, m in self.fused_module.named_modules()
                if isinstance(m, _fused_types())}

    def backends_ok(self) -> str | None:
        """None when every fused block ran the backend it was meant to (no silent fallback)."""
        want = _expected_backend(self.name)
        if want is None or self.fused_module is None:
            return None
        sel = self.interpreted_blocks
        wrong = {p: b for p, b in self.backends_used().items()
                 if b != (want if sel is None or p in sel else "reference")}
        if wrong:
            return f"unexpected backend in fused blocks {wrong} (wanted {want!r})"
        return None


def build_provider(name: str, model: nn.Module, *, dtype: torch.dtype, channels_last: bool,
                   device: torch.device, compile_mode: str = "max-autotune",
                   compile_dynamic: bool | None = False,
                   cpu_fused_blocks: Iterable[str] | None = None) -> Provider:
    """``name`` applied to a deep copy of ``model`` (an eval-mode block or network with its BN
    layers unfolded), moved to ``device``/``dtype``/layout.

    ``cpu_fused_blocks``: on CPU, the names (module paths) of the fused blocks that run the
    Triton interpreter; the other converted blocks use backend="reference" (the interpreter is slow).
    """
    import fused_inception as fi

    if name not in ALL_PROVIDERS:
        raise ValueError(f"unknown provider {name!r}; choose from {ALL_PROVIDERS}")
    graph = name.endswith("-graph")
    base = name.removesuffix("-graph")
    if device.type != "cuda" and name not in CPU_PROVIDERS:
        raise ProviderUnavailableError("needs CUDA")
    if device.type != "cuda" and name == "fused-triton" and not interpreter_on():
        raise ProviderUnavailableError("needs CUDA, or TRITON_INTERPRET=1 set before import for the interpreter")
    m = copy.deepcopy(model).eval()
    fused_module = None
    if base in ("eager", "compile"):
        fold_batch_norms(m)
    else:
        backend = _expected_backend(name)
        if backend == "cuda":
            problem = cuda_extension_problem()
            if problem is not None:
                raise ProviderUnavailableError(problem)
        m, report = fi.convert(m, backend=backend, return_report=True)
        if not report.replaced:
            raise RuntimeError(f"fused_inception.convert replaced no block ({report})")
        fold_batch_norms(m)  # the layers outside the fused blocks (a network's stem)
        fused_module = m
        if cpu_fused_blocks is not None and "all" not in cpu_fused_blocks:
            interpreted = frozenset(cpu_fused_blocks)
            paths = {p for p, sub in m.named_modules() if isinstance(sub, fi.FusedInception)}
            if not interpreted <= paths:
                raise ValueError(f"no fused block at {sorted(interpreted - paths)}; fused blocks: {sorted(paths)}")
            for path, sub in m.named_modules():
                if isinstance(sub, fi.FusedInception) and path not in interpreted:
                    sub.backend = "reference"
    m = m.to(device=device, dtype=dtype)
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
    module: nn.Module | Callable = m
    compiled = False
    if base == "compile":
        module = torch.compile(m, mode=compile_mode, dynamic=compile_dynamic)
        compiled = True
    prov = Provider(name, module, graph=graph, compiled=compiled, fused_module=fused_module)
    if fused_module is not None and cpu_fused_blocks is not None and "all" not in cpu_fused_blocks:
        prov.interpreted_blocks = frozenset(cpu_fused_blocks)
    return prov


# -- checks ---------------------------------------------------------------------------------------
def check_indices(n: int, k: int = 8) -> list[int]:
    """Up to ``k`` image indices spread over the batch, first and last included."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in fp64; NaN when ``out`` holds a non-finite value."""
    out64 = out.to(torch.float64)
    if not torch.isfinite(out64).all():
        return float("nan")
    denom = ref.norm().item()
    return (out64 - ref).norm().item() / (denom if denom > 0 else 1.0)


def check_against(out: torch.Tensor, ref: torch.Tensor, idx: list[int], tol: float) -> tuple[bool, float, str]:
    """(ok, relative error on the images ``idx``, message); the whole output must be finite."""
    if tuple(out.shape[1:]) != tuple(ref.shape[1:]):
        return False, float("nan"), f"shape {tuple(out.shape)} vs reference {tuple(ref.shape)}"
    if not torch.isfinite(out).all():
        bad = (~torch.isfinite(out)).sum().item()
        return False, float("nan"), f"{bad} non-finite output element(s) (unwritten or overflow)"
    err = relative_error(out[idx], ref)
    if not err <= tol:
        return False, err, f"relative error {err:.3g} > tolerance {tol:g}"
    return True, err, ""


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
    k = int(min(10, max(1, 20 / first_ms)))  # about 20 ms to estimate the per-call time
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(k):
        fn()
    end.record()
    end.synchronize()
    est = max(start.elapsed_time(end) / k, 1e-4)
    calls = int(min(10_000, max(1, math.ceil(rep_ms / samples / est))))
    if calls == 1:  # long calls (>= rep_ms / samples): launch gaps don't matter, keep the run short
        samples = int(max(10, min(samples, math.ceil(rep_ms / est))))
    times = []
    for _ in range(samples):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / calls)
    return quantiles(times)


def choose_method(timing: str, floor_s: float, launch_bound_us: float) -> str:
    if timing != "auto":
        return timing
    return "loop" if floor_s * 1e6 < launch_bound_us else "events"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except the None/False of options whose help states the defaults itself."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


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
            set_precision(name)
            a = torch.randn(matmul_n, matmul_n, device=device, dtype=torch_dtype(name))
            b = torch.randn(matmul_n, matmul_n, device=device, dtype=torch_dtype(name))
            ms = bench(lambda a=a, b=b: a @ b)
            out["matmul_tflops"][name] = 2 * matmul_n**3 / (ms * 1e-3) / 1e12
            a = b = None
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    torch.cuda.empty_cache()
    return out


# -- environment ----------------------------------------------------------------------------------
def _run(cmd: list[str], timeout: float = 10) -> str | None:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


NVSMI_FIELDS = ("name", "driver_version", "pstate", "clocks.sm", "clocks.mem", "clocks.max.sm",
                "clocks.max.mem", "power.draw", "power.limit", "temperature.gpu")


def nvidia_smi_query() -> dict | None:
    """Read-only ``nvidia-smi --query-gpu`` of the GPUs' name, driver, clocks, power and temperature."""
    if shutil.which("nvidia-smi") is None:
        return None
    text = _run(["nvidia-smi", f"--query-gpu={','.join(NVSMI_FIELDS)}", "--format=csv,noheader"])
    if text:
        return {"gpus": [dict(zip(NVSMI_FIELDS, (v.strip() for v in line.split(",")))) for line in text.splitlines()]}
    # One field this driver does not know fails the whole query: ask field by field.
    gpus: list[dict] = []
    for f in NVSMI_FIELDS:
        for i, v in enumerate((_run(["nvidia-smi", f"--query-gpu={f}", "--format=csv,noheader"]) or "").splitlines()):
            while len(gpus) <= i:
                gpus.append({})
            gpus[i][f] = v.strip()
    return {"gpus": gpus} if gpus else None


def environment() -> dict:
    try:
        triton_version = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:  # the package runs without Triton (reference backend)
        triton_version = None
    env: dict = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "triton": triton_version,
        "triton_interpret": os.environ.get("TRITON_INTERPRET"),
        "fused_inception_env": {k: v for k, v in os.environ.items() if k.startswith("FUSED_INCEPTION_")},
        "git_commit": _run(["git", "rev-parse", "HEAD"]),
        "git_dirty": bool(_run(["git", "status", "--porcelain", "--untracked-files=no"])),
        "cuda_available": torch.cuda.is_available(),
    }
    fi = sys.modules.get("fused_inception")
    if fi is not None:
        env["fused_inception"] = {"version": getattr(fi, "__version__", None), "path": str(Path(fi.__file__).parent)}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env["gpu"] = {
            "name": p.name,
            "capability": f"{p.major}.{p.minor}",
            "multiprocessors": p.multi_processor_count,
            "memory_gib": round(p.total_memory / 2**30, 1),
            "l2_bytes": l2_bytes(),
        }
        env["nvidia_smi_start"] = nvidia_smi_query()
    return env


def l2_bytes() -> int:
    p = torch.cuda.get_device_properties(0)
    return int(getattr(p, "L2_cache_size", 0) or 50 * 2**20)


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


# -- output ---------------------------------------------------------------------------------------
def format_table(headers: Sequence[str], rows: Sequence[Sequence[object] | str | None],
                 right: Iterable[int] = ()) -> str:
    """Plain monospace table; ``right`` lists the columns aligned right. A row ``None`` is a rule,
    a string row is printed as it is (a heading spanning the columns)."""
    right = set(right)
    cells = [r if r is None or isinstance(r, str) else [("" if v is None else str(v)) for v in r] for r in rows]
    widths = [len(h) for h in headers]
    for r in cells:
        if isinstance(r, list):
            widths = [max(w, len(c)) for w, c in zip(widths, r)]

    def line(values: Sequence[str]) -> str:
        padded = (v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths)))
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * w for w in widths)
    out = [line(headers), rule]
    out += [rule if r is None else r if isinstance(r, str) else line(r) for r in cells]
    return "\n".join(out)


def fmt(value: float | None, digits: int = 3) -> str:
    """Significant-digit formatting for table cells ('-' for missing)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value == 0:
        return "0"
    mag = math.floor(math.log10(abs(value)))
    if mag < -3:
        return f"{value:.{max(digits - 1, 0)}e}"
    decimals = max(0, digits - 1 - mag)
    return f"{value:.{decimals}f}"


def json_default(o):
    if isinstance(o, (torch.dtype, torch.device, Path)):
        return str(o)
    if isinstance(o, float) and math.isnan(o):
        return None
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _nan_to_none(o):
    if isinstance(o, float) and (math.isnan(o) or math.isinf(o)):
        return None
    if isinstance(o, dict):
        return {k: _nan_to_none(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_nan_to_none(v) for v in o]
    return o


def write_json(path: Path, obj: dict) -> None:
    """Atomic write (tmp file + rename), so a run stopped mid-way leaves the last complete state."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_nan_to_none(obj), indent=1, default=json_default) + "\n")
    os.replace(tmp, path)


def try_import_pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def group_cases(cases: Sequence[dict], keys: Sequence[str]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for c in cases:
        groups.setdefault(tuple(c[k] for k in keys), []).append(c)
    return groups


PROVIDER_COLORS = {"eager": "#7f7f7f", "eager-graph": "#bcbd22", "compile": "#9467bd", "fused-triton": "#1f77b4",
                   "fused-triton-graph": "#17becf", "fused-cuda": "#d62728", "fused-cuda-graph": "#ff9896"}


def plot_bars(plt, ax, labels: Sequence[str], series: dict[str, list[float | None]], *, log: bool,
              ylabel: str, title: str, hline: float | None = None) -> None:
    """Grouped bars, one colour per provider (the same in every panel); missing values leave gaps."""
    series = {k: v for k, v in series.items() if any(x is not None and x > 0 for x in v)}
    n = max(len(series), 1)
    width = 0.8 / n
    for i, (name, values) in enumerate(series.items()):
        xs = [j + (i - (n - 1) / 2) * width for j in range(len(labels))]
        ys = [v if v is not None and v > 0 else float("nan") for v in values]
        ax.bar(xs, ys, width=width, label=name, color=PROVIDER_COLORS.get(name))
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=90 if len(labels) > 12 else 0, fontsize=8)
    ax.set_xlim(-0.6, len(labels) - 0.4)
    if log:
        from matplotlib.ticker import FuncFormatter

        ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
        ax.tick_params(axis="y", which="minor", labelsize=6)
    if hline is not None:
        ax.axhline(hline, color="black", linewidth=0.8)
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo, max(hi, hline * 1.5))  # keep the reference line in view
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    if series:
        ax.legend(fontsize=7)


def pyplot_or_warn():
    """``matplotlib.pyplot`` (Agg backend), or None after saying on stderr that it is missing."""
    plt = try_import_pyplot()
    if plt is None:
        print("matplotlib is not installed: no PNG (pip install matplotlib)", file=sys.stderr)
    return plt


def save_figure(plt, fig, path: Path) -> bool:
    """Lay out, write as PNG and close ``fig``; True (``plot`` returns it: a PNG was written)."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- the driver of bench_block.py and bench_googlenet.py ------------------------------------------
def set_up_run(prog: str, args: argparse.Namespace,
               resolve: Callable[[argparse.Namespace, bool], argparse.Namespace], gpu_output: str):
    """CUDA or the CPU pass (the interpreter switched on first), the package imported, the
    arguments resolved for that mode. ``gpu_output``: what the script prints on a GPU, in a few
    words, told to whoever runs it without one. Returns ``(args, cuda, fused_inception)``;
    ``args`` is None after a bad argument was reported (the caller exits with 2)."""
    cuda = use_interpreter_if_no_cuda(force_cpu=args.cpu)
    if not cuda:
        print(NO_CUDA_MESSAGE.format(gpu_output=gpu_output) if not args.cpu
              else "--cpu: correctness pass on CPU, no timing.")
    fi = import_fused_inception()
    try:
        args = resolve(args, cuda)
    except ValueError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return None, cuda, fi
    if cuda:
        torch.backends.cudnn.benchmark = True
    return args, cuda, fi


def start_run(benchmark: str, args: argparse.Namespace, cuda: bool, tolerance: dict, *,
              ceiling_dtypes: Iterable[str] = (), device: torch.device | None = None, **fields) -> dict:
    """The results of a run (``benchmark`` also names its files): environment, arguments, the
    script's own ``fields``, the tolerances; on CUDA the ceilings of ``ceiling_dtypes``, measured now."""
    data: dict = {"benchmark": benchmark, "schema": 1, "mode": "gpu" if cuda else "cpu-correctness",
                  "env": environment(), "args": {k: (str(v) if isinstance(v, Path) else v)
                                                for k, v in vars(args).items()},
                  **fields, "tolerance": tolerance, "cases": [], "complete": False}
    if cuda:
        print(f"measuring ceilings on {torch.cuda.get_device_name()} ...", file=sys.stderr, flush=True)
        data["ceilings"] = measure_ceilings(ceiling_dtypes, device)
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
                write_json(json_path, data)
        else:
            data["complete"] = True
    progress.close()
    if data["mode"] == "gpu":
        data["env"]["nvidia_smi_end"] = nvidia_smi_query()


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
        write_json(json_path, data)
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
        self.l2 = l2_bytes() if cuda else 0

    def run_provider(self, name, model, inputs, x_check, ref, idx, tol, dtype, channels_last, method,
                     **build_kwargs) -> dict:
        args = self.args
        res: dict = {"group": provider_group(name)}
        prov = None
        try:
            t0 = time.perf_counter()
            prov = build_provider(name, model, dtype=dtype, channels_last=channels_last, device=self.device,
                                  compile_mode=args.compile_mode,
                                  compile_dynamic=None if args.compile_dynamic else False, **build_kwargs)
            prov.prepare(inputs, warmup_calls=self.warmup_calls)
            res["prepare_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            out = prov.check_output(x_check)
            ok, err, msg = check_against(out, ref, idx, tol)
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
                timer = time_events if method == "events" else time_loop
                med, p20, p80 = timer(fn, args.warmup, args.rep)
                res.update(median_ms=med, p20_ms=p20, p80_ms=p80)
        except ProviderUnavailableError as e:
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


def status_cell(r: dict) -> str:
    """A provider's check in the GPU tables: 'ok <rel err>', 'MISMATCH <rel err>', 'ERROR' or the status."""
    st = r.get("status", "-")
    if st == "ok":
        return f"ok {fmt(r.get('rel_err'), 2)}"
    if st == "mismatch":
        return f"MISMATCH {fmt(r.get('rel_err'), 2)}"
    return st.upper() if st == "error" else st


# -- summaries (device_check.sh prints these last) --------------------------------------------------
def summarize_block(data: dict) -> str:
    rows = []
    fused = [p for p in FUSED if any(p in c["providers"] for c in data.get("cases", []))]
    for c in data.get("cases", []):
        prov = c["providers"]
        best = c.get("best_peer")
        best_us = prov[best]["median_ms"] * 1e3 if best else None
        row = [c["block"], c["batch"], c["dtype"], c.get("method", "-"), fmt(best_us), best or "-"]
        for p in fused:
            r = prov.get(p, {})
            if r.get("status") != "ok":
                row += [r.get("status", "-"), "", ""]
            elif r.get("median_ms") is None:
                row += ["ok (untimed)", "", ""]
            else:
                row += [fmt(r["median_ms"] * 1e3), fmt(r.get("speedup_vs_best_peer")), fmt(r.get("pct_floor"))]
        rows.append(row)
    headers = ["block", "N", "dtype", "method", "best peer us", "best peer"]
    for p in fused:
        headers += [f"{p} us", "x peer", "%floor"]
    title = f"bench_block: {data.get('env', {}).get('gpu', {}).get('name', 'no GPU')}"
    if not data.get("complete", False):
        title += "  (INCOMPLETE: the run stopped early)"
    return title + "\n" + format_table(headers, rows, right=range(1, len(headers)))


def summarize_googlenet(data: dict) -> str:
    rows = []
    providers = list(dict.fromkeys(p for c in data.get("cases", []) for p in c["providers"]))
    for c in data.get("cases", []):
        row = [c["dtype"], c["batch"], c.get("image_size", "-")]
        for p in providers:
            r = c["providers"].get(p, {})
            row.append(fmt(r.get("images_per_s")) if r.get("images_per_s") else r.get("status", "-"))
        best = c.get("best_peer")
        fused_best = max((c["providers"][p].get("speedup_vs_best_peer") or 0 for p in c["providers"]
                          if provider_group(p) == "fused"), default=0)
        row += [best or "-", fmt(fused_best) if fused_best else "-"]
        rows.append(row)
    headers = ["dtype", "N", "img", *[f"{p} img/s" for p in providers], "best peer", "best fused x peer"]
    title = f"bench_googlenet: {data.get('env', {}).get('gpu', {}).get('name', 'no GPU')}"
    if not data.get("complete", False):
        title += "  (INCOMPLETE: the run stopped early)"
    return title + "\n" + format_table(headers, rows, right=range(1, len(headers)))


def summarize(paths: Sequence[str]) -> int:
    status = 0
    for p in paths:
        path = Path(p)
        if not path.exists():
            print(f"{path}: missing (the benchmark did not write it)")
            status = 1
            continue
        data = json.loads(path.read_text())
        kind = data.get("benchmark")
        print(summarize_block(data) if kind == "bench_block" else summarize_googlenet(data))
        print()
    return status


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "summary":
        sys.exit(summarize(sys.argv[2:]))
    print("usage: python benchmarks/_common.py summary RESULTS.json [...]", file=sys.stderr)
    sys.exit(2)
