"""``FusedInception``: the drop-in ``nn.Module`` that runs a whole Inception block in one launch."""

from __future__ import annotations

import os
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from . import cuda_ext
from .kernels.triton_inception import interpreting
from .ops import inception_forward
from .packing import PackedWeights, pack_weights, pack_weights_differentiable
from .reference import UnitTensors, build_branches
from .spec import InceptionSpec
from .structure import InceptionParts, parse_inception

__all__ = ["FusedInception", "BACKENDS", "FUSED_DTYPES", "pack_weights_differentiable"]

BACKENDS = ("auto", "reference", "triton", "cuda")
FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_PACK_DTYPES = (*FUSED_DTYPES, torch.float64)
ENV_BACKEND = "FUSED_INCEPTION_BACKEND"
# "auto" on CUDA runs Triton until a benchmark shows the CUDA extension faster somewhere.
AUTO_PREFERS_CUDA = False


def _check_backend(name: object, where: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"{where} must be one of {BACKENDS}, got {name!r}")
    return name  # type: ignore[return-value]


def _functorch_active() -> bool:
    """True inside a torch.func transform (grad, vmap, jacrev, ...)."""
    return torch._C._functorch.peek_interpreter_stack() is not None


_PER_UNIT = 6  # weight, bias, bn_weight, bn_bias, bn_mean, bn_var


def _units_from_flat(flat: list[torch.Tensor | None], eps: tuple[float, ...]) -> tuple[UnitTensors, ...]:
    return tuple(UnitTensors(*flat[_PER_UNIT * i: _PER_UNIT * i + _PER_UNIT], bn_eps=e) for i, e in enumerate(eps))


class _Repack(torch.autograd.Function):
    """Connects the cached packed weights to the parameters they were folded from.

    Forward hands back the cache (aliases, no work); backward maps the gradients of the packed
    tensors to the module's conv weights/biases and BatchNorm affine parameters through the
    differentiable folding. Eager mode only: under ``torch.compile`` the folding is in the graph.
    """

    @staticmethod
    def forward(ctx, packed, dtype, eps, *flat):
        ctx.dtype, ctx.eps = dtype, eps
        ctx.present = tuple(t is not None for t in flat)
        ctx.save_for_backward(*(t for t in flat if t is not None))
        return tuple(t.detach() for t in packed)  # new tensor objects: the cache stays grad-free

    @staticmethod
    def backward(ctx, *grads):
        it = iter(ctx.saved_tensors)
        flat = [next(it) if p else None for p in ctx.present]
        wanted = [i for i, t in enumerate(flat) if t is not None and ctx.needs_input_grad[3 + i]]
        result: list[torch.Tensor | None] = [None] * len(flat)
        if wanted:
            def pack(*primals):
                args = list(flat)
                for i, t in zip(wanted, primals):
                    args[i] = t
                return tuple(pack_weights_differentiable(_units_from_flat(args, ctx.eps), ctx.dtype))

            _, vjp_fn = torch.func.vjp(pack, *(flat[i] for i in wanted))
            for i, g in zip(wanted, vjp_fn(grads)):
                result[i] = g
        return (None, None, None, *result)


class FusedInception(nn.Module):
    """An Inception block (GoogLeNet) computed in one kernel launch.

    Positional arguments are torchvision's ``Inception``'s. The defaults build torchvision's block
    (conv without bias + BatchNorm(eps=1e-3) + ReLU, "5x5" branch with a 3x3 kernel); the keywords
    select other variants, e.g. the paper's block is ``k5=5, bias=True, batch_norm=False``.
    Parameter and buffer names are those of the mirrored block, so ``state_dict``s load both ways.

    ``backend``: ``"auto"`` (fastest available for the input's device; overridden by the
    ``FUSED_INCEPTION_BACKEND`` environment variable), ``"reference"`` (PyTorch ops), ``"triton"``
    or ``"cuda"``. After each forward ``last_backend`` names the backend that actually ran.
    The reference path runs whenever the fused one cannot give PyTorch's semantics: BatchNorm in
    training mode (batch statistics, running-stat updates by the BatchNorm modules themselves) and
    inside ``torch.func`` transforms.

    Training: gradients reach ``x`` and every parameter (BatchNorm's affine ones through the
    folding); the backward recomputes the block from ``x``, the only activation it keeps.
    ``torch.compile(fullgraph=True)``, CUDA graphs and DDP work; see README.
    """

    last_backend: str | None

    def __init__(self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int,
                 ch5x5: int, pool_proj: int, *, k3: int = 3, k5: int = 3, bias: bool = False,
                 batch_norm: bool = True, bn_eps: float = 1e-3, relu: bool = True,
                 backend: str = "auto", device=None, dtype=None) -> None:
        super().__init__()
        spec = InceptionSpec(in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj,
                             k3=k3, k5=k5, bias=bias, batch_norm=batch_norm, bn_eps=bn_eps, relu=relu)
        for name, branch in build_branches(spec, device, dtype).items():
            self.add_module(name, branch)
        self._setup(parse_inception(self), backend)

    @classmethod
    def from_spec(cls, spec: InceptionSpec, *, backend: str = "auto", device=None, dtype=None) -> FusedInception:
        return cls(*spec.channels, k3=spec.k3, k5=spec.k5, bias=spec.bias, batch_norm=spec.batch_norm,
                   bn_eps=spec.bn_eps, relu=spec.relu, backend=backend, device=device, dtype=dtype)

    @classmethod
    def from_module(cls, block: nn.Module, *, backend: str = "auto") -> FusedInception:
        """A fused block that takes over ``block``'s branches (the same modules: parameters,
        buffers, dtype, device and train/eval mode are shared, not copied).

        Raises ``NotAnInceptionBlock`` (a ``ValueError``) naming the part that does not fit.
        """
        parts = parse_inception(block)
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        for name, child in block.named_children():
            self.add_module(name, child)
        self.train(block.training)
        self._setup(parts, backend)
        return self

    def _setup(self, parts: InceptionParts, backend: str) -> None:
        self.backend = _check_backend(backend, "backend")
        self._parts = parts
        # (key, packed weights, aliases of the tensors they were packed from), swapped as one tuple so
        # that concurrent forwards always see a consistent entry. The aliases keep the source
        # storages alive, so a new tensor cannot reuse an address (and version) of the key.
        self._packed_cache: tuple | None = None
        self.last_backend = None

    @property
    def spec(self) -> InceptionSpec:
        return self._parts.spec

    def extra_repr(self) -> str:
        s = self.spec
        return (f"{s.in_channels} -> {s.out_channels} (1x1 {s.ch1x1}, {s.k3}x{s.k3} {s.ch3x3red}->{s.ch3x3}, "
                f"{s.k5}x{s.k5} {s.ch5x5red}->{s.ch5x5}, pool {s.pool_proj}), bias={s.bias}, "
                f"batch_norm={s.batch_norm}, relu={s.relu}, backend={self.backend!r}")

    # -- input checks and backend choice ---------------------------------------------------------
    def _check_input(self, x: object) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"FusedInception expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"FusedInception expects a 4-D input (N, C, H, W), got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"FusedInception expects a floating-point input (float16, bfloat16, float32 "
                            f"or float64), got {x.dtype}")
        if x.shape[1] != self.spec.in_channels:
            raise ValueError(f"FusedInception expects {self.spec.in_channels} input channels, got "
                             f"{x.shape[1]} (input shape {tuple(x.shape)})")
        if x.shape[2] < 1 or x.shape[3] < 1:
            raise ValueError(f"FusedInception expects H and W >= 1, got input shape {tuple(x.shape)}")
        w = self._parts.units[0].conv.weight
        if w.device != x.device:
            raise ValueError(f"input is on {x.device} but the block's parameters are on {w.device}")
        if w.dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):
            raise TypeError(f"input dtype {x.dtype} does not match the block's parameter dtype {w.dtype}; "
                            "convert the block (e.g. .half()) or run under torch.autocast")

    def _bn_uses_batch_stats(self) -> bool:
        return any(bn.training for bn in self._parts.batch_norms())

    def _choose_backend(self, x: torch.Tensor) -> str:
        requested = self.backend
        if requested == "auto":
            requested = _check_backend(os.environ.get(ENV_BACKEND) or "auto", ENV_BACKEND)
        if self._bn_uses_batch_stats():
            return "reference"  # BatchNorm in training mode needs batch statistics
        if not torch.compiler.is_compiling() and _functorch_active():
            # PyTorch cannot run custom ops with registered autograd under torch.func transforms.
            if requested in ("triton", "cuda"):
                raise RuntimeError(f"backend={requested!r} cannot run inside a torch.func transform "
                                   "(grad, vmap, jacrev, ...); use backend='auto' or 'reference'")
            return "reference"
        if requested == "auto":
            if x.dtype not in FUSED_DTYPES:
                return "reference"
            if x.is_cuda and AUTO_PREFERS_CUDA and cuda_ext.available():
                try:
                    if not torch.compiler.is_compiling():
                        cuda_ext.load()
                    return "cuda"
                except RuntimeError as exc:  # remembered by cuda_ext: warns once, then Triton
                    warnings.warn(f"fused_inception: backend='auto' falls back to Triton: {exc}",
                                  RuntimeWarning, stacklevel=3)
            if x.is_cuda or (x.device.type == "cpu" and interpreting()):
                return "triton"
            return "reference"
        if requested in ("triton", "cuda"):
            if x.dtype not in FUSED_DTYPES:
                raise TypeError(f"backend={requested!r} takes float16, bfloat16 or float32 input, got {x.dtype}")
            if requested == "triton" and not (x.is_cuda or (x.device.type == "cpu" and interpreting())):
                raise RuntimeError(f"backend='triton' needs a CUDA tensor (got one on {x.device}); for CPU "
                                   "tensors set TRITON_INTERPRET=1 before importing fused_inception")
            if requested == "cuda" and not x.is_cuda:
                raise RuntimeError(f"backend='cuda' needs a CUDA tensor, got one on {x.device}")
            if requested == "cuda" and not torch.compiler.is_compiling():
                cuda_ext.load()  # imports or builds on first use; a failure names torch/CUDA/compiler versions
        return requested

    # -- weights ---------------------------------------------------------------------------------
    def _raw_tensors(self) -> list[torch.Tensor | None]:
        """Per unit: conv weight, conv bias, bn weight, bn bias, bn running mean and var (or None)."""
        flat: list[torch.Tensor | None] = []
        for u in self._parts.units:
            bn = u.bn
            flat += (u.conv.weight, u.conv.bias, None, None, None, None) if bn is None else (
                u.conv.weight, u.conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var)
        return flat

    def _eps(self) -> tuple[float, ...]:
        return tuple(1e-3 if u.bn is None else u.bn.eps for u in self._parts.units)

    def packed_weights(self, dtype: torch.dtype) -> PackedWeights:
        """Folded, GEMM-laid-out weights for ``dtype`` (no autograd graph); rebuilt when any
        parameter or buffer changes (in place, by ``load_state_dict`` or by ``.to()``).

        Changes made through ``.data`` bypass the version counter and are not seen.
        """
        if dtype not in _PACK_DTYPES:
            raise TypeError(f"packed_weights: dtype must be one of {_PACK_DTYPES}, got {dtype}")
        tensors = [t for t in self._raw_tensors() if t is not None]
        key = (dtype, tensors[0].device, *((t.data_ptr(), t._version) for t in tensors))
        cache = self._packed_cache  # read once: another thread may swap it
        if cache is not None and cache[0] == key:
            return cache[1]
        with torch.inference_mode(False):  # normal tensors, usable by autograd after inference_mode
            packed = pack_weights(self._parts.tensors(), dtype)
        self._packed_cache = (key, packed, tuple(t.detach() for t in tensors))
        return packed

    def _packed_for_forward(self, dtype: torch.dtype) -> PackedWeights:
        """Packed weights carrying the autograd connection to the parameters when one is needed."""
        if torch.compiler.is_compiling():
            # Folded in the graph from the live parameters (no Python cache under tracing);
            # AOTAutograd differentiates through it.
            return pack_weights_differentiable(self._parts.tensors(), dtype)
        packed = self.packed_weights(dtype)
        if torch.is_grad_enabled():
            flat = self._raw_tensors()
            if any(t is not None and t.requires_grad for t in flat):
                packed = PackedWeights(*_Repack.apply(packed, dtype, self._eps(), *flat))
        return packed

    # -- forward ---------------------------------------------------------------------------------
    def _reference(self, x: torch.Tensor) -> torch.Tensor:
        def unit(t, u):
            t = F.conv2d(t, u.conv.weight, u.conv.bias, padding=u.kernel_size // 2)
            if u.bn is not None:
                t = u.bn(t)  # the module itself: exact train/eval semantics and running-stat updates
            return F.relu(t) if u.relu else t

        b1, r3, c3, r5, c5, pp = self._parts.units
        return torch.cat([unit(x, b1), unit(unit(x, r3), c3), unit(unit(x, r5), c5),
                          unit(F.max_pool2d(x, 3, 1, 1), pp)], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        if torch.is_autocast_enabled(x.device.type):
            x = x.to(torch.get_autocast_dtype(x.device.type))  # what nn.Conv2d does under autocast
        backend = self._choose_backend(x)
        if backend == "reference":
            out = self._reference(x)
        else:
            # The registered op's autograd gives the gradients of x and of the packed weights
            # (backward recomputes the block from x: no intermediate map is saved); _Repack, or
            # the traced folding under torch.compile, carries them on to the parameters.
            spec = self.spec
            packed = self._packed_for_forward(x.dtype)
            out = inception_forward(x, *packed, list(spec.channels), spec.k3, spec.k5, spec.relu, backend)
        self.last_backend = backend
        return out

