"""Builders shared by the tests: randomised blocks and inputs, and the fp64 oracle."""

from __future__ import annotations

import copy
import importlib
import sys
from pathlib import Path

import pytest  # noqa: E402
import torch
from torch import nn

from fused_inception import FusedInception, InceptionSpec
from fused_inception.kernels.triton_inception import interpreting
from fused_inception.reference import ReferenceInception

CUDA = torch.cuda.is_available()
BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
requires_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
requires_interpreter = pytest.mark.skipif(not interpreting(), reason="needs TRITON_INTERPRET=1")

# One tolerance per compute dtype: relative error ||out - ref|| / ||ref|| against an fp64 reference.
TOLERANCE = {
    torch.float64: 1e-12,
    torch.float32: 1e-5,   # full fp32 (the interpreter, or cudnn.allow_tf32 = False)
    "tf32": 3e-3,          # fp32 on tensor cores
    torch.float16: 3e-3,
    torch.bfloat16: 2e-2,
}


def tolerance(dtype: torch.dtype, device: str = "cpu") -> float:
    if dtype == torch.float32 and device == "cuda" and torch.backends.cudnn.allow_tf32:
        return TOLERANCE["tf32"]
    return TOLERANCE[dtype]


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()




def randomize_(module: nn.Module, bias_shift: float = 0.0) -> nn.Module:
    """Random weights and BatchNorm statistics (never the zero/one defaults).

    ``bias_shift`` > 0 makes every bias strongly positive, so a halo padded with relu(bias)
    instead of 0 shows up as a large error.
    """
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.normal_(0, 1.0 / m.weight[0].numel() ** 0.5)
                if m.bias is not None:
                    m.bias.uniform_(-0.5, 0.5).add_(bias_shift)
            elif isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                if m.weight is not None:
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.5, 0.5).add_(bias_shift)
    return module


def make_block(spec: InceptionSpec, dtype=torch.float32, device="cpu", backend="auto",
               bias_shift: float = 0.0) -> FusedInception:
    block = FusedInception.from_spec(spec, backend=backend)
    randomize_(block, bias_shift)
    return block.to(device=device, dtype=dtype).eval()


def oracle(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The block in fp64 on CPU, through plain PyTorch modules (no fused code involved)."""
    ref = ReferenceInception(block.spec).double()
    ref.load_state_dict({k: v.detach().double().cpu() for k, v in block.state_dict().items()})
    ref.eval()
    with torch.no_grad():
        return ref(x.detach().double().cpu())


def make_input(n: int, c: int, h: int, w: int, dtype=torch.float32, device="cpu", layout="nchw") -> torch.Tensor:
    """Random input in the given layout: "nchw", "channels_last" or "sliced" (a strided view)."""
    if layout == "sliced":
        big = torch.randn(n, c + 3, h + 2, 2 * w, dtype=dtype, device=device)
        x = big[:, 2:2 + c, 1:1 + h, ::2]
        assert not x.is_contiguous()
        return x
    x = torch.randn(n, c, h, w, dtype=dtype, device=device)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def clone_block(block: nn.Module) -> nn.Module:
    return copy.deepcopy(block)


def bench_module(name: str):
    """A module of benchmarks/ (a folder of scripts, not a package)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)
