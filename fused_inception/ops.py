"""The fused forward as a ``torch.library`` operator: fake implementation, autograd, checks.

``fused_inception::inception_forward(x, w_in, b_in, w3, b3, w5, b5, wp, bp, channels, k3, k5,
relu, impl)`` computes the Inception block from packed weights (see ``packing.PackedWeights``).
``impl`` names the implementation:

* ``"triton"``: the one-launch Triton kernel: on CUDA tensors, or on CPU tensors in Triton's
  interpreter (``TRITON_INTERPRET=1`` when fused_inception was imported). Anywhere else it raises a
  ``RuntimeError`` that says so: the op never runs PyTorch ops under a kernel's name.
* ``"cuda"``: the CUDA extension, on CUDA tensors only.
* ``"reference"``: ``packed_reference`` on any device and dtype (float64 included): the
  operator's semantics in PyTorch ops, used to check the autograd formula with ``gradcheck``.

Why ``custom_op`` and not ``torch.library.triton_op`` + ``wrap_triton``: ``triton_op`` lets
Inductor see the Triton kernel itself, but (1) its body must be traceable with fake tensors, which
fails for our CPU paths: with ``TRITON_INTERPRET=1`` the kernel is an interpreter function that
``wrap_triton`` does not recognise, so ``torch.compile`` traces into it and touches a FakeTensor's
data pointer (tried with torch 2.13 / triton 3.6), and the ``packed_reference`` and CUDA-extension
implementations are not Triton kernels at all; (2) the launcher's host logic (tile choice, grid,
workspace and launch state) would have to be traced too. An opaque ``custom_op`` has one dispatch path for all
four implementations and is treated by Inductor as an extern kernel, which is what one launch
wants anyway. The per-call cost of the two at batch 1 still has to be measured on a GPU.

Autograd: the backward recomputes the block with PyTorch ops from ``x`` and the packed weights
(``torch.func.vjp`` of the same function), so the only activation saved is ``x``; gradients are
returned for ``x`` and the packed tensors. ``FusedInception`` carries them on to the module's own
parameters (conv weights and biases, BatchNorm affine parameters) through the differentiable
folding in ``module.py``.
"""

from __future__ import annotations

import functools
import threading

import torch

from .graph import BlockGraph
from .kernels import interpreting, require_triton
from .packing import PackedWeights, conv_memory_format, graph_offsets, graph_packed_reference, packed_reference
from .spec import InceptionSpec

__all__ = ["block_forward", "inception_forward", "IMPLS", "GRAPH_IMPLS", "check_input"]

IMPLS = ("triton", "cuda", "reference")

# Triton's interpreter patches triton.language globally while a kernel runs, so two threads in it at
# once crash: serialise the CPU (interpreter) launches. GPU launches need no lock.
_INTERPRETER_LOCK = threading.Lock()


def _spec(channels: list[int], k3: int, k5: int, relu: bool) -> InceptionSpec:
    return InceptionSpec(*channels, k3=k3, k5=k5, relu=relu)


def _triton_forward(x: torch.Tensor, packed: PackedWeights, spec: InceptionSpec) -> torch.Tensor:
    require_triton()
    # Imported here, not at the top: the package must import where Triton is absent.
    from .kernels.triton_inception import inception_forward_triton
    from .kernels.tuning import pick_config

    return inception_forward_triton(x, packed, spec, pick_config(x, packed, spec))


def check_input(x: object, in_channels: int, who: str) -> None:
    """The block's input checks, in one place: the op's and the module's (whose reference path
    never reaches the op). Cheap: no host sync."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{who} expects a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{who} expects a 4-D input (N, C, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{who} expects a floating-point input (float16, bfloat16, float32 or float64), "
                        f"got {x.dtype}")
    if x.shape[1] != in_channels:
        raise ValueError(f"{who} expects {in_channels} input channels, got {x.shape[1]} (input shape "
                         f"{tuple(x.shape)})")
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"{who} expects H and W >= 1, got input shape {tuple(x.shape)}")


def _check_args(x: torch.Tensor, packed: tuple[torch.Tensor, ...], channels: list[int], k3: int,
                k5: int, impl: str) -> None:
    """The operator's argument checks, shared by its fake implementation."""
    if impl not in IMPLS:
        raise ValueError(f"fused_inception::inception_forward: impl must be one of {IMPLS}, got {impl!r}")
    if len(channels) != 7:
        raise ValueError(f"fused_inception::inception_forward: channels must hold 7 ints, got {channels}")
    cin, c1, c3r, c3, c5r, c5, cp = channels
    check_input(x, cin, "fused_inception::inception_forward")
    expected = ((cin, c1 + c3r + c5r), (c1 + c3r + c5r,), (k3 * k3, c3r, c3), (c3,),
                (k5 * k5, c5r, c5), (c5,), (cin, cp), (cp,))
    for name, t, shape in zip(PackedWeights._fields, packed, expected):
        if tuple(t.shape) != shape:
            raise ValueError(f"fused_inception::inception_forward: packed {name} has shape "
                             f"{tuple(t.shape)}, expected {shape} for channels={channels}, k3={k3}, k5={k5}")
        if t.device != x.device:
            raise ValueError(f"fused_inception::inception_forward: packed {name} is on {t.device}, "
                             f"x on {x.device}")
        is_bias = name.startswith("b")
        if t.dtype != x.dtype and not (is_bias and t.dtype == torch.float32):
            want = f"{x.dtype} or torch.float32" if is_bias else f"{x.dtype}"
            raise TypeError(f"fused_inception::inception_forward: packed {name} is {t.dtype}, expected {want}")


@torch.library.custom_op("fused_inception::inception_forward", mutates_args=())
def inception_forward(x: torch.Tensor, w_in: torch.Tensor, b_in: torch.Tensor, w3: torch.Tensor,
                      b3: torch.Tensor, w5: torch.Tensor, b5: torch.Tensor, wp: torch.Tensor,
                      bp: torch.Tensor, channels: list[int], k3: int, k5: int, relu: bool,
                      impl: str) -> torch.Tensor:
    packed = PackedWeights(w_in, b_in, w3, b3, w5, b5, wp, bp)
    _check_args(x, packed, channels, k3, k5, impl)
    spec = _spec(channels, k3, k5, relu)
    if impl == "reference":
        return packed_reference(x, packed, spec)
    if x.device.type == "cpu" and impl == "triton" and interpreting():
        with _INTERPRETER_LOCK:
            return _triton_forward(x, packed, spec)
    if x.device.type != "cuda":
        where = ("set TRITON_INTERPRET=1 before importing fused_inception to run the kernel in Triton's "
                 "interpreter, or " if impl == "triton" and x.device.type == "cpu" else "")
        raise RuntimeError(f"fused_inception::inception_forward: impl={impl!r} runs on CUDA tensors, got one on "
                           f"{x.device}; {where}use impl='reference'")
    # Triton and the extension launch on the *current* device's current stream: make that x's device.
    with torch.cuda.device(x.device):
        if impl == "cuda":
            from .cuda_ext import inception_forward_cuda
            return inception_forward_cuda(x, packed, spec)
        return _triton_forward(x, packed, spec)


@inception_forward.register_fake
def _(x, w_in, b_in, w3, b3, w5, b5, wp, bp, channels, k3, k5, relu, impl):
    _check_args(x, (w_in, b_in, w3, b3, w5, b5, wp, bp), channels, k3, k5, impl)
    n, _, h, w = x.shape
    cout = channels[1] + channels[3] + channels[5] + channels[6]
    return torch.empty((n, cout, h, w), dtype=x.dtype, device=x.device,
                       memory_format=conv_memory_format(x))


# -- autograd ------------------------------------------------------------------------------------
def _setup_context(ctx, inputs, output) -> None:
    x, *packed = inputs[:9]
    ctx.save_for_backward(x, *packed)  # x is the only activation kept; the rest are weights
    ctx.config = inputs[9:13]  # channels, k3, k5, relu


def _recompute_grads(ctx, grad_out, n: int, block) -> list[torch.Tensor | None]:
    """The gradients of the first ``n`` inputs that need one, by ``torch.func.vjp`` of
    ``block(*saved)``: the block is recomputed with PyTorch ops from x and the packed weights."""
    saved = ctx.saved_tensors
    wanted = [i for i in range(n) if ctx.needs_input_grad[i]]
    grads: list[torch.Tensor | None] = [None] * n
    if wanted:
        def partial(*primals):
            args = list(saved)
            for i, t in zip(wanted, primals):
                args[i] = t
            return block(*args)

        _, vjp_fn = torch.func.vjp(partial, *(saved[i] for i in wanted))
        for i, g in zip(wanted, vjp_fn(grad_out)):
            grads[i] = g
    return grads


def _backward(ctx, grad_out):
    channels, k3, k5, relu = ctx.config
    spec = _spec(channels, k3, k5, relu)
    grads = _recompute_grads(ctx, grad_out, 9, lambda x, *packed: packed_reference(
        x, PackedWeights(*packed), spec, compute_dtype=x.dtype))
    return (*grads, None, None, None, None, None)


inception_forward.register_autograd(_backward, setup_context=_setup_context)


# -- any block graph (Inception-v3 and pytorch-fid's blocks) ---------------------------------------
# ``fused_inception::block_forward(x, weight, bias, graph, impl)``: the block ``BlockGraph.decode(graph)``
# from the flat packed tensors of ``packing.pack_graph``. The graph travels as a list of ints, so
# the fake implementation knows the output's channels and its (strided) size. The CUDA extension
# computes GoogLeNet's block only: ``impl`` is "triton" or "reference".
GRAPH_IMPLS = ("triton", "reference")
_OP = "fused_inception::block_forward"


@functools.lru_cache(maxsize=256)
def _decode(code: tuple[int, ...]) -> BlockGraph:
    """``BlockGraph.decode``, once per graph: decoding and validating takes ~50 us, as long as a
    batch-1 block's kernel, and every forward passes the graph again. One object per graph also
    keeps the launcher's schedule cache (keyed on the graph) hitting."""
    return BlockGraph.decode(list(code))


def _check_graph_args(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, code: list[int],
                      impl: str) -> tuple[BlockGraph, tuple[int, int]]:
    """The graph operator's argument checks, shared by its fake implementation; returns the graph
    and the output's (H, W)."""
    if impl not in GRAPH_IMPLS:
        raise ValueError(f"{_OP}: impl must be one of {GRAPH_IMPLS} (the CUDA extension computes GoogLeNet's "
                         f"block only), got {impl!r}")
    graph = _decode(tuple(code))
    check_input(x, graph.in_channels, _OP)
    size = graph.out_size(x.shape[2], x.shape[3])
    n_w, n_b = graph_offsets(graph)[-1]
    bias_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    for name, t, numel, dtype in (("weight", weight, n_w, x.dtype), ("bias", bias, n_b, bias_dtype)):
        if t.dim() != 1 or t.numel() != numel:
            raise ValueError(f"{_OP}: {name} must be flat with {numel} elements for this graph, got shape "
                             f"{tuple(t.shape)}")
        if t.dtype != dtype:
            raise TypeError(f"{_OP}: {name} is {t.dtype}, expected {dtype}")
        if t.device != x.device:
            raise ValueError(f"{_OP}: {name} is on {t.device}, x on {x.device}")
    return graph, size


def _graph_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, graph: BlockGraph) -> torch.Tensor:
    require_triton()
    from .kernels.triton_graph import block_forward_triton

    return block_forward_triton(x, weight, bias, graph)


@torch.library.custom_op(_OP, mutates_args=())
def block_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, graph: list[int],
                  impl: str) -> torch.Tensor:
    g, _ = _check_graph_args(x, weight, bias, graph, impl)
    if impl == "reference":
        return graph_packed_reference(x, g, weight, bias)
    if x.device.type == "cpu" and interpreting():
        with _INTERPRETER_LOCK:
            return _graph_triton(x, weight, bias, g)
    if x.device.type != "cuda":
        where = ("set TRITON_INTERPRET=1 before importing fused_inception to run the kernel in Triton's "
                 "interpreter, or " if x.device.type == "cpu" else "")
        raise RuntimeError(f"{_OP}: impl='triton' runs on CUDA tensors, got one on {x.device}; {where}"
                           "use impl='reference'")
    with torch.cuda.device(x.device):
        return _graph_triton(x, weight, bias, g)


@block_forward.register_fake
def _(x, weight, bias, graph, impl):
    g, (h, w) = _check_graph_args(x, weight, bias, graph, impl)
    return torch.empty((x.shape[0], g.out_channels, h, w), dtype=x.dtype, device=x.device,
                       memory_format=conv_memory_format(x))


def _graph_setup_context(ctx, inputs, output) -> None:
    x, weight, bias, graph, _ = inputs
    ctx.save_for_backward(x, weight, bias)  # x is the only activation kept
    ctx.graph = _decode(tuple(graph))


def _graph_backward(ctx, grad_out):
    grads = _recompute_grads(ctx, grad_out, 3, lambda x, weight, bias: graph_packed_reference(
        x, ctx.graph, weight, bias, compute_dtype=x.dtype))
    return (*grads, None, None)


block_forward.register_autograd(_graph_backward, setup_context=_graph_setup_context)
