"""The work table of the graph kernel (``triton_graph.py``): which item each ticket names, what it
waits for, and the per-node parameters the kernel reads at run time.

Pure Python (no Triton): the launcher uploads these tables, and the protocol tests read the same
object, so neither carries its own copy of the decomposition.

Every node's output map (N*Ho*Wo pixels, channels_last order) is cut into flat tiles of
``block_m`` rows; a tile may hold pixels of two images. Items:

* conv items: one output tile x one column block (``column_blocks``) x one reduction split of a
  conv node, an implicit GEMM over (tap, input-channel chunk). Its A operand is read from x, from
  the producer's workspace, or computed on the fly as a pool of x (a pool read by a 1x1 conv).
  The result goes to the node's channel slice of the output and/or to its workspace (a conv read
  by another conv), whose tile then counts one more finished column block in its ready count.
* pool items: a pool node in ``outputs`` (Inception-v3's B and D): a tile of the pooled x, one
  column block of channels, written to its output slice. No GEMM.

Ticket order: items that read only x get keys by their progress through the batch; a consumer
gets the key of its last dependency plus about one wave (``programs`` items), so every dependency
has a smaller ticket (the deadlock-freedom argument in ``triton_graph.py``), and its producers are
usually finished, not just claimed, by the time it is claimed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..graph import BlockGraph, Conv, Pool
from ..packing import graph_offsets
from .schedule import column_blocks

__all__ = ["ALIGN_COLUMNS", "COLUMNS", "NODE_COLUMNS", "CONV", "POOL", "SKIP", "SRC_X", "SRC_WS", "SRC_POOL",
           "GraphSchedule", "build_graph_schedule", "source_rows"]

# One row per ticket. node: the graph node; split/n_splits/slot as in schedule.py (slot -1: not
# split); dep_lo/dep_hi: the producer's tiles whose ready counts it waits for (-1: none);
# k_lo/k_hi: its reduction chunks (chunk kk = tap * nch + channel chunk).
COLUMNS = ("node", "tile", "c0", "width", "split", "n_splits", "slot", "dep_lo", "dep_hi", "k_lo", "k_hi")
C = {name: i for i, name in enumerate(COLUMNS)}

SKIP, CONV, POOL = -1, 0, 1  # node kinds: not run (a pool read on the fly, a dead node), conv, pool item
SRC_X, SRC_WS, SRC_POOL = 0, 1, 2  # where a conv's A operand comes from

# One row per graph node. hi/wi: the map the node reads (for SRC_POOL: the pool's output);
# pool/cip/pk*/ps*/pp*: the pool (0 max, 1 avg; count_include_pad) of a POOL node or a SRC_POOL
# conv; in_off/in_ld, out_off/out_ld: workspace element offset and row stride of the map read and
# written (-1: none); out_c0: first channel in the output (-1: not an output); ready/dep_ready:
# state word of tile 0's ready count of this node and of its producer; dep_target: the producer's
# items per tile (its column blocks); bk: reduction chunk; nch: chunks per tap.
NODE_COLUMNS = ("kind", "src", "cin", "cout", "kh", "kw", "sh", "sw", "ph", "pw", "hi", "wi", "ho", "wo", "relu",
                "pool", "cip", "pkh", "pkw", "psh", "psw", "pph", "ppw", "w_off", "b_off", "in_off", "in_ld",
                "out_off", "out_ld", "out_c0", "ready", "dep_ready", "dep_target", "bk", "nch")
N = {name: i for i, name in enumerate(NODE_COLUMNS)}
# The columns ``GraphSchedule.aligned`` checks: what the kernel's ALIGN hints assume.
ALIGN_COLUMNS = ("cin", "cout", "w_off", "b_off", "in_off", "in_ld", "out_off", "out_ld", "out_c0")


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class GraphSchedule:
    """One launch's decomposition (``build_graph_schedule``); ``items`` rows follow ``COLUMNS``,
    ``nodes`` rows ``NODE_COLUMNS`` (one per graph node)."""

    graph: BlockGraph
    n: int
    h: int
    w: int
    block_m: int
    block_n: int
    bk: int
    nodes: tuple[tuple[int, ...], ...]
    n_tiles: tuple[int, ...]  # per graph node, over its own output map
    n_ready: int  # ready-count words (tiles of every node that writes a workspace)
    n_slots: int
    max_splits: int
    ws_size: int  # workspace elements, in x's dtype
    items: tuple[tuple[int, ...], ...]

    @property
    def state_size(self) -> int:
        """int32 words of launch state: ticket, finished programs, ready counts, split arrivals."""
        return 2 + self.n_ready + self.n_slots

    @property
    def arrive_base(self) -> int:
        return 2 + self.n_ready

    def node(self, i: int) -> dict[str, int]:
        return dict(zip(NODE_COLUMNS, self.nodes[i]))

    def aligned(self, vec: int) -> bool:
        """Whether every node row's channel counts, weight/bias/workspace offsets, workspace row
        strides and output channel offset are multiples of ``vec`` elements (-1, "none", aside):
        the table's part of the graph kernel's ALIGN (``triton_graph._align``)."""
        cols = [N[c] for c in ALIGN_COLUMNS]
        return all(v % vec == 0 for row in self.nodes for c in cols if (v := row[c]) != -1)


def _check(graph: BlockGraph, needed: set[int]) -> None:
    """ValueError naming the first node the kernel cannot run."""
    for i in sorted(needed):
        node = graph.nodes[i]
        where = f"{graph.kind} block, node {i} ({node.name or type(node).__name__})"
        if isinstance(node, Pool):
            if node.src != -1:
                raise ValueError(f"{where}: the graph kernel pools the block input only, this pool reads node "
                                 f"{node.src}")
            for j in graph.readers(i):
                r = graph.nodes[j]
                if j in needed and (isinstance(r, Pool) or r.kernel != (1, 1) or r.stride != (1, 1)
                                    or r.padding != (0, 0)):
                    raise ValueError(f"{where}: a pool is computed on the fly only for a 1x1, stride-1, unpadded "
                                     f"conv, but node {j} ({r.name or type(r).__name__}) reads it")
        elif node.src >= 0 and not isinstance(graph.nodes[node.src], (Conv, Pool)):
            raise ValueError(f"{where}: unsupported source")


def _needed(graph: BlockGraph) -> set[int]:
    need, todo = set(), list(graph.outputs)
    while todo:
        i = todo.pop()
        if i >= 0 and i not in need:
            need.add(i)
            todo.append(graph.nodes[i].src)
    return need


def source_rows(n: int, hi: int, wi: int, ho: int, wo: int, kernel, stride, padding) -> tuple[np.ndarray, np.ndarray]:
    """Per output pixel (flat over n*ho*wo): the smallest and largest flat source row (over
    n*hi*wi) any of its in-bounds taps reads. The in-bounds taps form a rectangle, so these are
    its corners: exact."""
    p = np.arange(n * ho * wo, dtype=np.int64)
    img, rem = p // (ho * wo), p % (ho * wo)
    oh, ow = rem // wo, rem % wo
    h0, w0 = oh * stride[0] - padding[0], ow * stride[1] - padding[1]
    hmin, wmin = np.maximum(h0, 0), np.maximum(w0, 0)
    hmax, wmax = np.minimum(h0 + kernel[0] - 1, hi - 1), np.minimum(w0 + kernel[1] - 1, wi - 1)
    base = img * hi * wi
    return base + hmin * wi + wmin, base + hmax * wi + wmax


def _dep_ranges(lo: np.ndarray, hi: np.ndarray, block_m: int, n_tiles: int) -> list[tuple[int, int]]:
    """Per consumer tile: the producer tiles holding its smallest and largest source rows."""
    out = []
    for t in range(n_tiles):
        s = slice(t * block_m, (t + 1) * block_m)
        out.append((int(lo[s].min()) // block_m, int(hi[s].max()) // block_m))
    return out


@functools.lru_cache(maxsize=256)
def build_graph_schedule(graph: BlockGraph, n: int, h: int, w: int, block_m: int, block_n: int, block_k: int,
                         split_k: int = 1, programs: int = 1) -> GraphSchedule:
    """The tables of one launch. ``split_k`` caps every conv item's reduction splits (each keeps
    at least one chunk); ``programs`` (the persistent grid) sets how far behind its last
    dependency a consumer is issued. ValueError for a graph the kernel does not run."""
    need = _needed(graph)
    _check(graph, need)
    sizes = graph.map_sizes(h, w)
    graph.out_size(h, w)  # ValueError for a map too small or branches that disagree
    offs = dict(zip(graph.convs, graph_offsets(graph)))
    out_c0, c = {}, 0
    for i in graph.outputs:
        out_c0[i] = c
        c += graph.channels(i)
    # Workspaces: conv maps read by a needed conv.
    ws_nodes = [i for i in sorted(need) if isinstance(graph.nodes[i], Conv)
                and any(j in need and isinstance(graph.nodes[j], Conv) for j in graph.readers(i))]
    n_tiles = tuple(_cdiv(n * s[0] * s[1], block_m) for s in sizes)
    ws_off, ready, ws_size, n_ready = {}, {}, 0, 0
    for i in ws_nodes:
        ld = _cdiv(graph.nodes[i].cout, 8) * 8
        ws_off[i] = (ws_size, ld)
        ws_size += n * sizes[i][0] * sizes[i][1] * ld
        ready[i] = 2 + n_ready
        n_ready += n_tiles[i]
    blocks = {}
    rows = []
    for i, node in enumerate(graph.nodes):
        row = dict.fromkeys(NODE_COLUMNS, -1)
        row.update(relu=0, pool=0, cip=0, pkh=1, pkw=1, psh=1, psw=1, pph=0, ppw=0, bk=block_k, nch=1,
                   dep_target=0)
        ho, wo = sizes[i]
        hi, wi = (h, w) if node.src < 0 else sizes[node.src]
        row.update(ho=ho, wo=wo, hi=hi, wi=wi, cin=graph.channels(node.src), cout=graph.channels(i),
                   kh=node.kernel[0], kw=node.kernel[1], sh=node.stride[0], sw=node.stride[1],
                   ph=node.padding[0], pw=node.padding[1], out_c0=out_c0.get(i, -1))
        pool = None
        if i not in need or (isinstance(node, Pool) and i not in out_c0):
            row["kind"] = SKIP
        elif isinstance(node, Pool):
            row.update(kind=POOL, src=SRC_X)
            pool = node
            blocks[i] = column_blocks(graph.channels(i), block_n)
        else:
            row.update(kind=CONV, relu=int(node.relu), w_off=offs[i][0], b_off=offs[i][1],
                       nch=_cdiv(node.cin, block_k))
            src = graph.nodes[node.src] if node.src >= 0 else None
            if src is None:
                row["src"] = SRC_X
            elif isinstance(src, Pool):
                row["src"] = SRC_POOL
                pool = src
            else:
                row.update(src=SRC_WS, in_off=ws_off[node.src][0], in_ld=ws_off[node.src][1],
                           dep_ready=ready[node.src], dep_target=len(column_blocks(src.cout, block_n)))
            if i in ws_off:
                row.update(out_off=ws_off[i][0], out_ld=ws_off[i][1], ready=ready[i])
            blocks[i] = column_blocks(node.cout, block_n)
        if pool is not None:
            row.update(pool=int(pool.kind == "avg"), cip=int(pool.count_include_pad), pkh=pool.kernel[0],
                       pkw=pool.kernel[1], psh=pool.stride[0], psw=pool.stride[1], pph=pool.padding[0],
                       ppw=pool.padding[1])
        rows.append(row)

    def chunks(i: int) -> int:
        r = rows[i]
        return r["kh"] * r["kw"] * r["nch"] if r["kind"] == CONV else 1

    splits = {i: (max(1, min(split_k, chunks(i))) if rows[i]["kind"] == CONV else 1) for i in blocks}
    deps: dict[int, list[tuple[int, int]]] = {}
    for i in blocks:
        r = rows[i]
        if r["kind"] == CONV and r["src"] == SRC_WS:
            lo, hi = source_rows(n, r["hi"], r["wi"], r["ho"], r["wo"], (r["kh"], r["kw"]), (r["sh"], r["sw"]),
                                 (r["ph"], r["pw"]))
            deps[i] = _dep_ranges(lo, hi, block_m, n_tiles[i])
    # Keys. Items reading only x: by the fraction of the batch their tile ends at, in that order
    # numbered 0, 1, 2, ...; a consumer: its last dependency's key plus one wave.
    lag = max(1, programs)
    raw = []  # (key, node, tile, c0, width, split)
    x_items = []
    for i in blocks:
        if i in deps:
            continue
        for t in range(n_tiles[i]):
            for c0, width in blocks[i]:
                for s in range(splits[i]):
                    x_items.append(((t + 1) / n_tiles[i], i, t, c0, width, s))
    x_items.sort()
    tile_key: dict[tuple[int, int], float] = {}
    for k, (_, i, t, c0, width, s) in enumerate(x_items):
        raw.append((k, i, t, c0, width, s))
        tile_key[i, t] = k  # ascending: ends as the tile's last item
    for i in blocks:  # node order is topological: a producer's keys are known before its readers'
        if i not in deps:
            continue
        src = graph.nodes[i].src
        for t in range(n_tiles[i]):
            lo, hi = deps[i][t]
            key = max(tile_key[src, d] for d in range(lo, hi + 1)) + lag
            for c0, width in blocks[i]:
                for s in range(splits[i]):
                    raw.append((key, i, t, c0, width, s))
            tile_key[i, t] = key
    raw.sort()
    items, slot_of, slots = [], {}, 0
    for _, i, t, c0, width, s in raw:
        ns = splits[i]
        slot = -1
        if ns > 1:
            if (i, t, c0) not in slot_of:
                slot_of[i, t, c0], slots = slots, slots + 1
            slot = slot_of[i, t, c0]
        total = chunks(i)
        dlo, dhi = deps[i][t] if i in deps else (-1, -1)
        items.append((i, t, c0, width, s, ns, slot, dlo, dhi, total * s // ns, total * (s + 1) // ns))
    node_rows = tuple(tuple(int(r[k]) for k in NODE_COLUMNS) for r in rows)
    return GraphSchedule(graph, n, h, w, block_m, block_n, block_k, node_rows, n_tiles, n_ready, slots,
                         max(splits.values(), default=1), ws_size, tuple(items))

