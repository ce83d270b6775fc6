"""Reading a block's wiring from its code (``trace.trace_block``): every known block traces to its
declared graph, look-alikes trace to something else, and what the kernel cannot compute is named."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fused_inception.graph import FID_BLOCKS, INCEPTION_V3_BLOCKS, inception_e
from fused_inception.reference import ReferenceBlock, ReferenceInception
from fused_inception.spec import googlenet_spec
from fused_inception.structure import NotAnInceptionBlock
from fused_inception.trace import parse_block, trace_block

ALL_GRAPHS = {f"{name}-{g.kind}": g for name, (g, _) in {**INCEPTION_V3_BLOCKS, **{
    f"fid_{k}": v for k, v in FID_BLOCKS.items()}}.items()}


@pytest.mark.parametrize("name", sorted(ALL_GRAPHS))
def test_reference_blocks_trace_to_their_graph(name):
    graph = ALL_GRAPHS[name]
    traced = trace_block(ReferenceBlock(graph))
    assert traced.graph == graph  # names, channels, kernels, strides, paddings, pools, concat order, kind
    assert [u.path for u in traced.units] == [graph.nodes[i].name for i in graph.convs]


@pytest.mark.parametrize("variant", ["torchvision", "paper"])
def test_googlenet_blocks_trace_to_the_spec_graph(variant):
    spec = googlenet_spec("4e", variant)
    traced = trace_block(ReferenceInception(spec))
    assert traced.graph == spec.graph and traced.graph.kind == "googlenet"


class Unit(nn.Module):
    def __init__(self, cin, cout, **kw):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)


class E(nn.Module):
    """Inception-v3's E block wiring at small channels; ``swap`` feeds branch3x3_2a from the other
    384-channel-like map (the same modules, a different block); ``extra`` adds an op the kernel
    does not compute."""

    def __init__(self, swap=False, extra=None):
        super().__init__()
        self.swap, self.extra = swap, extra
        self.branch1x1 = Unit(4, 3, kernel_size=1)
        self.branch3x3_1 = Unit(4, 5, kernel_size=1)
        self.branch3x3_2a = Unit(5, 3, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = Unit(5, 3, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = Unit(4, 6, kernel_size=1)
        self.branch3x3dbl_2 = Unit(6, 5, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = Unit(5, 3, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = Unit(5, 3, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = Unit(4, 2, kernel_size=1)

    def forward(self, x):
        a = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        b3 = torch.cat([self.branch3x3_2a(d if self.swap else a), self.branch3x3_2b(a)], 1)
        bd = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pool = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1)
        if self.extra == "add":
            pool = pool + 1
        if self.extra == "gelu":
            return torch.cat([self.branch1x1(x), b3, bd, F.gelu(self.branch_pool(pool))], 1)
        if self.extra == "branch":
            if x.sum() > 0:
                return x
        if self.extra == "dim0":
            return torch.cat([self.branch1x1(x), self.branch_pool(pool)], 0)
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pool)], 1)


def test_e_block_wiring_is_read_from_the_code():
    g = trace_block(E()).graph
    assert g.kind == "E" and g.signature() == inception_e(4).signature()
    swapped = trace_block(E(swap=True)).graph
    assert swapped.kind == "custom"  # the same modules, another block
    with pytest.raises(NotAnInceptionBlock, match="none of the known Inception blocks"):
        parse_block(E(swap=True))


@pytest.mark.parametrize("extra, match", [
    ("add", "calls add"),
    ("gelu", "calls gelu"),
    ("branch", "cannot trace"),
    ("dim0", "along dim 0"),
], ids=["extra-op", "other-activation", "data-dependent-branch", "batch-concat"])
def test_what_the_kernel_cannot_compute_is_named(extra, match):
    with pytest.raises(NotAnInceptionBlock, match=match):
        trace_block(E(extra=extra))


class BareUnits(nn.Module):
    """Convs, BatchNorms and ReLUs as separate attributes of the block (no unit modules)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(4, 3, 1)
        self.c2 = nn.Conv2d(4, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(2)
        self.act = nn.ReLU()

    def forward(self, x):
        return torch.cat([self.c1(x), self.act(self.bn2(self.c2(F.max_pool2d(x, 3, 1, 1))))], 1)


def test_bare_convs_are_units_named_by_their_conv():
    traced = trace_block(BareUnits())
    g = traced.graph
    assert [g.nodes[i].name for i in g.convs] == ["c1", "c2"]
    c1, c2 = (g.nodes[i] for i in g.convs)
    assert (c1.bias, c1.batch_norm, c1.relu) == (True, False, False)
    assert (c2.bias, c2.batch_norm, c2.relu) == (False, True, True)
    assert traced.units[1].bn is traced.units[1].bn  # found, and the kind is not a known block
    assert g.kind == "custom"


def test_a_conv_read_before_its_batch_norm_is_not_a_unit():
    class Leak(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 3, 1)
            self.bn = nn.BatchNorm2d(3)

        def forward(self, x):
            y = self.conv(x)
            return torch.cat([self.bn(y), y], 1)

    with pytest.raises(NotAnInceptionBlock, match="only reader"):
        trace_block(Leak())
