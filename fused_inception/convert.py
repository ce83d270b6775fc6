"""``convert``: swap every Inception block of a model for a ``FusedInception``, in place, and
``unconvert``: swap them back for plain PyTorch blocks.

The converter never changes what a model does. A block is replaced only when its own forward was
checked, in training and in eval mode, to compute the Inception block its structure describes;
anything the fused kernel would bypass (hooks or parametrizations on its submodules) leaves it
alone; hooks on the block itself move to the fused block. Whatever goes wrong with one block is a
reported skip, never an exception.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from .reference import ReferenceBlock, ReferenceInception, units_reference
from .structure import InceptionParts, NotAnInceptionBlock, fusion_bypasses, parse_inception
from .trace import parse_block, probe_size

__all__ = ["ConversionReport", "convert", "unconvert", "verify_block"]

log = logging.getLogger("fused_inception")

# Everything nn.Module keeps about hooks. Moved as the same objects, so the user's RemovableHandles
# (which hold a weak reference to the table) still remove them.
_HOOK_ATTRS = tuple(k for k, v in vars(nn.Module()).items() if "hook" in k)


@dataclass
class ConversionReport:
    """What ``convert`` replaced (and each block's kind: "googlenet", "A".."E", "fid-A", ...),
    what it left alone and why, and what else it did (keyed by module path)."""

    replaced: list[str] = field(default_factory=list)
    kinds: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        s = f"fused_inception.convert: replaced {len(self.replaced)} block(s)"
        if self.replaced:
            s += f" ({', '.join(f'{k} [{self.kinds[k]}]' if k in self.kinds else k for k in self.replaced)})"
        if self.skipped:
            s += "; skipped " + "; ".join(f"{k}: {v}" for k, v in self.skipped.items())
        if self.notes:
            s += "; notes: " + "; ".join(f"{k}: {v}" for k, v in self.notes.items())
        return s


_UNIT_PARTS = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d)


def _looks_like_candidate(module: nn.Module) -> bool:
    """Worth a report if it does not fit, and worth tracing: GoogLeNet's shape (four children, the
    last starting with a max-pool), or a module made only of conv units (``Conv2d``, or a module
    with a ``.conv``) and pool/BN/ReLU modules, at least two units (Inception-v3's blocks). A whole
    network (a ``Linear`` among its children) or a single conv unit is neither."""
    children = list(module.children())
    if len(children) == 4:
        last = children[3]
        while isinstance(last, nn.Sequential) and len(last) > 0:
            last = last[0]
        if isinstance(last, nn.MaxPool2d):
            return True
    units = 0
    for child in children:
        if isinstance(child, nn.Conv2d) or isinstance(getattr(child, "conv", None), nn.Conv2d):
            units += 1
        elif not isinstance(child, _UNIT_PARTS) and not (
                isinstance(child, nn.Sequential) and all(isinstance(c, _UNIT_PARTS) or hasattr(c, "conv")
                                                         for c in child)):
            return False
    return units >= 2


def _probe_copy(block: nn.Module) -> nn.Module:
    """A float64 CPU copy of ``block`` with every hook removed (the probe must not call the
    user's hooks). Meta tensors get storage (``to_empty``): their values are redrawn anyway."""
    probe = copy.deepcopy(block)
    for m in probe.modules():
        for name in _HOOK_ATTRS:
            table = getattr(m, name)
            if isinstance(table, dict):
                table.clear()
    if any(t.is_meta for t in (*probe.parameters(), *probe.buffers())):
        probe = probe.to_empty(device="cpu")
    return probe.to(device="cpu", dtype=torch.float64)


@torch.no_grad()
def verify_block(block: nn.Module, seed: int = 0) -> str | None:
    """Check on a random probe that ``block``'s forward computes the Inception block that its
    structure describes, in eval mode and in training mode; returns None when it does, else why not.

    Works on a float64 CPU copy without hooks, with freshly drawn parameters and statistics (so a
    coincidence of the current weights cannot pass), from a private generator: the model's
    parameters, buffers, train/eval modes, hooks and the global RNG are untouched.
    """
    try:
        probe = _probe_copy(block)
    except Exception as e:  # noqa: BLE001 - e.g. an attribute that cannot be copied (a lock)
        return f"cannot make a probe copy to check it ({type(e).__name__}: {e})"
    parts = parse_block(probe)
    g = torch.Generator().manual_seed(seed)
    rand = (lambda shape, scale=1.0: torch.randn(shape, generator=g, dtype=torch.float64) * scale)
    for u in parts.units:
        u.conv.weight.copy_(rand(u.conv.weight.shape, u.conv.weight[0].numel() ** -0.5))
        if u.conv.bias is not None:
            u.conv.bias.copy_(rand(u.conv.bias.shape, 0.5))
        if u.bn is not None:
            c = u.bn.num_features
            u.bn.running_mean.copy_(rand(c, 0.3))
            u.bn.running_var.copy_(rand(c).abs() + 0.5)
            u.bn.num_batches_tracked.zero_()
            if u.bn.weight is not None:
                u.bn.weight.copy_(rand(c).abs() + 0.5)
                u.bn.bias.copy_(rand(c, 0.3))
    x = rand((2, parts.graph.in_channels, *probe_size(parts.graph)))
    for training in (False, True):
        mode = "training" if training else "eval"
        probe.train(training)
        want = units_reference(x, parts.graph, parts.tensors(), batch_stats=training)
        with torch.random.fork_rng(devices=[]):
            try:
                got = probe(x)
            except Exception as e:  # noqa: BLE001 - any failure means "not this block"
                return f"forward failed on a probe input in {mode} mode: {type(e).__name__}: {e}"
        if not isinstance(got, torch.Tensor):
            return f"forward returned {type(got).__name__}, not a tensor"
        if got.shape != want.shape:
            return f"forward gives shape {tuple(got.shape)}, an Inception block {tuple(want.shape)}"
        err = (got - want).abs().max().item()
        if not err <= 1e-9 * max(1.0, want.abs().max().item()):
            return f"{mode}-mode forward differs from the Inception block it looks like (max abs error {err:.3g})"
    return None


def _move_hooks(src: nn.Module, dst: nn.Module) -> list[str]:
    """Move ``src``'s own non-empty hook tables to ``dst`` (hooks ``dst`` already has run after
    them); returns the kinds moved."""
    moved = []
    for name in _HOOK_ATTRS:
        table = getattr(src, name)
        if not isinstance(table, dict):  # _is_full_backward_hook: a flag that goes with the tables
            if table is not None:
                setattr(dst, name, table)
            continue
        if not table:
            continue
        moved.append(name.strip("_").replace("_", " "))
        table.update(getattr(dst, name))
        setattr(dst, name, table)
        setattr(src, name, type(table)())
    return moved


def _replace_in_tree(model: nn.Module, swap: Callable[[str, nn.Module], nn.Module | None]):
    """Apply ``swap(path, module)`` to ``model`` and, where it gives None, recursively to the
    children. Returns the new root and the (path, first path) of every later use of a module
    instance found at several paths: ``named_children`` would skip those, here each instance is
    swapped once and all its uses get the same result."""
    done: dict[int, tuple[str, nn.Module]] = {}
    repeats: list[tuple[str, str]] = []

    def visit(path: str, module: nn.Module) -> nn.Module:
        if id(module) in done:
            first, result = done[id(module)]
            repeats.append((path or "<root>", first or "<root>"))
            return result
        result = swap(path, module)
        if result is None:
            result = module
            for name, child in list(module._modules.items()):
                if child is not None and (new := visit(f"{path}.{name}" if path else name, child)) is not child:
                    setattr(module, name, new)
        done[id(module)] = (path, result)
        return result

    return visit("", model), repeats


def convert(model: nn.Module, *, filter_fn: Callable[[str, nn.Module], bool] | None = None,
            backend: str = "auto", verify: bool = True, return_report: bool = False):
    """Replace, in place and recursively, every Inception block of ``model`` by a ``FusedInception``.

    Blocks are recognised by structure (four branches: 1x1 unit; 1x1 then KxK unit; 1x1 then KxK
    unit; 3x3/stride-1 max-pool then 1x1 unit) and, unless ``verify=False``, confirmed on a random
    probe in eval and in training mode (``verify_block``). A block is left alone, with the reason
    in the report, when it does not fit, fails the probe, carries hooks or parametrizations on its
    submodules (the fused kernel would bypass them), or cannot be handled for any other reason;
    hooks on the block itself move to the fused block. A block instance used at several paths
    becomes one fused instance at all of them. ``filter_fn(path, module)`` can veto a block.

    Returns the model (a new module if ``model`` itself is a block), or ``(model, ConversionReport)``
    with ``return_report=True``. The report is also logged on the ``fused_inception`` logger.
    """
    from .fused_block import FusedBlock
    from .module import FusedInception, FusedModule

    report = ConversionReport()

    def swap(path: str, module: nn.Module) -> nn.Module | None:
        key = path or "<root>"
        if isinstance(module, FusedModule):
            return None
        try:
            parts = parse_inception(module, path)
        except NotAnInceptionBlock as e:
            if not _looks_like_candidate(module):
                return None
            try:
                parts = parse_block(module, path)
            except NotAnInceptionBlock as e2:
                report.skipped[key] = str(e2) if len(list(module.children())) != 4 else str(e)
                return None
        except Exception as e:  # noqa: BLE001 - an odd module is skipped with a reason, never crashed on
            report.skipped[key] = f"could not be inspected: {type(e).__name__}: {e}"
            return None
        if filter_fn is not None and not filter_fn(path, module):
            report.skipped[key] = "rejected by filter_fn"
            return None
        try:
            reason = fusion_bypasses(module, path)
            if reason is None and verify:
                reason = verify_block(module)
            if reason is not None:
                report.skipped[key] = reason
                return None
            cls = FusedInception if isinstance(parts, InceptionParts) else FusedBlock
            fused = cls.from_module(module, backend=backend, verify=False)
        except Exception as e:  # noqa: BLE001
            report.skipped[key] = f"{type(e).__name__}: {e}"
            return None
        moved = _move_hooks(module, fused)
        if moved:
            report.notes[key] = f"the block's own {', '.join(moved)} moved to the fused block"
        report.replaced.append(key)
        report.kinds[key] = parts.graph.kind
        return fused

    model, repeats = _replace_in_tree(model, swap)
    for path, first in repeats:  # later uses of one block instance share the first use's outcome
        if first in report.replaced:
            report.replaced.append(path)
            report.kinds[path] = report.kinds[first]
        elif first in report.skipped:
            report.skipped[path] = report.skipped[first]
        else:
            continue
        report.notes[path] = f"the same module instance as {first}"
    log.info("%s", report)
    if report.skipped:
        log.warning("fused_inception.convert skipped: %s", report.skipped)
    return (model, report) if return_report else model


def unconvert(model: nn.Module) -> nn.Module:
    """Replace, in place and recursively, every fused block (``FusedInception``, ``FusedBlock``)
    by a plain PyTorch block with the same submodules (parameters and buffers shared, not copied),
    hooks and train/eval mode: the block it was made from (by ``convert`` or ``from_module``), else
    a ``ReferenceInception`` or ``ReferenceBlock``. For export to other runtimes and for debugging.
    Returns the model (a new module if ``model`` is a fused block).
    """
    from .module import FusedInception, FusedModule

    def swap(path: str, module: nn.Module) -> nn.Module | None:
        if not isinstance(module, FusedModule):
            return None
        block = module.__dict__.get("_source_block")
        if block is None:
            cls = ReferenceInception if isinstance(module, FusedInception) else ReferenceBlock
            block = cls.__new__(cls)
            nn.Module.__init__(block)
            if cls is ReferenceInception:
                block.spec = module.spec
            else:
                block.graph = module.graph
        for name, child in module.named_children():
            setattr(block, name, child)
        _move_hooks(module, block)
        return block.train(module.training)

    return _replace_in_tree(model, swap)[0]
