"""``FusedBlock``: any Inception-family block (a ``BlockGraph``: Inception-v3's A-E, pytorch-fid's
FID variants) in one kernel launch, as a drop-in ``nn.Module``.

It shares everything but the structure with ``FusedInception`` (``module.FusedModule``): the
weight cache, the backend choice, the checks. Its structure is the ``BlockGraph`` traced from the
block it replaced (``trace.trace_block``); its units are found again by name on every structural
change, so a replaced submodule is seen, and one that no longer fits raises.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .graph import BlockGraph, Conv
from .module import FusedModule
from .ops import block_forward
from .packing import pack_graph, pack_graph_differentiable
from .reference import ReferenceBlock, block_reference
from .structure import ConvUnitParts, NotAnInceptionBlock
from .trace import TracedBlock, trace_block

__all__ = ["FusedBlock"]


class FusedBlock(FusedModule):
    """A block described by ``graph`` computed in one kernel launch.

    ``FusedBlock(graph)`` builds fresh units (``ReferenceBlock``'s, named as the graph's nodes:
    torchvision's keys for Inception-v3's graphs); ``FusedBlock.from_module(block)`` takes over an
    existing block's units. ``backend``: "auto", "reference" (the block's own forward, or the
    units through ``block_reference``), or "triton"; ``last_backend`` names what ran. As
    ``FusedInception``, "auto" runs the reference path where the fused one cannot give PyTorch's
    semantics (BatchNorm in training mode, ``torch.func``, meta tensors, submodule hooks).
    """

    def __init__(self, graph: BlockGraph, *, backend: str = "auto", device=None, dtype=None) -> None:
        super().__init__()
        block = ReferenceBlock(graph, device=device, dtype=dtype)
        for name, child in block.named_children():
            self.add_module(name, child)
        self.__dict__["_graph"] = graph
        self.__dict__["_bare_bns"] = {}
        self._setup(backend)

    @classmethod
    def from_module(cls, block: nn.Module, *, backend: str = "auto", verify: bool = True) -> FusedBlock:
        """A fused block that takes over ``block``'s submodules (shared, not copied), its wiring
        read by ``torch.fx`` (``trace.trace_block``). With ``verify=True`` the block's forward is
        first checked against that wiring on a float64 probe with random weights, in training and
        eval mode (``convert.verify_block``). Raises ``NotAnInceptionBlock`` naming what does not
        fit; ``ValueError`` when a submodule carries hooks or parametrizations the kernel would skip.
        """
        traced = trace_block(block)
        paths = {id(m): name for name, m in block.named_modules()}
        bare_bns = {u.path: paths[id(u.bn)] for u in traced.units
                    if u.bn is not None and u.conv is block.get_submodule(u.path)}
        return cls._take_over(block, backend, verify, _graph=traced.graph, _bare_bns=bare_bns)

    def extra_repr(self) -> str:
        g = self.graph
        return (f"{g.kind}: {g.in_channels} -> {g.out_channels}, {len(g.convs)} convs, "
                f"{len(g.nodes) - len(g.convs)} pools, backend={self.backend!r}")

    # -- the FusedModule interface -----------------------------------------------------------------
    def _parse(self) -> TracedBlock:
        """The units named by the graph, as they are now; the graph's units take their current
        bias, BatchNorm and eps (the wiring itself was read once, from the code)."""
        graph: BlockGraph = self.__dict__["_graph"]
        nodes, units = list(graph.nodes), []
        for i in graph.convs:
            node = graph.nodes[i]
            try:
                m = self.get_submodule(node.name)
            except AttributeError:
                raise NotAnInceptionBlock(f"unit {node.name!r} is gone") from None
            conv = m if isinstance(m, nn.Conv2d) else getattr(m, "conv", None)
            bn = getattr(m, "bn", None)
            if conv is m and node.name in self._bare_bns:  # a bare Conv2d: its BatchNorm lives elsewhere
                bn = self.get_submodule(self._bare_bns[node.name])
            if not isinstance(conv, nn.Conv2d) or (bn is not None and not isinstance(bn, nn.BatchNorm2d)):
                raise NotAnInceptionBlock(f"{node.name} is a {type(m).__name__}, not a conv unit")
            have = (conv.in_channels, conv.out_channels, tuple(conv.kernel_size), tuple(conv.stride),
                    tuple(conv.padding) if not isinstance(conv.padding, str) else conv.padding, conv.groups,
                    tuple(conv.dilation), conv.padding_mode)
            want = (node.cin, node.cout, node.kernel, node.stride, node.padding, 1, (1, 1), "zeros")
            if have != want:
                raise NotAnInceptionBlock(f"{node.name}: conv is {have}, the block's wiring needs {want}")
            if bn is not None and (bn.num_features != node.cout or bn.running_mean is None or not bn.eps > 0):
                raise NotAnInceptionBlock(f"{node.name}: BatchNorm2d does not fit (features, running stats, eps)")
            nodes[i] = Conv(node.name, node.src, node.cin, node.cout, node.kernel, node.stride, node.padding,
                            bias=conv.bias is not None, batch_norm=bn is not None,
                            bn_eps=bn.eps if bn is not None else node.bn_eps, relu=node.relu)
            units.append(ConvUnitParts(node.name, conv, bn, node.relu))
        return TracedBlock(BlockGraph(graph.kind, graph.in_channels, tuple(nodes), graph.outputs), tuple(units))

    def _pack(self, parts: TracedBlock, dtype: torch.dtype, differentiable: bool):
        return (pack_graph_differentiable if differentiable else pack_graph)(parts.graph, parts.tensors(), dtype)

    def _fused(self, x: torch.Tensor, parts: TracedBlock, packed, backend: str) -> torch.Tensor:
        return block_forward(x, *packed, parts.code, backend)

    def _reference(self, x: torch.Tensor, parts: TracedBlock) -> torch.Tensor:
        """The block's own forward where it came from one (its code, hooks on any submodule, and
        BatchNorm's batch statistics and running-stat updates), else the units' forwards wired by
        the graph."""
        source = self.__dict__.get("_source_block")
        if source is not None and all(source._modules.get(k) is v for k, v in self._modules.items()):
            source.training = self.training
            return source(x)
        graph = parts.graph
        of = dict(zip(graph.convs, parts.units))

        def unit(i: int, t: torch.Tensor) -> torch.Tensor:
            u = of[i]
            m = self.get_submodule(u.path)
            if m is not u.conv:  # a unit module (BasicConv2d): its forward is the unit
                return m(t)
            t = u.conv(t)
            t = u.bn(t) if u.bn is not None else t
            return F.relu(t) if u.relu else t

        return block_reference(x, graph, unit)
