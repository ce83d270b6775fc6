"""``convert``: swap every Inception block of a model for a ``FusedInception``, in place."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from .reference import inception_reference
from .structure import NotAnInceptionBlock, parse_inception

__all__ = ["ConversionReport", "convert", "verify_block"]

log = logging.getLogger("fused_inception")


@dataclass
class ConversionReport:
    """What ``convert`` replaced, and what it left alone and why (keyed by module path)."""

    replaced: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        s = f"fused_inception.convert: replaced {len(self.replaced)} block(s)"
        if self.replaced:
            s += f" ({', '.join(self.replaced)})"
        if self.skipped:
            s += "; skipped " + "; ".join(f"{k}: {v}" for k, v in self.skipped.items())
        return s


def _looks_like_candidate(module: nn.Module) -> bool:
    """Four children, the last starting with a max-pool: worth a report if it does not fit."""
    children = list(module.children())
    if len(children) != 4:
        return False
    last = children[3]
    while isinstance(last, nn.Sequential) and len(last) > 0:
        last = last[0]
    return isinstance(last, nn.MaxPool2d)


@torch.no_grad()
def verify_block(block: nn.Module, seed: int = 0) -> str | None:
    """Check on a random probe that ``block``'s forward computes the Inception block that its
    structure describes; returns None when it does, else the reason.

    Works on a float64 CPU copy with freshly drawn parameters and statistics (so a coincidence of
    the current weights cannot pass), from a private generator: the model's parameters, buffers,
    train/eval modes and the global RNG are untouched.
    """
    probe = copy.deepcopy(block).to(device="cpu", dtype=torch.float64).eval()
    parts = parse_inception(probe)
    g = torch.Generator().manual_seed(seed)
    for u in parts.units:
        fan_in = u.conv.weight[0].numel()
        u.conv.weight.copy_(torch.randn(u.conv.weight.shape, generator=g, dtype=torch.float64) / fan_in**0.5)
        if u.conv.bias is not None:
            u.conv.bias.copy_(torch.randn(u.conv.bias.shape, generator=g, dtype=torch.float64) * 0.5)
        if u.bn is not None:
            c = u.bn.num_features
            u.bn.running_mean.copy_(torch.randn(c, generator=g, dtype=torch.float64) * 0.3)
            u.bn.running_var.copy_(torch.rand(c, generator=g, dtype=torch.float64) + 0.5)
            if u.bn.weight is not None:
                u.bn.weight.copy_(torch.rand(c, generator=g, dtype=torch.float64) + 0.5)
                u.bn.bias.copy_(torch.randn(c, generator=g, dtype=torch.float64) * 0.3)
    x = torch.randn(2, parts.spec.in_channels, 6, 7, generator=g, dtype=torch.float64)
    with torch.random.fork_rng(devices=[]):
        try:
            got = probe(x)
        except Exception as e:  # noqa: BLE001 - any failure means "not this block"
            return f"forward failed on a probe input: {type(e).__name__}: {e}"
    if not isinstance(got, torch.Tensor):
        return f"forward returned {type(got).__name__}, not a tensor"
    want = inception_reference(x, parts.tensors(), parts.spec.relu)
    if got.shape != want.shape:
        return f"forward gives shape {tuple(got.shape)}, an Inception block {tuple(want.shape)}"
    err = (got - want).abs().max().item()
    if not err <= 1e-9 * max(1.0, want.abs().max().item()):
        return f"forward differs from the Inception block it looks like (max abs error {err:.3g})"
    return None


def convert(model: nn.Module, *, filter_fn: Callable[[str, nn.Module], bool] | None = None,
            backend: str = "auto", verify: bool = True, return_report: bool = False):
    """Replace, in place and recursively, every Inception block of ``model`` by a ``FusedInception``.

    Blocks are recognised by structure (four branches: 1x1 unit; 1x1 then KxK unit; 1x1 then KxK
    unit; 3x3/stride-1 max-pool then 1x1 unit) and, unless ``verify=False``, confirmed on a random
    probe. ``filter_fn(path, module)`` can veto a block. Returns the model (a new module if
    ``model`` itself is a block), or ``(model, ConversionReport)`` with ``return_report=True``.
    The report is also logged on the ``fused_inception`` logger.
    """
    from .module import FusedInception

    report = ConversionReport()

    def try_replace(path: str, module: nn.Module) -> nn.Module | None:
        if isinstance(module, FusedInception):
            return None
        try:
            parse_inception(module, path)
        except NotAnInceptionBlock as e:
            if _looks_like_candidate(module):
                report.skipped[path or "<root>"] = str(e)
            return None
        if filter_fn is not None and not filter_fn(path, module):
            report.skipped[path or "<root>"] = "rejected by filter_fn"
            return None
        reason = verify_block(module) if verify else None
        if reason is not None:
            report.skipped[path or "<root>"] = reason
            return None
        report.replaced.append(path or "<root>")
        return FusedInception.from_module(module, backend=backend)

    def walk(parent: nn.Module, prefix: str) -> None:
        for name, child in list(parent.named_children()):
            path = f"{prefix}{name}"
            new = try_replace(path, child)
            if new is not None:
                setattr(parent, name, new)
            else:
                walk(child, f"{path}.")

    root = try_replace("", model)
    if root is not None:
        model = root
    else:
        walk(model, "")
    log.info("%s", report)
    if report.skipped:
        log.warning("fused_inception.convert skipped: %s", report.skipped)
    return (model, report) if return_report else model
