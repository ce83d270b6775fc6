"""The Inception block in plain PyTorch.

``ReferenceInception`` builds either the paper's block or torchvision's (its ``state_dict`` keys
are exactly torchvision's ``Inception`` keys): the unfused block that ``fi.unconvert`` and the
benchmarks run. ``block_reference`` is the block's math once, as a function of tensors and the
block's wiring: from raw units (``inception_reference``, the converter's check that a fused block
computes what the original did) and from packed weights (``packing.packed_reference``, the op's
reference implementation and backward).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .spec import InceptionSpec, UnitTensors

__all__ = ["ConvUnit", "INCEPTION_WIRING", "ReferenceInception", "block_reference", "build_branches",
           "inception_reference"]


class ConvUnit(nn.Module):
    """Conv2d [+ BatchNorm2d] [+ ReLU]; keys ``conv.*`` and ``bn.*`` like torchvision's BasicConv2d."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, bias: bool,
                 batch_norm: bool, bn_eps: float, relu: bool, device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2,
                              bias=bias, **factory)
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


# The Inception block's wiring, the one piece of the block's math: per branch, an optional 3x3/s1
# max-pool head, then a chain of conv units (indices into the six units: 1x1, 3x3-reduce, 3x3,
# 5x5-reduce, 5x5, pool-proj); the branches are concatenated in this order.
INCEPTION_WIRING: tuple[tuple[bool, tuple[int, ...]], ...] = ((False, (0,)), (False, (1, 2)), (False, (3, 4)),
                                                              (True, (5,)))


def block_reference(x: torch.Tensor, convs, relu: bool, norm=None, hold=None,
                    wiring=INCEPTION_WIRING) -> torch.Tensor:
    """The block as PyTorch ops: ``convs[i]`` is unit i's (weight, bias or None); ``norm(i, y)``
    applies unit i's BatchNorm where it has one (None: no BatchNorm, or folded into the convs);
    ``hold(t)`` is applied to every map a conv hands to the next conv of its chain (the fused
    kernels keep those maps in the input dtype). Differentiable in ``x`` and every tensor."""
    outs = []
    for pool, chain in wiring:
        t = F.max_pool2d(x, 3, 1, 1) if pool else x
        for j, i in enumerate(chain):
            if j and hold is not None:
                t = hold(t)
            w, b = convs[i]
            t = F.conv2d(t, w, b, padding=w.shape[-1] // 2)
            if norm is not None:
                t = norm(i, t)
            t = F.relu(t) if relu else t
        outs.append(t)
    return torch.cat(outs, 1)


def inception_reference(x: torch.Tensor, units: tuple[UnitTensors, ...], relu: bool,
                        batch_stats: bool = False) -> torch.Tensor:
    """``block_reference`` from the six units' raw tensors; BatchNorm with running statistics, or
    with the batch's own (training mode) when ``batch_stats``."""
    def norm(i: int, y: torch.Tensor) -> torch.Tensor:
        u = units[i]
        if not u.has_bn:
            return y
        mean, var = (None, None) if batch_stats else (u.bn_mean, u.bn_var)
        return F.batch_norm(y, mean, var, u.bn_weight, u.bn_bias, batch_stats, 0.0, u.bn_eps)

    return block_reference(x, [(u.weight, u.bias) for u in units], relu, norm)
