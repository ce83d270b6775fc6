"""The ways of running the benchmarked model (eager, CUDA graphs, torch.compile, the fused
backends), the model preparation they share, and the check against the fp64 reference."""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import counting
import environment as E
import torch
from torch import nn

# Relative error ||out - ref|| / ||ref|| against an fp64 reference, per compute dtype, about 10x
# what PyTorch's own ops give (measured on CPU: a block in fp16 3e-4, bf16 3e-3; the whole
# GoogLeNet's logits in fp16 1e-3 to 2e-3, bf16 1e-2 to 2e-2, fp32 2e-6). A wrong halo, branch or
# channel slice gives errors of order 1e-1 and more.
TOLERANCE_BLOCK = {"fp32": 1e-4, "tf32": 5e-3, "fp16": 5e-3, "bf16": 3e-2}
TOLERANCE_MODEL = {"fp32": 1e-3, "tf32": 1e-2, "fp16": 1e-2, "bf16": 6e-2}


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

    from fused_inception.reference import ConvUnit

    fused_types = counting.fused_block_types()

    def visit(m: nn.Module) -> None:
        if isinstance(m, fused_types):
            return
        conv, bn = getattr(m, "conv", None), getattr(m, "bn", None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            if bn.training or conv.training:
                raise RuntimeError("fold_batch_norms needs the model in eval mode")
            m.conv = fuse_conv_bn_eval(conv, bn)
            # fused_inception's ConvUnit skips a None bn; a BasicConv2d (torchvision's, or
            # fused_inception.models.inception_v3's) calls it.
            m.bn = None if isinstance(m, ConvUnit) else nn.Identity()
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
    "(fused-cuda only when the CUDA extension imports and builds, and only for GoogLeNet's blocks); "
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
                    self._call(inputs[i % len(inputs)])
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
        Others allocate their output in the call, so nothing can be poisoned beforehand: an unwritten
        element shows up only through the relative error of the checked images."""
        with torch.no_grad():
            if self.graph:
                saved = self.static_in[0].clone()  # a rotation buffer: put its content back after
                self.static_in[0].copy_(x)
                self.static_out[0].fill_(float("nan"))
                self.graphs[0].replay()
                out = self.static_out[0].clone()
                self.static_in[0].copy_(saved)
                return out
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
                if isinstance(m, counting.fused_block_types())}

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


def graph_block_kinds(model: nn.Module) -> list[str]:
    """The kinds ("A".."E", "fid-A", ...) of the blocks ``convert`` would make ``FusedBlock``s of
    (every block that is not GoogLeNet's), found on a copy without the probe check."""
    import fused_inception as fi

    _, report = fi.convert(copy.deepcopy(model), backend="reference", verify=False, return_report=True)
    return sorted(set(report.kinds.values()) - {"googlenet"})


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
    if _expected_backend(name) == "cuda" and (kinds := graph_block_kinds(model)):
        raise ProviderUnavailableError(f"the CUDA extension computes GoogLeNet blocks only, not {'/'.join(kinds)}")
    if device.type != "cuda" and name not in CPU_PROVIDERS:
        raise ProviderUnavailableError("needs CUDA")
    if device.type != "cuda" and name == "fused-triton" and not E.interpreter_on():
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
            fused_types = counting.fused_block_types()
            paths = {p for p, sub in m.named_modules() if isinstance(sub, fused_types)}
            if not interpreted <= paths:
                raise ValueError(f"no fused block at {sorted(interpreted - paths)}; fused blocks: {sorted(paths)}")
            for path, sub in m.named_modules():
                if isinstance(sub, fused_types) and path not in interpreted:
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
