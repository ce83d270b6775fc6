"""The Inception block in plain PyTorch.

``ReferenceInception`` builds either the paper's block or torchvision's (its ``state_dict`` keys
are exactly torchvision's ``Inception`` keys): the unfused block that ``fi.unconvert`` and the
benchmarks run. ``block_reference`` is the math of every block once, as a function of tensors and
the block's ``BlockGraph``: from raw units (``units_reference``, the converter's check that a fused
block computes what the original did), from packed weights (``packing``'s references: the ops'
reference implementations and backward) and from the modules themselves (the fused modules'
reference path, which runs their BatchNorm and hooks).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .graph import BlockGraph, Conv, Pool
from .spec import InceptionSpec, UnitTensors

__all__ = ["ConvUnit", "ReferenceBlock", "ReferenceInception", "block_reference", "build_branches", "conv_unit",
           "pool2d", "units_reference"]


class ConvUnit(nn.Module):
    """Conv2d [+ BatchNorm2d] [+ ReLU]; keys ``conv.*`` and ``bn.*`` like torchvision's BasicConv2d."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, *, bias: bool,
                 batch_norm: bool, bn_eps: float, relu: bool, stride=1, padding=None, device=None,
                 dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        ks = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        padding = tuple(k // 2 for k in ks) if padding is None else padding  # "same" at stride 1
        self.conv = nn.Conv2d(in_channels, out_channels, ks, stride=stride, padding=padding, bias=bias, **factory)
        self.bn = nn.BatchNorm2d(out_channels, eps=bn_eps, **factory) if batch_norm else None
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


def build_branches(spec: InceptionSpec, device=None, dtype=None) -> dict[str, nn.Module]:
    """The four branches of ``spec`` in torchvision's layout (``branch4.0`` is the max-pool)."""
    def unit(cin: int, cout: int, k: int) -> ConvUnit:
        return ConvUnit(cin, cout, k, bias=spec.bias, batch_norm=spec.batch_norm, bn_eps=spec.bn_eps,
                        relu=spec.relu, device=device, dtype=dtype)

    return {
        "branch1": unit(spec.in_channels, spec.ch1x1, 1),
        "branch2": nn.Sequential(unit(spec.in_channels, spec.ch3x3red, 1),
                                 unit(spec.ch3x3red, spec.ch3x3, spec.k3)),
        "branch3": nn.Sequential(unit(spec.in_channels, spec.ch5x5red, 1),
                                 unit(spec.ch5x5red, spec.ch5x5, spec.k5)),
        "branch4": nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                 unit(spec.in_channels, spec.pool_proj, 1)),
    }


class ReferenceInception(nn.Module):
    """The Inception block in plain PyTorch modules (one kernel per op, then ``torch.cat``)."""

    def __init__(self, spec: InceptionSpec, device=None, dtype=None) -> None:
        super().__init__()
        self.spec = spec
        for name, branch in build_branches(spec, device, dtype).items():
            self.add_module(name, branch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class ReferenceBlock(nn.Module):
    """Any ``BlockGraph`` in plain PyTorch: one ``ConvUnit`` per conv node, registered under the
    node's name (Inception-v3's and GoogLeNet's names give torchvision's ``state_dict`` keys), the
    pools and the concat as functional calls, like torchvision's Inception-v3 blocks."""

    def __init__(self, graph: BlockGraph, device=None, dtype=None) -> None:
        super().__init__()
        self.graph = graph
        for i in graph.convs:
            node = graph.nodes[i]
            *parents, leaf = node.name.split(".")
            owner: nn.Module = self
            for part in parents:  # a dotted name (GoogLeNet's "branch2.0") lives in a container
                if part not in owner._modules:
                    owner.add_module(part, nn.Sequential())
                owner = owner._modules[part]
            owner.add_module(leaf, ConvUnit(node.cin, node.cout, node.kernel, bias=node.bias,
                                            batch_norm=node.batch_norm, bn_eps=node.bn_eps, relu=node.relu,
                                            stride=node.stride, padding=node.padding, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return block_reference(x, self.graph, lambda i, t: self.get_submodule(self.graph.nodes[i].name)(t))


def pool2d(t: torch.Tensor, node: Pool) -> torch.Tensor:
    """A ``Pool`` node as PyTorch computes it."""
    if node.kind == "max":
        return F.max_pool2d(t, node.kernel, node.stride, node.padding, ceil_mode=node.ceil_mode)
    return F.avg_pool2d(t, node.kernel, node.stride, node.padding, ceil_mode=node.ceil_mode,
                        count_include_pad=node.count_include_pad)


def block_reference(x: torch.Tensor, graph: BlockGraph, conv: Callable[[int, torch.Tensor], torch.Tensor],
                    hold: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """The block as PyTorch ops: ``conv(i, t)`` applies conv node ``i`` (its conv, BatchNorm and
    ReLU) to ``t``; ``hold(t)`` is applied to every map one node hands to another (the fused
    kernels keep those maps in the input dtype). Differentiable in ``x`` and every tensor."""
    maps = {-1: x}
    for i, node in enumerate(graph.nodes):
        t = maps[node.src]
        if node.src >= 0 and hold is not None:
            t = hold(t)
        maps[i] = pool2d(t, node) if isinstance(node, Pool) else conv(i, t)
    return torch.cat([maps[i] for i in graph.outputs], 1)


def conv_unit(t: torch.Tensor, node: Conv, weight: torch.Tensor, bias: torch.Tensor | None,
              norm: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """One conv unit: conv, then ``norm`` (its BatchNorm) where given, then ReLU if the node has it."""
    t = F.conv2d(t, weight, bias, node.stride, node.padding)
    if norm is not None:
        t = norm(t)
    return F.relu(t) if node.relu else t


def units_reference(x: torch.Tensor, graph: BlockGraph, units: tuple[UnitTensors, ...],
                    batch_stats: bool = False) -> torch.Tensor:
    """``block_reference`` from the raw tensors of the conv nodes (``units[j]`` is conv node
    ``graph.convs[j]``); BatchNorm with running statistics, or with the batch's own (training mode)
    when ``batch_stats``."""
    of = dict(zip(graph.convs, units))

    def conv(i: int, t: torch.Tensor) -> torch.Tensor:
        u = of[i]
        norm = None
        if u.has_bn:
            mean, var = (None, None) if batch_stats else (u.bn_mean, u.bn_var)
            norm = (lambda y: F.batch_norm(y, mean, var, u.bn_weight, u.bn_bias, batch_stats, 0.0, u.bn_eps))
        return conv_unit(t, graph.nodes[i], u.weight, u.bias, norm)

    return block_reference(x, graph, conv)
