"""FLOP and byte counting of a block or a network, and the roofline floor they give.

One code path for every block: a GoogLeNet ``InceptionSpec`` and an Inception-v3 ``BlockGraph``
are both counted from their ``BlockGraph`` (``block_graph``), whose convs' shapes give the work
(``graph.macs``) and whose output map (smaller after a stride-2 block) gives the bytes written.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
from torch import nn


def block_graph(block):
    """The ``BlockGraph`` of ``block``: a ``BlockGraph`` itself, an ``InceptionSpec`` (its
    ``.graph``), or a block module (``FusedInception``/``ReferenceInception``: ``.spec``;
    ``FusedBlock``/``ReferenceBlock``: ``.graph``)."""
    if hasattr(block, "nodes") and hasattr(block, "macs"):
        return block
    spec = getattr(block, "spec", None)
    return (spec if spec is not None else block).graph


def block_flops(block, n: int, h: int, w: int) -> int:
    """2 x the convs' multiply-accumulates (``BlockGraph.macs``) for an (n, C, h, w) input; pools,
    biases and ReLU excluded. GoogLeNet: 2*N*H*W*(Cin*(C1+C3r+C5r+Cp) + K3^2*C3r*C3 + K5^2*C5r*C5)."""
    return 2 * block_graph(block).macs(n, h, w)


def block_weight_elements(block) -> int:
    return block_graph(block).weight_count


def block_bias_elements(block) -> int:
    """One (BN-folded) bias per output channel of every conv."""
    g = block_graph(block)
    return sum(g.nodes[i].cout for i in g.convs)


def block_min_bytes(block, n: int, h: int, w: int, elem: int, bias_elem: int = 4) -> dict[str, int]:
    """Fewest bytes one forward must move through device memory: the input read once, the output
    (its own map size: smaller after a stride-2 block) written once, the (BN-folded) weights read
    once in the compute dtype and the biases in fp32 (as the packed weights hold them).
    Intermediate maps are not counted: a fused kernel need not store them."""
    g = block_graph(block)
    ho, wo = g.out_size(h, w)
    parts = {
        "input": n * g.in_channels * h * w * elem,
        "output": n * g.out_channels * ho * wo * elem,
        "weights": g.weight_count * elem,
        "biases": block_bias_elements(g) * bias_elem,
    }
    parts["total"] = sum(parts.values())
    return parts


def network_min_bytes(counts: dict[str, int], x_shape: tuple[int, ...], elem: int) -> dict[str, int]:
    """A whole network's fewest bytes per forward of an ``x_shape`` input, from ``model_counts``
    of one image: the input read once, the output written once, the weights of the layers that
    run read once, all in the compute dtype. Every intermediate map is left out (any
    implementation might fuse them away): a lower bound."""
    n = x_shape[0]
    parts = {"input": int(torch.Size(x_shape).numel()) * elem, "output": n * counts["output"] * elem,
             "weights": counts["weights"] * elem}
    parts["total"] = sum(parts.values())
    return parts


def roofline_floor_s(flops: float, nbytes: float, peak_flops: float, peak_bytes_per_s: float) -> tuple[float, str]:
    """The larger of compute time and memory time at the measured ceilings, and which bound it is."""
    t_compute = flops / peak_flops
    t_memory = nbytes / peak_bytes_per_s
    return (t_compute, "compute") if t_compute >= t_memory else (t_memory, "memory")


def fused_block_types() -> tuple[type, ...]:
    """The fused block classes (``FusedModule``: ``FusedInception`` and ``FusedBlock``), once the
    package is imported (the scripts import it only after choosing CUDA or the interpreter)."""
    mod = sys.modules.get("fused_inception.module")
    return (mod.FusedModule,) if mod is not None else ()


def model_counts(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """One forward of ``model`` on ``x``, counted with forward hooks: ``flops`` (2 per
    multiply-accumulate of every Conv2d and Linear; a fused block by ``block_flops``; pooling, BN,
    ReLU excluded), ``weights`` (parameter elements of the modules that ran, each once: a layer
    the forward skips, such as FID Inception's unused classifier, is not counted) and ``output``
    (elements of the result)."""
    counts = {"flops": 0, "weights": 0}
    handles, seen = [], set()

    def hook(flops: Callable[[nn.Module, tuple, torch.Tensor], int]):
        def count(m, inp, out):
            counts["flops"] += flops(m, inp, out)
            if id(m) not in seen:
                seen.add(id(m))
                counts["weights"] += sum(p.numel() for p in m.parameters())
        return count

    conv = hook(lambda m, inp, out: 2 * out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1])
    linear = hook(lambda m, inp, out: 2 * out.numel() * m.in_features)
    block = hook(lambda m, inp, out: block_flops(m, inp[0].shape[0], *inp[0].shape[2:]))
    fused = [m for m in model.modules() if isinstance(m, fused_block_types())]
    handles += [m.register_forward_hook(block) for m in fused]
    inside = {id(c) for m in fused for c in m.modules()}
    for m in model.modules():
        if id(m) not in inside and isinstance(m, (nn.Conv2d, nn.Linear)):
            handles.append(m.register_forward_hook(conv if isinstance(m, nn.Conv2d) else linear))
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    return {**counts, "output": out.numel()}


def model_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward (``model_counts``)."""
    return model_counts(model, x)["flops"]
