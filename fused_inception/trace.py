"""Reading a block's wiring from its code: ``torch.fx`` traces the forward into a ``BlockGraph``.

Inception-v3's blocks (torchvision's and pytorch-fid's) keep their conv units as flat attributes
and do the pools and the concat as functional calls in ``forward``; in the E block either
384-channel map could feed ``branch3x3_2a``. Only the code says how the units are wired, so the
converter traces it. A trace is a claim about one path through ``forward`` (data-dependent
branches are invisible to it), which is why ``convert`` then checks the block on a random probe,
in eval and in training mode, before replacing it.
"""

from __future__ import annotations

import operator
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.operator_schemas import normalize_function

from .graph import BlockGraph, Conv, Pool
from .structure import ConvUnitParts, NotAnInceptionBlock

__all__ = ["TracedBlock", "trace_block", "KNOWN_KINDS", "block_kind", "parse_block", "probe_size"]

_LEAVES = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d)
_RELU = {F.relu, torch.relu, torch.relu_, F.relu_}
_MAX_POOL = {F.max_pool2d, torch.max_pool2d, torch._C._nn.max_pool2d_with_indices} | {
    f for f in (getattr(F, "_max_pool2d", None),) if f is not None}
_AVG_POOL = {F.avg_pool2d, torch._C._nn.avg_pool2d}


class _Tracer(fx.Tracer):
    """Leaves are the modules the kernel knows; everything else is traced through."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, _LEAVES) or super().is_leaf_module(m, qualname)


class TracedBlock:
    """A block's ``BlockGraph`` and its conv units (``units[j]`` is conv node ``graph.convs[j]``)."""

    def __init__(self, graph: BlockGraph, units: tuple[ConvUnitParts, ...]) -> None:
        self.graph = graph
        self.units = units
        self.code = graph.encode()  # the graph op's argument, built once, not per forward

    def tensors(self):
        return tuple(u.tensors() for u in self.units)

    def batch_norms(self) -> tuple[nn.BatchNorm2d, ...]:
        return tuple(u.bn for u in self.units if u.bn is not None)


def _pool_args(fn, node: fx.Node) -> dict:
    pair = normalize_function(fn, node.args, node.kwargs, normalize_to_only_use_kwargs=True)
    if pair is None:
        raise NotAnInceptionBlock(f"cannot read the arguments of {node.format_node()}")
    return pair.kwargs


def _as_pool(kind: str, src: int, args: dict, where: str) -> Pool:
    k = args["kernel_size"]
    stride = args.get("stride") or k  # PyTorch: stride None or [] means the kernel size
    if kind == "max":
        if args.get("return_indices") or args.get("dilation", 1) not in (1, (1, 1), [1, 1]):
            raise NotAnInceptionBlock(f"{where}: max-pool with indices or dilation")
        return Pool(src, "max", k, stride, args.get("padding", 0), ceil_mode=bool(args.get("ceil_mode")), name=where)
    if args.get("divisor_override") is not None:
        raise NotAnInceptionBlock(f"{where}: avg-pool with divisor_override")
    return Pool(src, "avg", k, stride, args.get("padding", 0), ceil_mode=bool(args.get("ceil_mode")),
                count_include_pad=bool(args.get("count_include_pad", True)), name=where)


def _conv_node(path: str, conv: nn.Conv2d, src: int) -> Conv:
    if conv.groups != 1 or tuple(conv.dilation) != (1, 1) or conv.padding_mode != "zeros":
        raise NotAnInceptionBlock(f"{path}: groups {conv.groups}, dilation {tuple(conv.dilation)}, "
                                  f"padding_mode {conv.padding_mode!r} (the kernel does groups 1, dilation 1, zeros)")
    pad = conv.padding
    if pad == "same":
        if tuple(conv.stride) != (1, 1) or any(k % 2 == 0 for k in conv.kernel_size):
            raise NotAnInceptionBlock(f"{path}: padding='same' with an even kernel or a stride")
        pad = tuple(k // 2 for k in conv.kernel_size)
    elif pad == "valid":
        pad = (0, 0)
    return Conv(path, src, conv.in_channels, conv.out_channels, tuple(conv.kernel_size), tuple(conv.stride),
                tuple(pad), bias=conv.bias is not None, batch_norm=False, relu=False)


def trace_block(block: nn.Module, path: str = "") -> TracedBlock:
    """The block's wiring as a ``BlockGraph``, or ``NotAnInceptionBlock`` saying what does not fit.

    Accepted: one input; conv units (a ``Conv2d``, then optionally its ``BatchNorm2d``, then
    optionally ReLU, each step the only reader of the one before); max and avg pools; and
    concatenations along channels, nested or not, which make the block's output.
    """
    where = path or type(block).__name__
    try:
        gm = fx.GraphModule(block, _Tracer().trace(block))
    except Exception as e:  # noqa: BLE001 - any failure to trace means "cannot read its wiring"
        raise NotAnInceptionBlock(f"{where}: torch.fx cannot trace its forward ({type(e).__name__}: {e})") from None
    modules = dict(block.named_modules())
    nodes: list[Conv | Pool] = []
    value: dict[fx.Node, int | tuple] = {}  # fx value -> node index (-1 for x), or a tuple for a concat
    info: dict[int, dict] = {}  # conv node index -> its conv, BN and ReLU as found
    open_units: set[int] = set()  # conv units still taking a BN / ReLU (nothing has read them yet)
    inputs = 0

    def src_of(arg, what: str) -> int:
        v = value.get(arg) if isinstance(arg, fx.Node) else None
        if not isinstance(v, int):
            raise NotAnInceptionBlock(f"{where}: {what} reads {arg}, which is not a conv unit's, pool's or the "
                                      "input's map")
        open_units.discard(v)  # read by something: the unit is complete
        return v

    def extend(arg, step: str, n: fx.Node) -> bool:
        """Attach a BN or ReLU to the open unit ``arg`` comes from, if it is its only reader."""
        v = value.get(arg) if isinstance(arg, fx.Node) else None
        if v not in open_units or len(arg.users) != 1:
            return False
        unit = info[v]
        if step in unit or (step == "bn" and "relu" in unit):
            return False
        unit[step] = n
        unit["fx"].append(n)
        value[n] = v
        return True

    for n in gm.graph.nodes:
        if n.op == "placeholder":
            inputs += 1
            value[n] = -1
            if inputs > 1:
                raise NotAnInceptionBlock(f"{where}: forward takes more than one input")
        elif n.op == "call_module":
            m = modules.get(n.target)
            if isinstance(m, nn.Conv2d):
                nodes.append(_conv_node(n.target, m, src_of(n.args[0], n.target)))
                value[n] = len(nodes) - 1
                info[len(nodes) - 1] = {"conv": m, "name": n.target, "fx": [n]}
                open_units.add(len(nodes) - 1)
            elif isinstance(m, nn.BatchNorm2d):
                if not extend(n.args[0], "bn", n):
                    raise NotAnInceptionBlock(f"{where}: {n.target} does not follow a conv as its only reader")
                info[value[n]]["bn_module"] = m
            elif isinstance(m, nn.ReLU):
                if not extend(n.args[0], "relu", n):
                    raise NotAnInceptionBlock(f"{where}: {n.target} does not follow a conv unit as its only reader")
            elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
                kind = "max" if isinstance(m, nn.MaxPool2d) else "avg"
                args = {"kernel_size": m.kernel_size, "stride": m.stride, "padding": m.padding,
                        "ceil_mode": m.ceil_mode}
                if kind == "max":
                    args |= {"dilation": m.dilation, "return_indices": m.return_indices}
                else:
                    args |= {"count_include_pad": m.count_include_pad, "divisor_override": m.divisor_override}
                nodes.append(_as_pool(kind, src_of(n.args[0], n.target), args, n.target))
                value[n] = len(nodes) - 1
            else:
                raise NotAnInceptionBlock(f"{where}: calls {n.target} ({type(m).__name__}), which the kernel "
                                          "does not compute")
        elif n.op in ("call_function", "call_method"):
            fn = n.target
            if fn in _RELU or fn == "relu" or fn == "relu_":
                if not extend(n.args[0] if n.args else n.kwargs.get("input"), "relu", n):
                    raise NotAnInceptionBlock(f"{where}: a ReLU ({n.name}) that does not end a conv unit")
            elif fn in _MAX_POOL or fn in _AVG_POOL:
                kind = "max" if fn in _MAX_POOL else "avg"
                args = _pool_args(fn, n)
                nodes.append(_as_pool(kind, src_of(args["input"], n.name), args, n.name))
                value[n] = len(nodes) - 1
            elif fn is torch.cat:
                pair = normalize_function(fn, n.args, n.kwargs, normalize_to_only_use_kwargs=True)
                dim = pair.kwargs.get("dim", 0) if pair else None
                if dim not in (1, -3):
                    raise NotAnInceptionBlock(f"{where}: torch.cat along dim {dim}, not channels")
                parts: tuple = ()
                for t in pair.kwargs["tensors"]:
                    v = value.get(t) if isinstance(t, fx.Node) else None
                    if isinstance(v, tuple):
                        parts += v
                    else:
                        parts += (src_of(t, n.name),)
                value[n] = parts
            elif fn is operator.getitem:
                raise NotAnInceptionBlock(f"{where}: indexes a value ({n.format_node()})")
            else:
                raise NotAnInceptionBlock(f"{where}: calls {getattr(fn, '__name__', fn)}, which the kernel does not "
                                          "compute")
        elif n.op == "output":
            out = value.get(n.args[0]) if isinstance(n.args[0], fx.Node) else None
            if not isinstance(out, tuple) or len(out) < 2:
                raise NotAnInceptionBlock(f"{where}: its output is not a channel concat of branches")
            outputs = out
        else:  # get_attr: a tensor of the block used directly
            raise NotAnInceptionBlock(f"{where}: uses {n.target} directly ({n.op})")
    final: list[Conv | Pool] = []
    units: list[ConvUnitParts] = []
    for i, node in enumerate(nodes):
        if isinstance(node, Conv):
            u = info[i]
            bn = u.get("bn_module")
            if bn is not None:
                if bn.num_features != node.cout or not bn.track_running_stats or bn.running_mean is None:
                    raise NotAnInceptionBlock(f"{where}: {u['name']}'s BatchNorm2d has {bn.num_features} features "
                                              "or no running statistics")
                if not bn.eps > 0:
                    raise NotAnInceptionBlock(f"{where}: {u['name']}: BatchNorm2d eps={bn.eps!r}; "
                                              "folding needs eps > 0")
            u["name"] = _unit_name(gm, u)
            node = Conv(u["name"], node.src, node.cin, node.cout, node.kernel, node.stride, node.padding,
                        bias=node.bias, batch_norm=bn is not None, bn_eps=bn.eps if bn is not None else 1e-3,
                        relu="relu" in u)
            units.append(ConvUnitParts(u["name"], u["conv"], bn, "relu" in u))
        final.append(node)
    try:
        graph = BlockGraph("custom", _in_channels(final), tuple(final), outputs)
        graph = replace(graph, kind=block_kind(graph))
    except ValueError as e:
        raise NotAnInceptionBlock(f"{where}: {e}") from None
    kinds = {(t.dtype, t.device) for u in units for t in (*u.conv.parameters(), *(u.bn.parameters() if u.bn else ()))}
    if len(kinds) > 1:
        raise NotAnInceptionBlock(f"{where}: parameters mix dtypes/devices {sorted(f'{d}@{v}' for d, v in kinds)}")
    return TracedBlock(graph, tuple(units))


def _unit_name(gm: fx.GraphModule, unit: dict) -> str:
    """The path of the module whose one call is exactly this conv unit (a BasicConv2d-style
    wrapper: calling it runs the unit, hooks included), else the conv's own path."""
    stacks = [list((n.meta.get("nn_module_stack") or {}).keys()) for n in unit["fx"]]
    common = [k for k in stacks[0] if all(k in s for s in stacks[1:])]
    conv_path = unit["fx"][0].target
    for key in reversed(common):
        if key == conv_path:
            continue
        inside = [n for n in gm.graph.nodes if key in (n.meta.get("nn_module_stack") or {})]
        if inside == unit["fx"]:
            return key
        break
    return conv_path


def _in_channels(nodes: list[Conv | Pool]) -> int:
    cins = {n.cin for n in nodes if isinstance(n, Conv) and n.src < 0}
    if len(cins) != 1:
        raise NotAnInceptionBlock(f"the convs reading the input disagree on its channels ({sorted(cins)})")
    return cins.pop()


def _known_kinds() -> dict[tuple, str]:
    from .graph import inception_a, inception_b, inception_c, inception_d, inception_e
    from .spec import InceptionSpec

    graphs = [inception_a(8, 4), inception_a(8, 4, fid=True), inception_b(8), inception_c(8, 4),
              inception_c(8, 4, fid=True), inception_d(8), inception_e(8), inception_e(8, "avg_exclude_pad"),
              inception_e(8, "max"), InceptionSpec.torchvision(8, 1, 1, 1, 1, 1, 1).graph,
              InceptionSpec.paper(8, 1, 1, 1, 1, 1, 1).graph]
    return {g.signature(): g.kind for g in graphs}


KNOWN_KINDS = _known_kinds()


def block_kind(graph: BlockGraph) -> str:
    """The name of the known block whose wiring ``graph`` has ("A", "fid-E2", "googlenet", ...),
    else "custom"."""
    return KNOWN_KINDS.get(graph.signature(), "custom")


def parse_block(block: nn.Module, path: str = ""):
    """The parts of any block the fused kernels compute: GoogLeNet's by its module structure
    (``structure.parse_inception``), else a known Inception-family graph read from the code
    (``trace_block``). Raises ``NotAnInceptionBlock`` with both reasons."""
    from .structure import parse_inception

    try:
        return parse_inception(block, path)
    except NotAnInceptionBlock as e:
        first = e
    traced = trace_block(block, path)
    if traced.graph.kind == "custom":
        raise NotAnInceptionBlock(f"{path or type(block).__name__}: not GoogLeNet's block ({first}), and its traced "
                                  "wiring is none of the known Inception blocks (GoogLeNet, Inception-v3 A-E, "
                                  "pytorch-fid's FID variants)")
    return traced


def probe_size(graph: BlockGraph) -> tuple[int, int]:
    """A small input size valid for ``graph`` (odd and unequal sides, so a transposed map shows)."""
    for hw in ((6, 7), (9, 11), (15, 17), (23, 25)):
        try:
            graph.out_size(*hw)
            return hw
        except ValueError:
            continue
    raise NotAnInceptionBlock(f"{graph.kind} block: no small input size fits it")
