"""What ties a fused module to its conv units, and how it notices that they changed.

A fused module reads its units' tensors directly on every forward; a ``Binding`` records where
they live and a fingerprint of the structure (children, conv/BatchNorm/pool settings), compared
on every forward, so a replaced submodule or an edited setting makes the module parse itself again.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torch.nn.utils import parametrize

from .structure import NotAnInceptionBlock, hook_dicts

__all__ = ["Binding", "bind", "fingerprint"]


@dataclass(frozen=True)
class Binding:
    """The block structure the fused path computes, and what tells that it changed.

    ``snapshot``: every module's children and the conv, BatchNorm and pool settings at parse time,
    so a replaced, added or removed submodule (a parametrization registers one) or an edited
    setting is seen on the next forward. ``hooks``: the submodules' hook tables, which the fused kernel would
    bypass. ``tables``: where each folded tensor lives, as (parameter or buffer table, name), read
    afresh on every forward. Swapped as one object, so concurrent forwards see one binding.
    """

    owner: nn.Module
    parts: object | None  # InceptionParts or TracedBlock: .graph, .units, .tensors(), .batch_norms()
    error: Exception | None  # why the current structure is not an Inception block
    watch: tuple
    snapshot: list
    hooks: list
    parametrized: bool
    batch_norms: tuple[nn.BatchNorm2d, ...]
    tables: tuple[tuple[dict, str], ...]


def fingerprint(modules: tuple[nn.Module, ...], convs: tuple[nn.Conv2d, ...], bns: tuple[nn.BatchNorm2d, ...],
                 pools: tuple[nn.MaxPool2d, ...], units: tuple[nn.Module, ...]) -> list:
    """What defines the structure: every module's children, the conv, BatchNorm and pool
    hyper-parameters, a conv unit's ``relu`` flag. Plain attribute reads (instance ``__dict__``:
    fast, and traceable by Dynamo)."""
    return [*(m._modules for m in modules),
            *((c.kernel_size, c.stride, c.padding, c.dilation, c.groups, c.padding_mode, c.in_channels,
               c.out_channels) for c in convs),
            *((b.eps, b.track_running_stats) for b in bns),
            *((p.kernel_size, p.stride, p.padding, p.dilation, p.ceil_mode, p.return_indices) for p in pools),
            *(u.relu for u in units)]


def _tables(parts) -> tuple[tuple[dict, str], ...]:
    """Where each tensor the packed weights are folded from lives: (parameter or buffer table, name)."""
    out: list[tuple[dict, str]] = []
    for u in parts.units:
        out += ((u.conv._parameters, "weight"), (u.conv._parameters, "bias"))
        if u.bn is not None:
            bn = u.bn
            out += ((bn._parameters, "weight"), (bn._parameters, "bias"), (bn._buffers, "running_mean"),
                    (bn._buffers, "running_var"), (bn._buffers, "num_batches_tracked"))
    return tuple(out)


def bind(owner: nn.Module) -> Binding:
    """Parse ``owner`` (its ``_parse``) and record what would tell that its structure changed."""
    modules = tuple(owner.modules())
    try:
        parts, error = owner._parse(), None
    except NotAnInceptionBlock as e:
        parts, error = None, e
    of = (lambda cls: tuple(m for m in modules if isinstance(m, cls)))
    watch = (modules, of(nn.Conv2d), of(nn.BatchNorm2d), of(nn.MaxPool2d),
             tuple(m for m in modules if isinstance(m.__dict__.get("relu"), bool)))
    snapshot = [dict(v) if isinstance(v, dict) else v for v in fingerprint(*watch)]
    return Binding(owner, parts, error, watch, snapshot, hook_dicts(modules[1:]),
                    any(parametrize.is_parametrized(m) for m in modules),
                    parts.batch_norms() if parts is not None else (), _tables(parts) if parts is not None else ())
