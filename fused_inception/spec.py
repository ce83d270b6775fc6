"""The data model: the immutable description of one Inception block, the nine GoogLeNet blocks,
and the raw tensors of one conv unit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .graph import BlockGraph, Conv, Pool

if TYPE_CHECKING:
    import torch

__all__ = ["InceptionSpec", "UnitTensors", "GOOGLENET_BLOCKS", "GOOGLENET_SPATIAL", "googlenet_spec"]


@dataclass(frozen=True)
class InceptionSpec:
    """Channel counts and variant options of an Inception block.

    ``ch3x3``/``ch5x5`` keep the paper's names; the real kernel sizes are ``k3``/``k5``
    (torchvision's "5x5" branch uses ``k5=3``).
    """

    in_channels: int
    ch1x1: int
    ch3x3red: int
    ch3x3: int
    ch5x5red: int
    ch5x5: int
    pool_proj: int
    k3: int = 3
    k5: int = 3
    bias: bool = False
    batch_norm: bool = True
    bn_eps: float = 1e-3
    relu: bool = True

    def __post_init__(self) -> None:
        for name in ("in_channels", "ch1x1", "ch3x3red", "ch3x3", "ch5x5red", "ch5x5", "pool_proj"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"InceptionSpec.{name} must be a positive int, got {value!r}")
        for name in ("k3", "k5"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value % 2 == 0:
                raise ValueError(
                    f"InceptionSpec.{name} must be an odd positive kernel size (1, 3, 5, 7, ...), "
                    f"got {value!r}"
                )
        if self.batch_norm and not (self.bn_eps > 0):
            raise ValueError(f"InceptionSpec.bn_eps must be > 0, got {self.bn_eps!r}")

    @property
    def out_channels(self) -> int:
        return self.ch1x1 + self.ch3x3 + self.ch5x5 + self.pool_proj

    @property
    def macs_per_pixel(self) -> int:
        """Multiply-accumulates per output pixel of one image, the block's minimum work: the three
        1x1 convs that read the input and the pool projection, plus the two KxK convs (max-pool
        comparisons, bias and ReLU are not tensor-core work). Also its weight count."""
        return (self.in_channels * (self.ch1x1 + self.ch3x3red + self.ch5x5red + self.pool_proj)
                + self.k3 * self.k3 * self.ch3x3red * self.ch3x3 + self.k5 * self.k5 * self.ch5x5red * self.ch5x5)

    @property
    def graph(self) -> BlockGraph:
        """The block as a ``BlockGraph``, with torchvision's submodule paths as unit names."""
        unit = {"bias": self.bias, "batch_norm": self.batch_norm, "bn_eps": self.bn_eps, "relu": self.relu}
        k3, k5 = self.k3, self.k5
        nodes = (Conv("branch1", -1, self.in_channels, self.ch1x1, **unit),
                 Conv("branch2.0", -1, self.in_channels, self.ch3x3red, **unit),
                 Conv("branch2.1", 1, self.ch3x3red, self.ch3x3, k3, 1, k3 // 2, **unit),
                 Conv("branch3.0", -1, self.in_channels, self.ch5x5red, **unit),
                 Conv("branch3.1", 3, self.ch5x5red, self.ch5x5, k5, 1, k5 // 2, **unit),
                 Pool(-1, "max", 3, 1, 1, ceil_mode=True, name="branch4.0"),
                 Conv("branch4.1", 5, self.in_channels, self.pool_proj, **unit))
        return BlockGraph("googlenet", self.in_channels, nodes, (0, 2, 4, 6))

    @property
    def channels(self) -> tuple[int, int, int, int, int, int, int]:
        """The seven positional arguments of torchvision's ``Inception``."""
        return (self.in_channels, self.ch1x1, self.ch3x3red, self.ch3x3,
                self.ch5x5red, self.ch5x5, self.pool_proj)

    @classmethod
    def paper(cls, *channels: int) -> InceptionSpec:
        """The block of Szegedy et al.: conv with bias + ReLU, a true 5x5, no BatchNorm."""
        return cls(*channels, k3=3, k5=5, bias=True, batch_norm=False, relu=True)

    @classmethod
    def torchvision(cls, *channels: int) -> InceptionSpec:
        """torchvision's block: conv without bias + BatchNorm(eps=1e-3) + ReLU, "5x5" is 3x3."""
        return cls(*channels, k3=3, k5=3, bias=False, batch_norm=True, bn_eps=1e-3, relu=True)


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


# Szegedy et al. (2014), Table 1: (in, 1x1, 3x3red, 3x3, 5x5red, 5x5, pool_proj).
GOOGLENET_BLOCKS: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "3a": (192, 64, 96, 128, 16, 32, 32),
    "3b": (256, 128, 128, 192, 32, 96, 64),
    "4a": (480, 192, 96, 208, 16, 48, 64),
    "4b": (512, 160, 112, 224, 24, 64, 64),
    "4c": (512, 128, 128, 256, 24, 64, 64),
    "4d": (512, 112, 144, 288, 32, 64, 64),
    "4e": (528, 256, 160, 320, 32, 128, 128),
    "5a": (832, 256, 160, 320, 32, 128, 128),
    "5b": (832, 384, 192, 384, 48, 128, 128),
}

# Input (= output) height and width of each block for a 224x224 image.
GOOGLENET_SPATIAL: dict[str, int] = {
    "3a": 28, "3b": 28, "4a": 14, "4b": 14, "4c": 14, "4d": 14, "4e": 14, "5a": 7, "5b": 7,
}


def googlenet_spec(name: str, variant: str = "torchvision") -> InceptionSpec:
    """The spec of GoogLeNet block ``name`` ("3a".."5b") in the ``"paper"`` or ``"torchvision"`` variant."""
    if name not in GOOGLENET_BLOCKS:
        raise ValueError(f"unknown GoogLeNet block {name!r}; expected one of {sorted(GOOGLENET_BLOCKS)}")
    if variant == "paper":
        return InceptionSpec.paper(*GOOGLENET_BLOCKS[name])
    if variant == "torchvision":
        return InceptionSpec.torchvision(*GOOGLENET_BLOCKS[name])
    raise ValueError(f"variant must be 'paper' or 'torchvision', got {variant!r}")
