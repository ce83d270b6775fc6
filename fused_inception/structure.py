"""Recognising an Inception block by its structure (never by class or attribute names)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torch.nn.utils import parametrize

from .graph import BlockGraph
from .spec import InceptionSpec, UnitTensors

__all__ = ["NotAnInceptionBlock", "ConvUnitParts", "InceptionParts", "fusion_bypasses", "parse_inception"]


class NotAnInceptionBlock(ValueError):
    """A module whose structure does not fit the Inception block; the message names the part."""


@dataclass(frozen=True)
class ConvUnitParts:
    """One conv unit found in a block: Conv2d, optional BatchNorm2d, ReLU or not."""

    path: str
    conv: nn.Conv2d
    bn: nn.BatchNorm2d | None
    relu: bool

    @property
    def kernel_size(self) -> int:
        return self.conv.kernel_size[0]

    def tensors(self) -> UnitTensors:
        bn = self.bn
        if bn is None:
            return UnitTensors(self.conv.weight, self.conv.bias)
        return UnitTensors(self.conv.weight, self.conv.bias, bn.weight, bn.bias,
                           bn.running_mean, bn.running_var, bn.eps)


@dataclass(frozen=True)
class InceptionParts:
    """The six conv units and the pool of a block, in branch order."""

    branch_names: tuple[str, str, str, str]
    units: tuple[ConvUnitParts, ...]  # 1x1, 3x3-reduce, 3x3, 5x5-reduce, 5x5, pool-proj
    pool: nn.MaxPool2d
    spec: InceptionSpec
    graph: BlockGraph  # spec.graph, built once here: a forward (and torch.compile) only reads it

    def tensors(self) -> tuple[UnitTensors, ...]:
        return tuple(u.tensors() for u in self.units)

    def batch_norms(self) -> tuple[nn.BatchNorm2d, ...]:
        return tuple(u.bn for u in self.units if u.bn is not None)


_HOOK_DICTS = ("_forward_pre_hooks", "_forward_hooks", "_backward_pre_hooks", "_backward_hooks")


def hook_dicts(modules) -> list:
    """The per-module hook tables that a fused forward would never run (forward and backward hooks
    and pre-hooks: user hooks, and legacy ``weight_norm``, ``spectral_norm`` and pruning, which
    recompute ``weight`` in a pre-hook)."""
    return [getattr(m, name) for m in modules for name in _HOOK_DICTS]


def fusion_bypasses(block: nn.Module, path: str = "") -> str | None:
    """What a fused forward of ``block`` would silently skip inside it, or None.

    The fused kernel reads the conv and BatchNorm tensors directly and never calls the submodules,
    so their hooks and parametrizations would not run. Hooks on ``block`` itself are not listed:
    the fused module runs those (``convert`` carries them over).
    """
    found = []
    for name, m in block.named_modules(prefix=path):
        if m is block:
            continue
        hooks = [h for h in _HOOK_DICTS if getattr(m, h)]
        if hooks:
            kinds = sorted({type(v).__name__ for h in hooks for v in getattr(m, h).values()})
            found.append(f"{name} has {', '.join(h.strip('_').replace('_', ' ') for h in hooks)} "
                         f"({', '.join(kinds)})")
        if parametrize.is_parametrized(m):
            found.append(f"{name} is parametrized ({', '.join(m.parametrizations.keys())}: "
                         "torch.nn.utils.parametrize)")
    if not found:
        return None
    return "the fused kernel would bypass " + "; ".join(found)


# A flattened branch is a list of (path, module) with module a Conv2d, BatchNorm2d, ReLU or
# MaxPool2d; a unit-style module (``.conv`` [+ ``.bn``] whose forward applies ReLU, like
# torchvision's BasicConv2d) contributes its conv, its bn and an implied ReLU (None module).
def _flatten(module: nn.Module, path: str) -> list[tuple[str, nn.Module | None]]:
    if isinstance(module, (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d)):
        return [(path, module)]
    if isinstance(module, nn.Sequential):
        out = []
        for name, child in module.named_children():
            out += _flatten(child, f"{path}.{name}")
        return out
    children = dict(module.named_children())
    conv = children.get("conv")
    if isinstance(conv, nn.Conv2d):
        bn = children.get("bn")
        extra = set(children) - {"conv", "bn"}
        if bn is not None and not isinstance(bn, nn.BatchNorm2d):
            raise NotAnInceptionBlock(f"{path}.bn is a {type(bn).__name__}, expected BatchNorm2d")
        if extra:
            raise NotAnInceptionBlock(f"{path} has unexpected submodules {sorted(extra)}")
        relu = module.relu if isinstance(getattr(module, "relu", None), bool) else True
        out = [(f"{path}.conv", conv)]
        if bn is not None:
            out.append((f"{path}.bn", bn))
        if relu:
            out.append((f"{path}(relu)", None))
        return out
    raise NotAnInceptionBlock(
        f"{path} is a {type(module).__name__}: expected Conv2d, BatchNorm2d, ReLU, MaxPool2d, "
        "nn.Sequential of those, or a conv unit with .conv [and .bn]")


def _units(ops: list[tuple[str, nn.Module | None]], branch: str) -> list[ConvUnitParts]:
    units, i = [], 0
    while i < len(ops):
        path, conv = ops[i]
        if not isinstance(conv, nn.Conv2d):
            raise NotAnInceptionBlock(f"{path} is a {type(conv).__name__} where a Conv2d was expected")
        i += 1
        bn = None
        if i < len(ops) and isinstance(ops[i][1], nn.BatchNorm2d):
            bn = ops[i][1]
            i += 1
        relu = False
        if i < len(ops) and (ops[i][1] is None or isinstance(ops[i][1], nn.ReLU)):
            relu = True
            i += 1
        units.append(ConvUnitParts(path.removesuffix(".conv"), conv, bn, relu))
    return units


def _check_conv(u: ConvUnitParts, in_channels: int, kernel: int | None) -> None:
    c = u.conv
    k = c.kernel_size
    if k[0] != k[1] or k[0] % 2 == 0:
        raise NotAnInceptionBlock(f"{u.path}: kernel {tuple(k)} is not square and odd")
    if kernel is not None and k[0] != kernel:
        raise NotAnInceptionBlock(f"{u.path}: expected a {kernel}x{kernel} conv, got {k[0]}x{k[1]}")
    pad = c.padding if c.padding != "same" else (k[0] // 2, k[1] // 2)
    if tuple(c.stride) != (1, 1) or tuple(c.dilation) != (1, 1) or c.groups != 1:
        raise NotAnInceptionBlock(f"{u.path}: expected stride 1, dilation 1, groups 1, got "
                                  f"stride {tuple(c.stride)}, dilation {tuple(c.dilation)}, groups {c.groups}")
    if tuple(pad) != (k[0] // 2, k[1] // 2) or c.padding_mode != "zeros":
        raise NotAnInceptionBlock(f"{u.path}: expected zero padding {k[0] // 2} ('same'), got "
                                  f"{c.padding} with padding_mode={c.padding_mode!r}")
    if c.in_channels != in_channels:
        raise NotAnInceptionBlock(f"{u.path}: expected {in_channels} input channels, got {c.in_channels}")
    if u.bn is not None:
        bn = u.bn
        if bn.num_features != c.out_channels:
            raise NotAnInceptionBlock(f"{u.path}: BatchNorm2d has {bn.num_features} features, "
                                      f"the conv {c.out_channels} channels")
        if not bn.track_running_stats or bn.running_mean is None:
            raise NotAnInceptionBlock(f"{u.path}: BatchNorm2d without running statistics cannot be folded")
        if not bn.eps > 0:
            raise NotAnInceptionBlock(f"{u.path}: BatchNorm2d eps={bn.eps!r}; folding needs eps > 0")


def _branch(block_path: str, name: str, module: nn.Module, pool_first: bool) -> tuple[nn.MaxPool2d | None, list]:
    ops = _flatten(module, f"{block_path}{name}")
    pool = None
    if pool_first:
        if not ops or not isinstance(ops[0][1], nn.MaxPool2d):
            raise NotAnInceptionBlock(f"{block_path}{name}: the fourth branch must start with a MaxPool2d")
        path, pool = ops[0]
        ks, st, pd, dl = (pool.kernel_size, pool.stride, pool.padding, pool.dilation)
        as2 = (lambda v: (v, v) if isinstance(v, int) else tuple(v))
        if (as2(ks), as2(st), as2(pd), as2(dl)) != ((3, 3), (1, 1), (1, 1), (1, 1)) or pool.return_indices:
            raise NotAnInceptionBlock(f"{path}: expected MaxPool2d(3, stride=1, padding=1), got {pool}")
        ops = ops[1:]
    return pool, _units(ops, name)


def parse_inception(block: nn.Module, path: str = "") -> InceptionParts:
    """Find the six conv units of an Inception block, or raise ``NotAnInceptionBlock`` naming the part."""
    prefix = f"{path}." if path else ""
    children = list(block.named_children())
    if len(children) != 4:
        raise NotAnInceptionBlock(f"{path or type(block).__name__}: expected 4 branches, found {len(children)}")
    if any(True for _ in block.named_parameters(recurse=False)) or any(
            n for n, _ in block.named_buffers(recurse=False)):
        raise NotAnInceptionBlock(f"{path or type(block).__name__}: has parameters or buffers of its own")
    names = tuple(n for n, _ in children)
    parsed = [_branch(prefix, n, m, pool_first=(i == 3)) for i, (n, m) in enumerate(children)]
    counts = [len(units) for _, units in parsed]
    if counts != [1, 2, 2, 1]:
        raise NotAnInceptionBlock(f"{path or type(block).__name__}: expected 1, 2, 2 and 1 conv units "
                                  f"per branch, found {counts}")
    (_, (b1,)), (_, (r3, c3)), (_, (r5, c5)), (pool, (pp,)) = parsed
    cin = b1.conv.in_channels
    for u, cin_u, k in ((b1, cin, 1), (r3, cin, 1), (c3, r3.conv.out_channels, None),
                        (r5, cin, 1), (c5, r5.conv.out_channels, None), (pp, cin, 1)):
        _check_conv(u, cin_u, k)
    units = (b1, r3, c3, r5, c5, pp)

    def uniform(what: str, values: list) -> object:
        if len(set(values)) != 1:
            detail = ", ".join(f"{u.path}={v}" for u, v in zip(units, values))
            raise NotAnInceptionBlock(f"{path or type(block).__name__}: {what} differs between units ({detail})")
        return values[0]

    has_bn = uniform("BatchNorm presence", [u.bn is not None for u in units])
    relu = uniform("ReLU presence", [u.relu for u in units])
    bias = uniform("conv bias presence", [u.conv.bias is not None for u in units])
    eps = uniform("BatchNorm eps", [u.bn.eps for u in units]) if has_bn else 1e-3
    kinds = {(t.dtype, t.device) for u in units
             for t in (*u.conv.parameters(), *(u.bn.parameters() if u.bn else ()))}
    if len(kinds) != 1:
        raise NotAnInceptionBlock(f"{path or type(block).__name__}: parameters mix dtypes/devices "
                                  f"{sorted(f'{d}@{v}' for d, v in kinds)}")
    spec = InceptionSpec(cin, b1.conv.out_channels, r3.conv.out_channels, c3.conv.out_channels,
                         r5.conv.out_channels, c5.conv.out_channels, pp.conv.out_channels,
                         k3=c3.kernel_size, k5=c5.kernel_size, bias=bias, batch_norm=has_bn,
                         bn_eps=eps, relu=relu)
    return InceptionParts(names, units, pool, spec, spec.graph)

