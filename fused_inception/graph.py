"""The declarative block graph: one frozen description of an Inception-family block that the
kernel, the reference, the module, the converter and the benchmarks all read.

A block is a list of nodes in topological order. Each node reads one map: the block input
(``src=-1``) or an earlier node's output. A node is a conv unit (``Conv``: conv [+ bias]
[+ BatchNorm] [+ ReLU], any (kh, kw), stride and padding) or a pool (``Pool``: max or avg). The
block's output is the concat of ``outputs``, in that order. Chains are nodes reading nodes,
splits are two nodes reading one node (Inception-v3's E block), pool heads are a ``Pool`` read by
a ``Conv``, and a pool without projection (B and D) is a ``Pool`` in ``outputs``.

Constructors: ``InceptionSpec.graph`` (GoogLeNet, paper and torchvision), ``inception_a`` ..
``inception_e`` (torchvision's Inception-v3 blocks and pytorch-fid's FID variants), and
``BlockGraph.decode`` (the op's compact argument, ``BlockGraph.encode``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

__all__ = ["Conv", "Pool", "BlockGraph", "inception_a", "inception_b", "inception_c", "inception_d",
           "inception_e", "INCEPTION_V3_BLOCKS", "FID_BLOCKS", "inception_v3_graph"]

Pair = tuple[int, int]


def _pair(v) -> Pair:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


@dataclass(frozen=True)
class Conv:
    """A conv unit. ``name`` is its submodule path in the block (its ``state_dict`` prefix)."""

    name: str
    src: int
    cin: int
    cout: int
    kernel: Pair = (1, 1)
    stride: Pair = (1, 1)
    padding: Pair = (0, 0)
    bias: bool = False
    batch_norm: bool = True
    bn_eps: float = 1e-3
    relu: bool = True

    def __post_init__(self) -> None:
        for f in ("kernel", "stride", "padding"):
            object.__setattr__(self, f, _pair(getattr(self, f)))

    @property
    def taps(self) -> int:
        return self.kernel[0] * self.kernel[1]


@dataclass(frozen=True)
class Pool:
    """A pool: ``kind`` "max" or "avg"; ``count_include_pad`` matters for "avg" only."""

    src: int
    kind: str
    kernel: Pair = (3, 3)
    stride: Pair = (1, 1)
    padding: Pair = (1, 1)
    count_include_pad: bool = True
    ceil_mode: bool = False
    name: str = ""

    def __post_init__(self) -> None:
        for f in ("kernel", "stride", "padding"):
            object.__setattr__(self, f, _pair(getattr(self, f)))
        if self.kind not in ("max", "avg"):
            raise ValueError(f"Pool.kind must be 'max' or 'avg', got {self.kind!r}")


def _out_len(size: int, k: int, s: int, p: int, ceil: bool) -> int:
    """PyTorch's output length of a conv or pool (dilation 1)."""
    span = size + 2 * p - k
    if span < 0:
        return 0
    out = (span + (s - 1 if ceil else 0)) // s + 1
    if ceil and (out - 1) * s >= size + p:  # the last window must start inside the input or left pad
        out -= 1
    return out


@dataclass(frozen=True)
class BlockGraph:
    """An Inception-family block: ``nodes`` in topological order, output = concat of ``outputs``."""

    kind: str
    in_channels: int
    nodes: tuple[Conv | Pool, ...]
    outputs: tuple[int, ...]
    _channels: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.in_channels, bool) or not isinstance(self.in_channels, int) or self.in_channels < 1:
            raise ValueError(f"BlockGraph.in_channels must be a positive int, got {self.in_channels!r}")
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        chans: list[int] = []
        for i, node in enumerate(self.nodes):
            where = f"BlockGraph node {i} ({node.name or type(node).__name__})"
            if not -1 <= node.src < i:
                raise ValueError(f"{where}: src={node.src} must name the input (-1) or an earlier node")
            src_c = self.in_channels if node.src < 0 else chans[node.src]
            if any(k < 1 for k in node.kernel) or any(s < 1 for s in node.stride) or any(p < 0 for p in node.padding):
                raise ValueError(f"{where}: kernel {node.kernel}, stride {node.stride}, padding {node.padding}")
            if isinstance(node, Conv):
                for f in ("cin", "cout"):
                    v = getattr(node, f)
                    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                        raise ValueError(f"{where}: {f} must be a positive int, got {v!r}")
                if node.cin != src_c:
                    raise ValueError(f"{where}: reads a {src_c}-channel map but has cin={node.cin}")
                if node.batch_norm and not node.bn_eps > 0:
                    raise ValueError(f"{where}: bn_eps must be > 0, got {node.bn_eps!r}")
                chans.append(node.cout)
            else:
                if any(2 * p > k for p, k in zip(node.padding, node.kernel)):
                    raise ValueError(f"{where}: pad {node.padding} must be at most half the kernel {node.kernel}")
                chans.append(src_c)
        if not self.outputs or len(set(self.outputs)) != len(self.outputs) or not all(
                0 <= i < len(self.nodes) for i in self.outputs):
            raise ValueError(f"BlockGraph.outputs {self.outputs} must be distinct node indices")
        object.__setattr__(self, "_channels", tuple(chans))

    # -- shape ----------------------------------------------------------------------------------
    def channels(self, i: int) -> int:
        """Channels of node ``i``'s map (-1: the block input)."""
        return self.in_channels if i < 0 else self._channels[i]

    @property
    def out_channels(self) -> int:
        return sum(self._channels[i] for i in self.outputs)

    @property
    def convs(self) -> tuple[int, ...]:
        """Indices of the conv nodes, in node order (the order of packed weights)."""
        return tuple(i for i, n in enumerate(self.nodes) if isinstance(n, Conv))

    def readers(self, i: int) -> tuple[int, ...]:
        """The nodes that read node ``i``'s map."""
        return tuple(j for j, n in enumerate(self.nodes) if n.src == i)

    def map_sizes(self, h: int, w: int) -> tuple[Pair, ...]:
        """(H, W) of every node's map for an (h, w) input."""
        sizes: list[Pair] = []
        for node in self.nodes:
            hi, wi = (h, w) if node.src < 0 else sizes[node.src]
            ceil = isinstance(node, Pool) and node.ceil_mode
            sizes.append(tuple(_out_len(v, k, s, p, ceil)
                               for v, k, s, p in zip((hi, wi), node.kernel, node.stride, node.padding)))
        return tuple(sizes)

    def out_size(self, h: int, w: int) -> Pair:
        """(H, W) of the output for an (h, w) input; ValueError when the input is too small or the
        branches disagree."""
        sizes = self.map_sizes(h, w)
        for i, size in enumerate(sizes):
            if size[0] < 1 or size[1] < 1:
                raise ValueError(f"{self.kind} block: a {h}x{w} input is too small "
                                 f"({self.nodes[i].name or f'node {i}'} would be {size[0]}x{size[1]})")
        first = sizes[self.outputs[0]]
        if any(sizes[i] != first for i in self.outputs):
            raise ValueError(f"{self.kind} block: its branches give different map sizes "
                             f"{[sizes[i] for i in self.outputs]} for a {h}x{w} input")
        return first

    def macs(self, n: int, h: int, w: int) -> int:
        """The block's minimum multiply-accumulates (the convs' work; pools are not tensor-core
        work). Divided by n*h*w of a stride-1 block it is also its weight count."""
        sizes = self.map_sizes(h, w)
        return sum(n * sizes[i][0] * sizes[i][1] * self.nodes[i].taps * self.nodes[i].cin * self.nodes[i].cout
                   for i in self.convs)

    @property
    def weight_count(self) -> int:
        return sum(self.nodes[i].taps * self.nodes[i].cin * self.nodes[i].cout for i in self.convs)

    @property
    def relu(self) -> bool:
        """Whether every conv applies ReLU (the GoogLeNet op's single flag)."""
        return all(self.nodes[i].relu for i in self.convs)

    # -- structure ------------------------------------------------------------------------------
    def signature(self) -> tuple:
        """The wiring without channel counts, names and BatchNorm settings: what a block's kind is.
        Independent of the order the nodes were listed (traced) in: nodes are numbered as the
        outputs reach them, each after its source; a node no output depends on makes it differ."""
        number: dict[int, int] = {-1: -1}
        order: list[int] = []

        def visit(i: int) -> None:
            if i not in number:
                visit(self.nodes[i].src)
                number[i] = len(order)
                order.append(i)

        for i in self.outputs:
            visit(i)

        def what(n: Conv | Pool) -> tuple:
            if isinstance(n, Conv):
                return ("conv", n.kernel, n.stride, n.padding)
            return (n.kind, n.kernel, n.stride, n.padding, n.count_include_pad and n.kind == "avg",
                    n.ceil_mode and n.stride != (1, 1))

        return (tuple((number[self.nodes[i].src], what(self.nodes[i])) for i in order),
                tuple(number[i] for i in self.outputs), len(order) == len(self.nodes))

    def with_units(self, **unit) -> BlockGraph:
        """The same graph with every conv's ``bias``/``batch_norm``/``bn_eps``/``relu`` replaced."""
        nodes = tuple(replace(n, **unit) if isinstance(n, Conv) else n for n in self.nodes)
        return BlockGraph(self.kind, self.in_channels, nodes, self.outputs)

    # -- the op's compact argument --------------------------------------------------------------
    # Per node 12 ints: type (0 conv, 1 max-pool, 2 avg-pool), src, channels (cout for a conv),
    # kh, kw, sh, sw, ph, pw, relu (conv) / count_include_pad (avg), ceil_mode (pool), 0.
    # Then the outputs. Layout: [in_channels, n_nodes, n_outputs, nodes..., outputs...].
    NODE_INTS = 12

    def encode(self) -> list[int]:
        out = [self.in_channels, len(self.nodes), len(self.outputs)]
        for n in self.nodes:
            if isinstance(n, Conv):
                out += [0, n.src, n.cout, *n.kernel, *n.stride, *n.padding, int(n.relu), 0, 0]
            else:
                out += [1 if n.kind == "max" else 2, n.src, 0, *n.kernel, *n.stride, *n.padding,
                        int(n.count_include_pad), int(n.ceil_mode), 0]
        return out + list(self.outputs)

    @classmethod
    def decode(cls, code: list[int]) -> BlockGraph:
        """The graph ``encode`` gave (names are node indices; BatchNorm is folded by then)."""
        try:
            cin, count, n_out = code[:3]
            body = code[3:3 + count * cls.NODE_INTS]
            outputs = tuple(code[3 + count * cls.NODE_INTS:])
            if len(body) != count * cls.NODE_INTS or len(outputs) != n_out:
                raise ValueError("length")
            nodes: list[Conv | Pool] = []
            chans = []
            for i in range(count):
                t, src, c, kh, kw, sh, sw, ph, pw, flag, ceil, _ = body[i * cls.NODE_INTS:(i + 1) * cls.NODE_INTS]
                src_c = cin if src < 0 else chans[src]
                if t == 0:
                    nodes.append(Conv(f"conv{i}", src, src_c, c, (kh, kw), (sh, sw), (ph, pw), bias=True,
                                      batch_norm=False, relu=bool(flag)))
                    chans.append(c)
                elif t in (1, 2):
                    nodes.append(Pool(src, "max" if t == 1 else "avg", (kh, kw), (sh, sw), (ph, pw),
                                      count_include_pad=bool(flag), ceil_mode=bool(ceil), name=f"pool{i}"))
                    chans.append(src_c)
                else:
                    raise ValueError(f"node type {t}")
        except (ValueError, IndexError, TypeError) as e:
            raise ValueError(f"not an encoded block graph ({e}): {code}") from None
        return cls("encoded", cin, tuple(nodes), outputs)


# -- Inception-v3 (torchvision) and pytorch-fid's variants ---------------------------------------
def _graph(kind: str, cin: int, rows, outputs) -> BlockGraph:
    """A graph from rows ``(name, src name or None for x, cout, kernel=1, stride=1, padding=0)``
    for convs and ``(name, src, "max"|"avg", kernel, stride, padding, count_include_pad)`` for pools."""
    nodes: list[Conv | Pool] = []
    index: dict[str, int] = {}
    chans: dict[int, int] = {-1: cin}
    for name, src, *rest in rows:
        s = -1 if src is None else index[src]
        if isinstance(rest[0], str):
            nodes.append(Pool(s, rest[0], *rest[1:4], count_include_pad=rest[4], name=name))
            chans[len(nodes) - 1] = chans[s]
        else:
            cout, k, st, pd = (*rest, 1, 1, 0)[:4] if len(rest) == 1 else rest
            nodes.append(Conv(name, s, chans[s], cout, k, st, pd))
            chans[len(nodes) - 1] = cout
        index[name] = len(nodes) - 1
    return BlockGraph(kind, cin, tuple(nodes), tuple(index[o] for o in outputs))


def _avg(fid: bool):
    return ("avg", 3, 1, 1, not fid)


def inception_a(in_channels: int, pool_features: int, fid: bool = False) -> BlockGraph:
    """torchvision's InceptionA (Mixed_5b-5d); ``fid``: pytorch-fid's FIDInceptionA (avg-pool
    without the padding in its divisor)."""
    return _graph("fid-A" if fid else "A", in_channels, [
        ("branch1x1", None, 64),
        ("branch5x5_1", None, 48), ("branch5x5_2", "branch5x5_1", 64, 5, 1, 2),
        ("branch3x3dbl_1", None, 64), ("branch3x3dbl_2", "branch3x3dbl_1", 96, 3, 1, 1),
        ("branch3x3dbl_3", "branch3x3dbl_2", 96, 3, 1, 1),
        ("avg_pool2d", None, *_avg(fid)), ("branch_pool", "avg_pool2d", pool_features),
    ], ("branch1x1", "branch5x5_2", "branch3x3dbl_3", "branch_pool"))


def inception_b(in_channels: int) -> BlockGraph:
    """torchvision's InceptionB (Mixed_6a): stride 2, a max-pool without projection."""
    return _graph("B", in_channels, [
        ("branch3x3", None, 384, 3, 2, 0),
        ("branch3x3dbl_1", None, 64), ("branch3x3dbl_2", "branch3x3dbl_1", 96, 3, 1, 1),
        ("branch3x3dbl_3", "branch3x3dbl_2", 96, 3, 2, 0),
        ("max_pool2d", None, "max", 3, 2, 0, True),
    ], ("branch3x3", "branch3x3dbl_3", "max_pool2d"))


def inception_c(in_channels: int, channels_7x7: int, fid: bool = False) -> BlockGraph:
    """torchvision's InceptionC (Mixed_6b-6e): factorized 1x7 / 7x1 chains; ``fid``: FIDInceptionC."""
    c7 = channels_7x7
    return _graph("fid-C" if fid else "C", in_channels, [
        ("branch1x1", None, 192),
        ("branch7x7_1", None, c7), ("branch7x7_2", "branch7x7_1", c7, (1, 7), 1, (0, 3)),
        ("branch7x7_3", "branch7x7_2", 192, (7, 1), 1, (3, 0)),
        ("branch7x7dbl_1", None, c7), ("branch7x7dbl_2", "branch7x7dbl_1", c7, (7, 1), 1, (3, 0)),
        ("branch7x7dbl_3", "branch7x7dbl_2", c7, (1, 7), 1, (0, 3)),
        ("branch7x7dbl_4", "branch7x7dbl_3", c7, (7, 1), 1, (3, 0)),
        ("branch7x7dbl_5", "branch7x7dbl_4", 192, (1, 7), 1, (0, 3)),
        ("avg_pool2d", None, *_avg(fid)), ("branch_pool", "avg_pool2d", 192),
    ], ("branch1x1", "branch7x7_3", "branch7x7dbl_5", "branch_pool"))


def inception_d(in_channels: int) -> BlockGraph:
    """torchvision's InceptionD (Mixed_7a): stride 2."""
    return _graph("D", in_channels, [
        ("branch3x3_1", None, 192), ("branch3x3_2", "branch3x3_1", 320, 3, 2, 0),
        ("branch7x7x3_1", None, 192), ("branch7x7x3_2", "branch7x7x3_1", 192, (1, 7), 1, (0, 3)),
        ("branch7x7x3_3", "branch7x7x3_2", 192, (7, 1), 1, (3, 0)),
        ("branch7x7x3_4", "branch7x7x3_3", 192, 3, 2, 0),
        ("max_pool2d", None, "max", 3, 2, 0, True),
    ], ("branch3x3_2", "branch7x7x3_4", "max_pool2d"))


def inception_e(in_channels: int, pool: str = "avg") -> BlockGraph:
    """torchvision's InceptionE (Mixed_7b/7c): two maps each feed a 1x3 and a 3x1 conv. ``pool``:
    "avg" (torchvision), "avg_exclude_pad" (pytorch-fid's FIDInceptionE_1) or "max"
    (FIDInceptionE_2)."""
    heads = {"avg": ("E", "avg_pool2d", ("avg", 3, 1, 1, True)),
             "avg_exclude_pad": ("fid-E1", "avg_pool2d", ("avg", 3, 1, 1, False)),
             "max": ("fid-E2", "max_pool2d", ("max", 3, 1, 1, True))}
    if pool not in heads:
        raise ValueError(f"pool must be one of {sorted(heads)}, got {pool!r}")
    kind, pool_name, head = heads[pool]
    return _graph(kind, in_channels, [
        ("branch1x1", None, 320),
        ("branch3x3_1", None, 384), ("branch3x3_2a", "branch3x3_1", 384, (1, 3), 1, (0, 1)),
        ("branch3x3_2b", "branch3x3_1", 384, (3, 1), 1, (1, 0)),
        ("branch3x3dbl_1", None, 448), ("branch3x3dbl_2", "branch3x3dbl_1", 384, 3, 1, 1),
        ("branch3x3dbl_3a", "branch3x3dbl_2", 384, (1, 3), 1, (0, 1)),
        ("branch3x3dbl_3b", "branch3x3dbl_2", 384, (3, 1), 1, (1, 0)),
        (pool_name, None, *head), ("branch_pool", pool_name, 192),
    ], ("branch1x1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_3a", "branch3x3dbl_3b", "branch_pool"))


# The eleven mixed blocks of Inception-v3 (torchvision): name -> (graph, input H=W at 299x299).
INCEPTION_V3_BLOCKS: dict[str, tuple[BlockGraph, int]] = {
    "Mixed_5b": (inception_a(192, 32), 35), "Mixed_5c": (inception_a(256, 64), 35),
    "Mixed_5d": (inception_a(288, 64), 35), "Mixed_6a": (inception_b(288), 35),
    "Mixed_6b": (inception_c(768, 128), 17), "Mixed_6c": (inception_c(768, 160), 17),
    "Mixed_6d": (inception_c(768, 160), 17), "Mixed_6e": (inception_c(768, 192), 17),
    "Mixed_7a": (inception_d(768), 17), "Mixed_7b": (inception_e(1280), 8), "Mixed_7c": (inception_e(2048), 8),
}

# pytorch-fid's FID Inception: the same network with these blocks swapped.
FID_BLOCKS: dict[str, tuple[BlockGraph, int]] = {
    **INCEPTION_V3_BLOCKS,
    "Mixed_5b": (inception_a(192, 32, fid=True), 35), "Mixed_5c": (inception_a(256, 64, fid=True), 35),
    "Mixed_5d": (inception_a(288, 64, fid=True), 35),
    "Mixed_6b": (inception_c(768, 128, fid=True), 17), "Mixed_6c": (inception_c(768, 160, fid=True), 17),
    "Mixed_6d": (inception_c(768, 160, fid=True), 17), "Mixed_6e": (inception_c(768, 192, fid=True), 17),
    "Mixed_7b": (inception_e(1280, "avg_exclude_pad"), 8), "Mixed_7c": (inception_e(2048, "max"), 8),
}


def inception_v3_graph(name: str, fid: bool = False) -> BlockGraph:
    """The graph of Inception-v3 block ``name`` ("Mixed_5b".."Mixed_7c"), FID variant with ``fid``."""
    table = FID_BLOCKS if fid else INCEPTION_V3_BLOCKS
    if name not in table:
        raise ValueError(f"unknown Inception-v3 block {name!r}; expected one of {list(table)}")
    return table[name][0]
