"""GoogLeNet (Szegedy et al., 2014) in two variants, built from the paper's table.

``variant="torchvision"`` is state_dict-compatible with ``torchvision.models.googlenet``
(BasicConv2d = conv without bias + BatchNorm(eps=1e-3) + ReLU; the "5x5" branches use 3x3).
``variant="paper"`` is the paper's network: biased convs + ReLU, true 5x5 branches, local
response normalisation, 7x7 average pool, 40% dropout. Both carry the two auxiliary classifiers
(after 4a and 4d), which run only in training mode.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..reference import ConvUnit, ReferenceInception
from ..spec import GOOGLENET_BLOCKS, googlenet_spec

__all__ = ["GoogLeNet", "GoogLeNetOutputs", "InceptionAux", "googlenet"]


def renormalize_imagenet(x: torch.Tensor) -> torch.Tensor:
    """ImageNet normalisation -> the (x - 0.5) / 0.5 scaling the original weights of GoogLeNet and
    Inception-v3 were trained with (torchvision's ``transform_input``)."""
    x0 = x[:, 0:1] * (0.229 / 0.5) + (0.485 - 0.5) / 0.5
    x1 = x[:, 1:2] * (0.224 / 0.5) + (0.456 - 0.5) / 0.5
    x2 = x[:, 2:3] * (0.225 / 0.5) + (0.406 - 0.5) / 0.5
    return torch.cat((x0, x1, x2), 1)


class GoogLeNetOutputs(NamedTuple):
    logits: torch.Tensor
    aux_logits2: torch.Tensor | None
    aux_logits1: torch.Tensor | None


class InceptionAux(nn.Module):
    """Auxiliary classifier: 4x4 average pool, 1x1 conv 128 + ReLU, FC 1024 + ReLU, dropout 0.7, FC."""

    def __init__(self, in_channels: int, num_classes: int, unit) -> None:
        super().__init__()
        self.conv = unit(in_channels, 128, 1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(p=0.7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(x, (4, 4))  # the paper's 5x5/3 average pool on a 14x14 map
        x = torch.flatten(self.conv(x), 1)
        x = self.dropout(F.relu(self.fc1(x)))
        return self.fc2(x)


class GoogLeNet(nn.Module):
    def __init__(self, variant: str = "torchvision", num_classes: int = 1000, aux_logits: bool = True,
                 transform_input: bool = False, dropout: float | None = None, init_weights: bool = True) -> None:
        super().__init__()
        if variant not in ("paper", "torchvision"):
            raise ValueError(f"variant must be 'paper' or 'torchvision', got {variant!r}")
        paper = variant == "paper"

        def unit(cin: int, cout: int, k: int, stride: int = 1) -> ConvUnit:
            u = ConvUnit(cin, cout, k, bias=paper, batch_norm=not paper, bn_eps=1e-3, relu=True)
            if stride != 1:
                u.conv.stride = (stride, stride)
            return u

        self.variant = variant
        self.aux_logits = aux_logits
        self.transform_input = transform_input
        self.conv1 = unit(3, 64, 7, stride=2)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.lrn1 = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0) if paper else None
        self.conv2 = unit(64, 64, 1)
        self.conv3 = unit(64, 192, 3)
        self.lrn2 = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0) if paper else None
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        for name in GOOGLENET_BLOCKS:
            if name == "4a":
                self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
            if name == "5a":
                self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
            self.add_module(f"inception{name}", ReferenceInception(googlenet_spec(name, variant)))
        self.aux1 = InceptionAux(512, num_classes, unit) if aux_logits else None
        self.aux2 = InceptionAux(528, num_classes, unit) if aux_logits else None
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout if dropout is not None else (0.4 if paper else 0.2))
        self.fc = nn.Linear(1024, num_classes)
        if init_weights:
            self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _transform_input(self, x: torch.Tensor) -> torch.Tensor:
        return renormalize_imagenet(x) if self.transform_input else x

    def forward(self, x: torch.Tensor):
        x = self._transform_input(x)
        x = self.maxpool1(self.conv1(x))
        if self.lrn1 is not None:
            x = self.lrn1(x)
        x = self.conv3(self.conv2(x))
        if self.lrn2 is not None:
            x = self.lrn2(x)
        x = self.maxpool2(x)
        x = self.inception3b(self.inception3a(x))
        x = self.inception4a(self.maxpool3(x))
        aux1 = self.aux1(x) if self.aux1 is not None and self.training else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if self.aux2 is not None and self.training else None
        x = self.inception4e(x)
        x = self.inception5b(self.inception5a(self.maxpool4(x)))
        x = torch.flatten(self.avgpool(x), 1)
        x = self.fc(self.dropout(x))
        if self.training and self.aux_logits:
            return GoogLeNetOutputs(x, aux2, aux1)
        return x


def googlenet(variant: str = "torchvision", num_classes: int = 1000, aux_logits: bool = True,
              **kwargs) -> GoogLeNet:
    """A randomly initialised GoogLeNet (no weights are downloaded)."""
    return GoogLeNet(variant=variant, num_classes=num_classes, aux_logits=aux_logits, **kwargs)
