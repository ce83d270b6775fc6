"""The fused modules' shared machinery (``FusedModule``: checks, backend choice, weight cache,
forward) and ``FusedInception``, GoogLeNet's block in one launch. ``FusedBlock`` (any graph) is in
``fused_block.py``."""

from __future__ import annotations

import os
import warnings

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from . import cuda_ext
from .binding import bind, fingerprint
from .graph import BlockGraph
from .kernels import interpreting, require_triton, triton_available
from .ops import check_input, inception_forward
from .packing import PackedWeights, conv_memory_format, pack_weights, pack_weights_differentiable
from .reference import build_branches
from .spec import InceptionSpec
from .structure import InceptionParts, NotAnInceptionBlock, fusion_bypasses, parse_inception

__all__ = ["FusedInception", "FusedModule", "BACKENDS", "FUSED_DTYPES", "invalidate_caches"]

BACKENDS = ("auto", "reference", "triton", "cuda")
FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_PACK_DTYPES = (*FUSED_DTYPES, torch.float64)
ENV_BACKEND = "FUSED_INCEPTION_BACKEND"


def _check_backend(name: object, where: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"{where} must be one of {BACKENDS}, got {name!r}")
    return name  # type: ignore[return-value]


def _autocast_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast gives a conv on ``x``'s device now, or None (also for devices without
    autocast, such as meta)."""
    kind = x.device.type
    if torch.amp.is_autocast_available(kind) and torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return None


def _functorch_active() -> bool:
    """True inside a torch.func transform (grad, vmap, jacrev, ...)."""
    return torch._C._functorch.peek_interpreter_stack() is not None


# -- when packed weights are stale --------------------------------------------------------------
# Some writes change a tensor's values without bumping its ``_version``: fused optimizer kernels
# (``Adam(fused=True)``) and BatchNorm's running-stat update in a training forward. A cache key
# of (tensor, version) alone would miss them, so the key also holds a global generation bumped
# after every ``torch.optim`` step (any ``Optimizer`` subclass runs this hook) and BatchNorm's
# ``num_batches_tracked`` tensor, which every training-mode BatchNorm forward bumps in place.
_GENERATION = [0]


def invalidate_caches() -> None:
    """Make every ``FusedInception`` re-fold its weights on its next inference forward.

    Needed only after writes that neither bump a tensor's version nor come from a ``torch.optim``
    optimizer step: assignments through ``.data`` and in-place collectives such as
    ``torch.distributed.broadcast`` into a parameter.
    """
    _GENERATION[0] += 1


register_optimizer_step_post_hook(lambda *args: invalidate_caches())


_NO_TORCHSCRIPT = ("FusedInception does not support TorchScript (torch.jit.script / torch.jit.trace): its forward "
                   "is a custom operator with Python-side weight folding. Use torch.compile, or torch.export.export "
                   "for a graph to deploy; fused_inception.unconvert(model) gives plain PyTorch blocks for other "
                   "exporters.")


class FusedModule(nn.Module):
    """What every fused block shares: the binding to its units, the input checks, the backend
    choice, the weight cache and the forward. A subclass says how its structure is parsed
    (``_parse``), packed (``_pack``), run fused (``_fused``) and run as PyTorch ops (``_reference``).
    """

    last_backend: str | None
    _HAS_CUDA_EXT = False  # the CUDA extension computes GoogLeNet's block only

    @classmethod
    def _take_over(cls, block: nn.Module, backend: str, verify: bool, **state):
        """``from_module``'s common part: refuse what the kernel would bypass, verify ``block``'s
        forward on a probe (``convert.verify_block``), then share its submodules; ``state``: what
        the subclass's ``_parse`` needs besides them."""
        reason = fusion_bypasses(block)
        if reason is not None:
            raise ValueError(f"{cls.__name__}.from_module: {reason}")
        if verify:
            from .convert import verify_block
            reason = verify_block(block)
            if reason is not None:
                raise NotAnInceptionBlock(f"{cls.__name__}.from_module: {reason}")
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        for name, child in block.named_children():
            self.add_module(name, child)
        self.__dict__.update(state)
        self.train(block.training)
        self._setup(backend)
        self.__dict__["_source_block"] = block  # what unconvert gives back; not a submodule
        return self

    def _setup(self, backend: str) -> None:
        self.backend = _check_backend(backend, "backend")
        self._binding = bind(self)
        if self._binding.error is not None:
            raise self._binding.error
        # (key, packed weights, the tensors and binding the key names): swapped as one tuple so that
        # concurrent forwards see a consistent entry. Holding them keeps their ids from being reused.
        self._packed_cache: tuple | None = None
        self._warned_bypass = False
        self.last_backend = None

    @property
    def _parts(self):
        """The block's units as its structure is now (parsed again after a submodule changed)."""
        b = self._binding
        if b.owner is not self or fingerprint(*b.watch) != b.snapshot:
            b = self._binding = bind(self)
        if b.error is not None:
            raise NotAnInceptionBlock(f"{type(self).__name__}: a submodule was changed and the block no longer "
                                      f"fits the fused kernel: {b.error}")
        return b.parts

    @property
    def graph(self) -> BlockGraph:
        """The block's ``BlockGraph``: its wiring, with the units' current settings."""
        return self._parts.graph

    def __prepare_scriptable__(self):
        raise RuntimeError(_NO_TORCHSCRIPT)

    # -- input checks and backend choice ---------------------------------------------------------
    def _check_input(self, x: object, parts) -> None:
        """The op's input checks (the reference path does not reach the op), then what only the
        module knows: its parameters' device and dtype."""
        check_input(x, parts.graph.in_channels, type(self).__name__)
        w = parts.units[0].conv.weight
        if w.device != x.device:
            raise ValueError(f"input is on {x.device} but the block's parameters are on {w.device}")
        if w.dtype != x.dtype and _autocast_dtype(x) is None:
            raise TypeError(f"input dtype {x.dtype} does not match the block's parameter dtype {w.dtype}; "
                            "convert the block (e.g. .half()) or run under torch.autocast")

    def _only_reference_is_exact(self, requested: str) -> bool:
        """Whether only the reference path gives PyTorch's semantics now: BatchNorm in training
        mode (batch statistics), or submodule hooks/parametrizations the kernel would skip.
        Checked each forward, so cheap lookups only (``_parts`` catches structural changes)."""
        b = self._binding
        if any(bn.training for bn in b.batch_norms):
            return True
        if b.parametrized or any(b.hooks):
            reason = fusion_bypasses(self)
            if reason is not None:
                if requested in ("triton", "cuda"):
                    raise RuntimeError(f"FusedInception(backend={requested!r}): {reason}; remove them, or use "
                                       "backend='auto' or 'reference', which run the submodules")
                if not self._warned_bypass:
                    self._warned_bypass = True
                    warnings.warn(f"FusedInception runs its reference path (last_backend='reference'): {reason}",
                                  RuntimeWarning, stacklevel=4)
                return True
        return False

    def _choose_backend(self, x: torch.Tensor) -> str:
        requested = self.backend
        if requested == "auto":
            requested = _check_backend(os.environ.get(ENV_BACKEND) or "auto", ENV_BACKEND)
        if x.device.type == "meta" or self._only_reference_is_exact(requested):
            return "reference"
        if not torch.compiler.is_compiling() and _functorch_active():
            # PyTorch cannot run custom ops with registered autograd under torch.func transforms.
            if requested in ("triton", "cuda"):
                raise RuntimeError(f"backend={requested!r} cannot run inside a torch.func transform "
                                   "(grad, vmap, jacrev, ...); use backend='auto' or 'reference'")
            return "reference"
        if requested == "auto":
            if x.dtype not in FUSED_DTYPES:
                return "reference"
            # "auto" never picks the CUDA extension: no measurement shows it faster anywhere.
            if (x.is_cuda and triton_available()) or (x.device.type == "cpu" and interpreting()):
                return "triton"
            return "reference"
        if requested in ("triton", "cuda"):
            if x.dtype not in FUSED_DTYPES:
                raise TypeError(f"backend={requested!r} takes float16, bfloat16 or float32 input, got {x.dtype}")
            if requested == "triton":
                require_triton()
            if requested == "triton" and not (x.is_cuda or (x.device.type == "cpu" and interpreting())):
                raise RuntimeError(f"backend='triton' needs a CUDA tensor (got one on {x.device}); for CPU "
                                   "tensors set TRITON_INTERPRET=1 before importing fused_inception")
            if requested == "cuda" and not self._HAS_CUDA_EXT:
                raise RuntimeError(f"backend='cuda': the CUDA extension computes GoogLeNet's block only, not a "
                                   f"{self._parts.graph.kind!r} block; use 'triton', 'auto' or 'reference'")
            if requested == "cuda" and not x.is_cuda:
                raise RuntimeError(f"backend='cuda' needs a CUDA tensor, got one on {x.device}")
            if requested == "cuda" and not torch.compiler.is_compiling():
                cuda_ext.load()  # imports or builds on first use; a failure names torch/CUDA/compiler versions
        return requested

    # -- weights ---------------------------------------------------------------------------------
    def _live(self) -> list:
        """Every tensor the packed weights are folded from, as it is now. Read from the
        modules' parameter and buffer tables: an ``nn.Module`` attribute lookup costs about a
        microsecond, and this runs every forward."""
        return [table.get(name) for table, name in self._binding.tables]

    def _state_key(self, live: list, dtype: torch.dtype) -> tuple:
        """Identifies the values of the ``live`` tensors: identity, version and storage of each,
        the optimizer-step generation for writes that bump no version (``_GENERATION``), and the
        binding (a new one after any structural change). The cache entry holds all of them, so no
        id in the key can be reused while the entry lives."""
        key: list = [dtype, _GENERATION[0], id(self._binding)]
        for v in live:
            key += (id(v), v._version, v.data_ptr()) if v is not None else (None,)
        return tuple(key)

    def packed_weights(self, dtype: torch.dtype):
        """Folded, GEMM-laid-out weights for ``dtype`` (no autograd graph), cached until any
        parameter or buffer may have changed (README, "Caching")."""
        if dtype not in _PACK_DTYPES:
            raise TypeError(f"packed_weights: dtype must be one of {_PACK_DTYPES}, got {dtype}")
        return self._cached_pack(self._parts, self._live(), dtype)

    def _cached_pack(self, parts, live: list, dtype: torch.dtype):
        key = self._state_key(live, dtype)
        cache = self._packed_cache  # read once: another thread may swap it
        if cache is not None and cache[0] == key:
            return cache[1]
        with torch.inference_mode(False):  # normal tensors, usable by autograd after inference_mode
            packed = self._pack(parts, dtype, differentiable=False)
        self._packed_cache = (key, packed, live, self._binding)
        return packed

    def _packed_for_forward(self, parts, dtype: torch.dtype):
        """Folded weights for this forward. When autograd must reach the parameters (grad mode on
        and one of them requires grad), or under ``torch.compile``, they are folded from the live
        tensors on every call, differentiably: no cache can then go stale, and the gradients of the
        packed weights flow straight to the conv and BatchNorm parameters."""
        if torch.compiler.is_compiling():
            return self._pack(parts, dtype, differentiable=True)
        live = self._live()
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in live):
            return self._pack(parts, dtype, differentiable=True)
        return self._cached_pack(parts, live, dtype)

    # -- forward ---------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing() or torch.jit.is_scripting():
            raise RuntimeError(_NO_TORCHSCRIPT)
        parts = self._parts
        self._check_input(x, parts)
        cast = _autocast_dtype(x)
        if cast is not None:
            x = x.to(cast)  # what nn.Conv2d does under autocast
        backend = self._choose_backend(x)
        if backend == "reference":
            out = self._reference(x, parts).contiguous(memory_format=conv_memory_format(x))
        else:
            # The registered op's autograd gives the gradients of x and of the packed weights
            # (backward recomputes the block from x: no intermediate map is saved); the
            # differentiable folding carries them on to the parameters.
            out = self._fused(x, parts, self._packed_for_forward(parts, x.dtype), backend)
        self.last_backend = backend
        return out


class FusedInception(FusedModule):
    """An Inception block (GoogLeNet) computed in one kernel launch.

    Positional arguments are torchvision's ``Inception``'s. The defaults build torchvision's block
    (conv without bias + BatchNorm(eps=1e-3) + ReLU, "5x5" branch with a 3x3 kernel); the keywords
    select other variants, e.g. the paper's block is ``k5=5, bias=True, batch_norm=False``.
    Parameter and buffer names are those of the mirrored block, so ``state_dict``s load both ways.

    ``backend``: ``"auto"`` (fastest available for the input's device; overridden by the
    ``FUSED_INCEPTION_BACKEND`` environment variable), ``"reference"`` (the branches' own
    forwards, then ``torch.cat``), ``"triton"`` or ``"cuda"``. After each forward
    ``last_backend`` names the backend that actually ran. "auto" runs the reference path whenever
    the fused one cannot give PyTorch's semantics: BatchNorm in training mode (batch statistics),
    inside ``torch.func`` transforms, on the meta device, and when a submodule carries hooks or a
    parametrization (which a fused forward would skip; an explicit fused backend raises instead).

    Every forward computes with the parameters and buffers as they are now (README, "Caching").
    Submodules may be replaced after construction: the next forward parses the block again and
    uses the new structure, or raises ``NotAnInceptionBlock`` if it no longer fits.
    """

    _HAS_CUDA_EXT = True

    def __init__(self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int,
                 ch5x5: int, pool_proj: int, *, k3: int = 3, k5: int = 3, bias: bool = False,
                 batch_norm: bool = True, bn_eps: float = 1e-3, relu: bool = True,
                 backend: str = "auto", device=None, dtype=None) -> None:
        super().__init__()
        spec = InceptionSpec(in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj,
                             k3=k3, k5=k5, bias=bias, batch_norm=batch_norm, bn_eps=bn_eps, relu=relu)
        for name, branch in build_branches(spec, device, dtype).items():
            self.add_module(name, branch)
        self._setup(backend)

    @classmethod
    def from_spec(cls, spec: InceptionSpec, *, backend: str = "auto", device=None, dtype=None) -> FusedInception:
        return cls(*spec.channels, k3=spec.k3, k5=spec.k5, bias=spec.bias, batch_norm=spec.batch_norm,
                   bn_eps=spec.bn_eps, relu=spec.relu, backend=backend, device=device, dtype=dtype)

    @classmethod
    def from_module(cls, block: nn.Module, *, backend: str = "auto", verify: bool = True) -> FusedInception:
        """A fused block that takes over ``block``'s branches (the same modules: parameters,
        buffers, dtype, device and train/eval mode are shared, not copied).

        With ``verify=True`` (the default) ``block``'s own forward is first checked, on a float64
        probe copy with fresh random weights, in training and in eval mode, to compute the Inception
        block its structure describes (``convert``'s check). ``verify=False`` skips that check: the
        fused block then computes what the structure describes whatever ``block.forward`` did, so
        a different concat order, an activation other than ReLU inside a unit-style module or extra
        operations in ``forward`` are silently lost.

        Raises ``NotAnInceptionBlock`` (a ``ValueError``) naming the part that does not fit, or the
        way the forward differs; ``ValueError`` when a submodule carries hooks or parametrizations
        the fused kernel would bypass.
        """
        parse_inception(block)
        return cls._take_over(block, backend, verify)

    @property
    def spec(self) -> InceptionSpec:
        return self._parts.spec

    def extra_repr(self) -> str:
        s = self.spec
        return (f"{s.in_channels} -> {s.out_channels} (1x1 {s.ch1x1}, {s.k3}x{s.k3} {s.ch3x3red}->{s.ch3x3}, "
                f"{s.k5}x{s.k5} {s.ch5x5red}->{s.ch5x5}, pool {s.pool_proj}), bias={s.bias}, "
                f"batch_norm={s.batch_norm}, relu={s.relu}, backend={self.backend!r}")

    def _parse(self) -> InceptionParts:
        return parse_inception(self)

    def _pack(self, parts: InceptionParts, dtype: torch.dtype, differentiable: bool) -> PackedWeights:
        return (pack_weights_differentiable if differentiable else pack_weights)(parts.tensors(), dtype)

    def _fused(self, x: torch.Tensor, parts: InceptionParts, packed: PackedWeights, backend: str) -> torch.Tensor:
        spec = parts.spec
        return inception_forward(x, *packed, list(spec.channels), spec.k3, spec.k5, spec.relu, backend)

    def _reference(self, x: torch.Tensor, parts: InceptionParts) -> torch.Tensor:
        """The branches' own forwards (hooks, parametrizations and BatchNorm's batch statistics
        and running-stat updates included), concatenated in order."""
        return torch.cat([branch(x) for branch in self._modules.values()], 1)
