"""FLOP and byte counting of a block or a network, and the roofline floor they give."""

from __future__ import annotations

import environment as E
import torch
from torch import nn


def block_flops(spec, n: int, h: int, w: int) -> int:
    """2*N*H*W*(Cin*(C1+C3r+C5r+Cp) + K3^2*C3r*C3 + K5^2*C5r*C5); pool comparisons excluded."""
    return 2 * n * h * w * spec.macs_per_pixel


def block_weight_elements(spec) -> int:
    return spec.macs_per_pixel  # one weight per multiply-accumulate of one pixel


def block_bias_elements(spec) -> int:
    s = spec
    return s.ch1x1 + s.ch3x3red + s.ch5x5red + s.ch3x3 + s.ch5x5 + s.pool_proj


def block_min_bytes(spec, n: int, h: int, w: int, elem: int, bias_elem: int = 4) -> dict[str, int]:
    """Fewest bytes one forward must move through device memory: the input read once, the output
    written once, the (BN-folded) weights read once in the compute dtype and the biases in fp32
    (as ``PackedWeights`` holds them). Intermediate maps are not counted: a fused kernel need not
    store them."""
    parts = {
        "input": n * spec.in_channels * h * w * elem,
        "output": n * spec.out_channels * h * w * elem,
        "weights": block_weight_elements(spec) * elem,
        "biases": block_bias_elements(spec) * bias_elem,
    }
    parts["total"] = sum(parts.values())
    return parts


def roofline_floor_s(flops: float, nbytes: float, peak_flops: float, peak_bytes_per_s: float) -> tuple[float, str]:
    """The larger of compute time and memory time at the measured ceilings, and which bound it is."""
    t_compute = flops / peak_flops
    t_memory = nbytes / peak_bytes_per_s
    return (t_compute, "compute") if t_compute >= t_memory else (t_memory, "memory")


def model_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward (2 per multiply-accumulate of every Conv2d and Linear; the fused blocks
    by ``block_flops``), counted with forward hooks on ``x`` (pooling, BN, ReLU excluded)."""
    total = 0
    handles = []

    def conv_hook(m, inp, out):
        nonlocal total
        kh, kw = m.kernel_size
        total += 2 * out.numel() * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m, inp, out):
        nonlocal total
        total += 2 * out.numel() * m.in_features

    def block_hook(m, inp, out):
        nonlocal total
        n, _, h, w = inp[0].shape
        total += block_flops(m.spec, n, h, w)

    fused_types = E.fused_types()
    for m in model.modules():
        if fused_types and isinstance(m, fused_types):
            handles.append(m.register_forward_hook(block_hook))
    inside = {id(c) for m in model.modules() if fused_types and isinstance(m, fused_types) for c in m.modules()}
    for m in model.modules():
        if id(m) in inside:
            continue
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return total
