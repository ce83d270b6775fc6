"""The fused forward as a ``torch.library`` operator, with a fake implementation for tracing.

``fused_inception::inception_forward(x, packed weights..., channels, k3, k5, relu, impl)``:
``impl`` names the fused implementation ("triton" or "cuda"). On CPU tensors the Triton
implementation runs in Triton's interpreter when ``TRITON_INTERPRET=1``; otherwise the CPU kernel
computes the same function with PyTorch ops from the packed weights.
"""

from __future__ import annotations

import torch

from .kernels.triton_inception import inception_forward_triton, interpreting
from .packing import PackedWeights, _conv_memory_format, packed_reference
from .spec import InceptionSpec

__all__ = ["inception_forward", "IMPLS"]

IMPLS = ("triton", "cuda")


def _spec(channels: list[int], k3: int, k5: int, relu: bool) -> InceptionSpec:
    return InceptionSpec(*channels, k3=k3, k5=k5, relu=relu)


@torch.library.custom_op("fused_inception::inception_forward", mutates_args=())
def inception_forward(x: torch.Tensor, w_in: torch.Tensor, b_in: torch.Tensor, w3: torch.Tensor,
                      b3: torch.Tensor, w5: torch.Tensor, b5: torch.Tensor, wp: torch.Tensor,
                      bp: torch.Tensor, channels: list[int], k3: int, k5: int, relu: bool,
                      impl: str) -> torch.Tensor:
    packed = PackedWeights(w_in, b_in, w3, b3, w5, b5, wp, bp)
    spec = _spec(channels, k3, k5, relu)
    if x.device.type == "cpu":
        if impl == "triton" and interpreting():
            return inception_forward_triton(x, packed, spec)
        return packed_reference(x, packed, spec)
    if impl == "cuda":
        from .cuda_ext import inception_forward_cuda
        return inception_forward_cuda(x, packed, spec)
    return inception_forward_triton(x, packed, spec)


@inception_forward.register_fake
def _(x, w_in, b_in, w3, b3, w5, b5, wp, bp, channels, k3, k5, relu, impl):
    n, _, h, w = x.shape
    cout = channels[1] + channels[3] + channels[5] + channels[6]
    return torch.empty((n, cout, h, w), dtype=x.dtype, device=x.device,
                       memory_format=_conv_memory_format(x))
