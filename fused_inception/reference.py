"""The Inception block in plain PyTorch.

``ReferenceInception`` builds either the paper's block or torchvision's (its ``state_dict`` keys
are exactly torchvision's ``Inception`` keys): the unfused block that ``fi.unconvert`` and the
benchmarks run. ``inception_reference`` is the same computation as a function of raw tensors:
the converter's check that a fused block computes what the original did (``convert.verify_block``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .spec import InceptionSpec

__all__ = ["ConvUnit", "ReferenceInception", "UnitTensors", "inception_reference", "build_branches"]


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


@dataclass(frozen=True)
class UnitTensors:
    """The raw tensors of one conv unit (BatchNorm applied with running statistics)."""

    weight: torch.Tensor
    bias: torch.Tensor | None = None
    bn_weight: torch.Tensor | None = None
    bn_bias: torch.Tensor | None = None
    bn_mean: torch.Tensor | None = None
    bn_var: torch.Tensor | None = None
    bn_eps: float = 1e-3

    @property
    def has_bn(self) -> bool:
        return self.bn_mean is not None


def _unit(x: torch.Tensor, u: UnitTensors, relu: bool, batch_stats: bool) -> torch.Tensor:
    k = u.weight.shape[-1]
    y = F.conv2d(x, u.weight, u.bias, padding=k // 2)
    if u.has_bn:
        mean, var = (None, None) if batch_stats else (u.bn_mean, u.bn_var)
        y = F.batch_norm(y, mean, var, u.bn_weight, u.bn_bias, batch_stats, 0.0, u.bn_eps)
    return F.relu(y) if relu else y


def inception_reference(x: torch.Tensor, units: tuple[UnitTensors, ...], relu: bool,
                        batch_stats: bool = False) -> torch.Tensor:
    """The Inception block from raw tensors; BatchNorm with running statistics, or with the
    batch's own (training mode) when ``batch_stats``.

    ``units`` are (1x1, 3x3-reduce, 3x3, 5x5-reduce, 5x5, pool-proj). Differentiable in ``x`` and
    every weight.
    """
    b1, r3, c3, r5, c5, pp = units
    y1 = _unit(x, b1, relu, batch_stats)
    y3 = _unit(_unit(x, r3, relu, batch_stats), c3, relu, batch_stats)
    y5 = _unit(_unit(x, r5, relu, batch_stats), c5, relu, batch_stats)
    yp = _unit(F.max_pool2d(x, 3, 1, 1), pp, relu, batch_stats)
    return torch.cat([y1, y3, y5, yp], 1)
