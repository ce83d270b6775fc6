"""Weight preparation for the fused kernels: BatchNorm folding and GEMM-friendly layouts.

One fold, differentiable and traceable: grad-enabled and compiled forwards run it every call, and
inference forwards run it under ``no_grad`` and cache the result (``FusedInception``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .graph import BlockGraph
from .reference import block_reference, conv_unit
from .spec import InceptionSpec, UnitTensors

__all__ = ["PackedWeights", "graph_offsets", "graph_packed_reference", "pack_graph", "pack_graph_differentiable",
           "pack_weights", "pack_weights_differentiable", "packed_reference", "unpack_graph"]


class PackedWeights(NamedTuple):
    """Folded weights in the layout both fused backends read.

    ``w_in``: [Cin, C1 + C3red + C5red], the three 1x1 convs that read ``x`` side by side.
    ``w3``/``w5``: [K*K, Cred, Cout] (tap-major). ``wp``: [Cin, pool_proj]. Biases are fp32.
    """

    w_in: torch.Tensor
    b_in: torch.Tensor
    w3: torch.Tensor
    b3: torch.Tensor
    w5: torch.Tensor
    b5: torch.Tensor
    wp: torch.Tensor
    bp: torch.Tensor


def _fold(u: UnitTensors, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of one unit with its BatchNorm folded in, in fp32 (fp64 for a float64
    target), differentiable in every tensor.

    The arithmetic of ``torch.nn.utils.fusion.fuse_conv_bn_weights`` in the same order (the same
    bits in eager), written out because that function returns new leaf ``nn.Parameter``s, which cut
    the autograd graph and which Dynamo will not construct.
    """
    fdt = torch.float64 if dtype == torch.float64 else torch.float32
    w = u.weight.to(fdt)
    b = u.bias.to(fdt) if u.bias is not None else None
    if u.has_bn:
        mean = u.bn_mean.to(fdt)
        if b is None:
            b = torch.zeros_like(mean)
        bn_w = u.bn_weight.to(fdt) if u.bn_weight is not None else torch.ones_like(mean)
        bn_b = u.bn_bias.to(fdt) if u.bn_bias is not None else torch.zeros_like(mean)
        rsqrt = torch.rsqrt(u.bn_var.to(fdt) + u.bn_eps)
        w = w * (bn_w * rsqrt).reshape(-1, 1, 1, 1)
        b = (b - mean) * rsqrt * bn_w + bn_b
    if b is None:
        b = w.new_zeros(w.shape[0])
    return w, b


def _layout(folded: list[tuple[torch.Tensor, torch.Tensor]], dtype: torch.dtype) -> PackedWeights:
    (w1, b1), (wr3, br3), (w3, b3), (wr5, br5), (w5, b5), (wp, bp) = folded

    def gemm(w: torch.Tensor) -> torch.Tensor:  # [Cout, Cin, K, K] -> [K*K, Cin, Cout]
        k = w.shape[-1]
        return w.permute(2, 3, 1, 0).reshape(k * k, w.shape[1], w.shape[0]).to(dtype).contiguous()

    w_in = torch.cat([gemm(w1)[0], gemm(wr3)[0], gemm(wr5)[0]], 1).contiguous()
    return PackedWeights(w_in, torch.cat([b1, br3, br5]).contiguous(), gemm(w3), b3.contiguous(),
                         gemm(w5), b5.contiguous(), gemm(wp)[0].contiguous(), bp.contiguous())


def pack_weights_differentiable(units: tuple[UnitTensors, ...], dtype: torch.dtype) -> PackedWeights:
    """Fold and lay out the six units (1x1, 3x3red, 3x3, 5x5red, 5x5, pool-proj) for ``dtype``,
    differentiably: the packing of grad-enabled forwards and of ``torch.compile`` graphs."""
    return _layout([_fold(u, dtype) for u in units], dtype)


@torch.no_grad()
def pack_weights(units: tuple[UnitTensors, ...], dtype: torch.dtype) -> PackedWeights:
    """The same packing without an autograd graph: what the inference cache holds."""
    return pack_weights_differentiable(units, dtype)


def _unpack(w: torch.Tensor) -> torch.Tensor:  # [K*K, Cin, Cout] -> [Cout, Cin, K, K]
    k = int(round(w.shape[0] ** 0.5))
    return w.reshape(k, k, w.shape[1], w.shape[2]).permute(3, 2, 0, 1)


def packed_reference(x: torch.Tensor, p: PackedWeights, spec: InceptionSpec,
                     compute_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``reference.block_reference`` from packed weights.

    By default in fp32 for half inputs with the reduce maps rounded to the input dtype, as the
    kernels do: the op's ``impl="reference"`` and the check that packing is right.
    ``compute_dtype=x.dtype`` gives what unfused layers would compute (e.g. under autocast);
    differentiable in ``x`` and every packed tensor, it is the op's backward.
    """
    cdt = compute_dtype or (torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype)
    c1, c3r = spec.ch1x1, spec.ch3x3red
    w_in = _unpack(p.w_in.unsqueeze(0)).to(cdt)
    b_in = p.b_in.to(cdt)
    reduce_cols = (slice(0, c1), slice(c1, c1 + c3r), slice(c1 + c3r, None))
    (w1, b1), (wr3, br3), (wr5, br5) = ((w_in[s], b_in[s]) for s in reduce_cols)
    graph = spec.graph
    convs = dict(zip(graph.convs, [(w1, b1), (wr3, br3), (_unpack(p.w3).to(cdt), p.b3.to(cdt)), (wr5, br5),
                                   (_unpack(p.w5).to(cdt), p.b5.to(cdt)),
                                   (_unpack(p.wp.unsqueeze(0)).to(cdt), p.bp.to(cdt))]))
    out = block_reference(x.to(cdt), graph, lambda i, t: conv_unit(t, graph.nodes[i], *convs[i]),
                          hold=lambda t: t.to(x.dtype).to(cdt)).to(x.dtype)
    return out.contiguous(memory_format=conv_memory_format(x))


def conv_memory_format(x: torch.Tensor) -> torch.memory_format:
    """The output layout of every backend: channels_last when the input's channel stride is the
    smallest (smaller than both spatial strides), as ``nn.Conv2d`` on CUDA decides; otherwise
    contiguous. A channels_last input sliced in H or W thus stays channels_last."""
    if x.dim() == 4 and x.stride(1) < x.stride(2) and x.stride(1) < x.stride(3):
        return torch.channels_last
    return torch.contiguous_format


# -- any block graph -----------------------------------------------------------------------------
# The graph kernel reads every conv's folded weight from one flat tensor in the input dtype, conv
# nodes in node order, each as [kh, kw, cin, cout] (row tap * cin + c, column = output channel:
# the implicit GEMM's B), and every bias from one flat fp32 tensor: one pointer each, however many
# convs the block has, and one cached pair per dtype.
def graph_offsets(graph: BlockGraph) -> tuple[tuple[int, int], ...]:
    """(weight offset, bias offset) in elements of each conv node, in ``graph.convs`` order; the
    last pair is the two totals."""
    out, w_off, b_off = [], 0, 0
    for i in graph.convs:
        node = graph.nodes[i]
        out.append((w_off, b_off))
        w_off += node.taps * node.cin * node.cout
        b_off += node.cout
    return (*out, (w_off, b_off))


def pack_graph_differentiable(graph: BlockGraph, units: tuple[UnitTensors, ...],
                              dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The flat (weight, bias) of ``graph``'s conv nodes (``units`` in ``graph.convs`` order),
    BatchNorm folded, differentiably."""
    ws, bs = [], []
    for u in units:
        w, b = _fold(u, dtype)
        ws.append(w.permute(2, 3, 1, 0).to(dtype).reshape(-1))
        bs.append(b)
    bias_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    return torch.cat(ws), torch.cat(bs).to(bias_dtype)


@torch.no_grad()
def pack_graph(graph: BlockGraph, units: tuple[UnitTensors, ...],
               dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The same packing without an autograd graph: what the inference cache holds."""
    return pack_graph_differentiable(graph, units, dtype)


def unpack_graph(graph: BlockGraph, weight: torch.Tensor,
                 bias: torch.Tensor) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Conv node index -> (weight [cout, cin, kh, kw], bias) as views of the flat tensors."""
    offs = graph_offsets(graph)
    out = {}
    for i, (w0, b0) in zip(graph.convs, offs):
        n = graph.nodes[i]
        w = weight[w0:w0 + n.taps * n.cin * n.cout].reshape(*n.kernel, n.cin, n.cout).permute(3, 2, 0, 1)
        out[i] = (w, bias[b0:b0 + n.cout])
    return out


def graph_packed_reference(x: torch.Tensor, graph: BlockGraph, weight: torch.Tensor, bias: torch.Tensor,
                           compute_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``reference.block_reference`` from the flat packed tensors, with ``packed_reference``'s
    precision rules: the graph op's ``impl="reference"`` and (``compute_dtype=x.dtype``) its backward."""
    cdt = compute_dtype or (torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype)
    convs = {i: (w.to(cdt), b.to(cdt)) for i, (w, b) in unpack_graph(graph, weight, bias).items()}
    out = block_reference(x.to(cdt), graph, lambda i, t: conv_unit(t, graph.nodes[i], *convs[i]),
                          hold=lambda t: t.to(x.dtype).to(cdt)).to(x.dtype)
    return out.contiguous(memory_format=conv_memory_format(x))
