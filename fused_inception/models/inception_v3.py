"""Inception-v3 (Szegedy et al., 2015) as torchvision builds it, and pytorch-fid's FID Inception.

``Inception3`` is state_dict-compatible with ``torchvision.models.inception_v3`` (same module names,
registration order and shapes) and computes the same numbers. Its mixed blocks keep torchvision's
functional forwards (pools through ``F``, branches concatenated in ``forward``) because the
converter reads a block's wiring by ``torch.fx`` tracing; ``fused_inception.graph`` holds the same
blocks declaratively (``INCEPTION_V3_BLOCKS``, ``FID_BLOCKS``).

``fid_inception_v3`` is pytorch-fid's network for FID (the TensorFlow 2015-12-05 graph): the same
trunk with average pools that leave the padding out of their divisor, a max-pool in the last
block's pool branch, 1008 classes and no auxiliary classifier. Its ``pt_inception-2015-12-05``
weights load into ``FIDInceptionV3.inception``; nothing is ever downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .googlenet import renormalize_imagenet

__all__ = ["BasicConv2d", "InceptionA", "InceptionB", "InceptionC", "InceptionD", "InceptionE", "InceptionAux",
           "FIDInceptionA", "FIDInceptionC", "FIDInceptionE_1", "FIDInceptionE_2", "Inception3",
           "InceptionOutputs", "inception_v3", "FIDInceptionV3", "fid_inception_v3", "load_fid_weights"]


class InceptionOutputs(NamedTuple):
    logits: torch.Tensor
    aux_logits: torch.Tensor | None


class BasicConv2d(nn.Module):
    """Conv without bias (BatchNorm's shift replaces it) + BatchNorm(eps=1e-3) + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, **conv) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **conv)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class InceptionA(nn.Module):
    """Mixed_5b-5d at 35x35: 1x1, 5x5, double 3x3 and a pool projection of ``pool_features``."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        """The pool head (pytorch-fid's FID blocks change only this)."""
        return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1)

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        branch1x1 = self.branch1x1(x)
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = self.branch_pool(self._pool(x))
        return [branch1x1, branch5x5, branch3x3dbl, branch_pool]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(self._forward(x), 1)


class InceptionB(nn.Module):
    """Mixed_6a, the 35 -> 17 grid reduction: two stride-2 conv branches and an unprojected max-pool."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        branch3x3 = self.branch3x3(x)
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
        return [branch3x3, branch3x3dbl, branch_pool]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(self._forward(x), 1)


class InceptionC(nn.Module):
    """Mixed_6b-6e at 17x17: the 7x7 convs factorised into 1x7 and 7x1 chains of ``channels_7x7``."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    _pool = InceptionA._pool

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        branch1x1 = self.branch1x1(x)
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = self.branch7x7dbl_1(x)
        branch7x7dbl = self.branch7x7dbl_3(self.branch7x7dbl_2(branch7x7dbl))
        branch7x7dbl = self.branch7x7dbl_5(self.branch7x7dbl_4(branch7x7dbl))
        branch_pool = self.branch_pool(self._pool(x))
        return [branch1x1, branch7x7, branch7x7dbl, branch_pool]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(self._forward(x), 1)


class InceptionD(nn.Module):
    """Mixed_7a, the 17 -> 8 grid reduction."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = self.branch7x7x3_2(self.branch7x7x3_1(x))
        branch7x7x3 = self.branch7x7x3_4(self.branch7x7x3_3(branch7x7x3))
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
        return [branch3x3, branch7x7x3, branch_pool]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(self._forward(x), 1)


class InceptionE(nn.Module):
    """Mixed_7b/7c at 8x8: two maps each split into a 1x3 and a 3x1 conv (the "expanded" filter bank)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    _pool = InceptionA._pool

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        branch1x1 = self.branch1x1(x)
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = [self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)]
        branch3x3 = torch.cat(branch3x3, 1)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = [self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)]
        branch3x3dbl = torch.cat(branch3x3dbl, 1)
        branch_pool = self.branch_pool(self._pool(x))
        return [branch1x1, branch3x3, branch3x3dbl, branch_pool]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(self._forward(x), 1)


class InceptionAux(nn.Module):
    """The auxiliary classifier on Mixed_6e (training mode only). Its 5x5 conv needs the 17x17 map of
    a 299x299 input: smaller inputs run in eval mode, or with ``aux_logits=False``."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv0 = BasicConv2d(in_channels, 128, kernel_size=1)
        self.conv1 = BasicConv2d(128, 768, kernel_size=5)
        self.fc = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.conv0(F.avg_pool2d(x, kernel_size=5, stride=3)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1))


# pytorch-fid's patches: TensorFlow's average pool leaves the zero padding out of its divisor, and
# the TF graph's last block pools with a max (likely a slip in that graph, kept for comparable FIDs).
# pytorch-fid overrides forward with a copy that changes the pool; these override the pool alone.
class FIDInceptionA(InceptionA):
    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionC(InceptionC):
    _pool = FIDInceptionA._pool


class FIDInceptionE_1(InceptionE):  # noqa: N801 - pytorch-fid's name
    _pool = FIDInceptionA._pool


class FIDInceptionE_2(InceptionE):  # noqa: N801 - pytorch-fid's name
    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class Inception3(nn.Module):
    """torchvision's Inception-v3. Training mode with ``aux_logits`` returns
    ``InceptionOutputs(logits, aux_logits)``, otherwise the logits. The trunk accepts inputs from
    75x75; the auxiliary classifier (training mode) needs 299x299."""

    def __init__(self, num_classes: int = 1000, aux_logits: bool = True, transform_input: bool = False,
                 init_weights: bool = True, dropout: float = 0.5) -> None:
        super().__init__()
        self.aux_logits = aux_logits
        self.transform_input = transform_input
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        # Registered here, between 6e and 7a, because torchvision's state_dict has it here.
        self.AuxLogits = InceptionAux(768, num_classes) if aux_logits else None
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280)
        self.Mixed_7c = InceptionE(2048)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(2048, num_classes)
        if init_weights:
            self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's effective init: its stddev 0.01 for the aux 5x5 conv is set on the wrapper,
        # not on the nn.Conv2d it looks at, so only the aux fc differs. Linear biases keep
        # PyTorch's default, as there.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                std = 0.001 if self.AuxLogits is not None and m is self.AuxLogits.fc else 0.1
                nn.init.trunc_normal_(m.weight, mean=0.0, std=std, a=-2, b=2)

    def _transform_input(self, x: torch.Tensor) -> torch.Tensor:
        return renormalize_imagenet(x) if self.transform_input else x

    def _to_17x17(self, x: torch.Tensor) -> torch.Tensor:
        """Stem to Mixed_6e: the 768-channel map the auxiliary classifier reads (17x17 at 299x299)."""
        x = self.maxpool1(self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x))))
        x = self.maxpool2(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)))
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))
        x = self.Mixed_6a(x)
        return self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))

    def _to_8x8(self, x: torch.Tensor) -> torch.Tensor:
        """Mixed_7a to Mixed_7c: the 2048-channel map before the global pool."""
        return self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))

    def forward(self, x: torch.Tensor) -> InceptionOutputs | torch.Tensor:
        x = self._to_17x17(self._transform_input(x))
        aux = self.AuxLogits(x) if self.AuxLogits is not None and self.training else None
        x = self.dropout(self.avgpool(self._to_8x8(x)))
        x = self.fc(torch.flatten(x, 1))
        if self.training and self.aux_logits:
            return InceptionOutputs(x, aux)
        return x


def inception_v3(num_classes: int = 1000, aux_logits: bool = True, **kwargs) -> Inception3:
    """A randomly initialised Inception-v3 (no weights are downloaded)."""
    return Inception3(num_classes=num_classes, aux_logits=aux_logits, **kwargs)


class FIDInceptionV3(nn.Module):
    """pytorch-fid's ``InceptionV3([3])`` (resize and normalise on, FID Inception): images in [0, 1]
    of any size -> the (N, 2048) pool3 features. pytorch-fid returns them as a one-element list of
    (N, 2048, 1, 1); here they are flattened. Call ``.eval()`` first (training mode normalises with
    batch statistics). Its parameters stay trainable; pytorch-fid freezes them."""

    def __init__(self) -> None:
        super().__init__()
        net = Inception3(num_classes=1008, aux_logits=False, init_weights=False)
        net.Mixed_5b = FIDInceptionA(192, pool_features=32)
        net.Mixed_5c = FIDInceptionA(256, pool_features=64)
        net.Mixed_5d = FIDInceptionA(288, pool_features=64)
        net.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        net.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        net.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        net.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        net.Mixed_7b = FIDInceptionE_1(1280)
        net.Mixed_7c = FIDInceptionE_2(2048)
        net._init_weights()
        # Its state_dict keys are those of pytorch-fid's pt_inception-2015-12-05 weights.
        self.inception = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.preprocess(x))

    @staticmethod
    def preprocess(x: torch.Tensor) -> torch.Tensor:
        """pytorch-fid's input pipeline: bilinear resize to 299x299, [0, 1] -> the [-1, 1] of the
        TensorFlow weights. Anything else gives other FID values."""
        return 2 * F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) - 1

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The network on an already preprocessed input, to the pool3 features (any input size the
        network accepts, 75x75 and up: what tests and precision studies run at small sizes)."""
        net = self.inception
        return torch.flatten(net.avgpool(net._to_8x8(net._to_17x17(x))), 1)


def load_fid_weights(model: FIDInceptionV3, path: str | Path) -> FIDInceptionV3:
    """Loads a local copy of pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` into ``model``,
    strictly (a torchvision Inception-v3 checkpoint fails on its ``AuxLogits`` keys)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.inception.load_state_dict(state, strict=True)
    return model


def fid_inception_v3(weights_path: str | Path | None = None) -> FIDInceptionV3:
    """pytorch-fid's FID network, randomly initialised or with the weights at ``weights_path``."""
    model = FIDInceptionV3()
    return model if weights_path is None else load_fid_weights(model, weights_path)
