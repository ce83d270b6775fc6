"""The kernel's work table: which item each ticket names, and what it waits for.

Pure Python (no Triton): the launcher uploads this table, and the protocol simulation
(``tests/test_protocol.py``), the performance model (``benchmarks/perf_model.py``) and the tiling
analysis read the same object, so none of them carries a copy of the decomposition.

Pixels are flat over N*H*W (channels_last order) and cut into tiles of ``block_m`` rows; a tile
may hold pixels of two images, so every halo and pool mask works on (n, h, w). Item kinds:

* ``P``: the x tile against a column block of the three 1x1 convs that read x (the 1x1 branch,
  both reductions). Columns below C1 go to the output, the rest to the reduce workspace R.
  Each finished P item adds one to its tile's ready count.
* ``Q``: the 3x3 max-pool of the x tile (once per tile and input chunk) and its projection.
* ``C3``/``C5``: a KxK conv over R as one implicit GEMM (K = k*k*Cred), after the ready counts of
  the tiles its halo touches reach ``tile_target``.

An item may be split along its reduction: each split stores an fp32 partial, and the last to
arrive adds them in split order (bit-identical results whatever the arrival order) and runs the
epilogue. Tickets are issued in an order where every dependency has a smaller ticket: see
``triton_inception.py`` for why that makes the protocol deadlock-free.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ..spec import InceptionSpec

__all__ = ["P", "Q", "C3", "C5", "KINDS", "COLUMNS", "Schedule", "build_schedule", "column_blocks",
           "chunk"]

P, Q, C3, C5 = 0, 1, 2, 3
KINDS = ("P", "Q", "C3", "C5")
# One row per ticket. split/n_splits: this item's share of the reduction; slot: its partial-sum
# slot (-1 when not split); dep_lo/dep_hi: the tiles whose ready counts it waits for (-1: none).
# k_lo/k_hi: the reduction chunks it runs.
COLUMNS = ("kind", "tile", "c0", "width", "split", "n_splits", "slot", "dep_lo", "dep_hi", "k_lo", "k_hi")
WIDTHS = (128, 64, 32, 16)  # column-block widths the kernel is specialised for (tl.dot: N >= 16)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def column_blocks(cols: int, block_n: int) -> list[tuple[int, int]]:
    """(start, width) blocks covering ``cols`` channels: full ``block_n`` blocks, then a tail of
    halving widths down to 16, so 208 channels are 128 + 64 + 16 and padding stays below 16."""
    out, c0 = [], 0
    rest = _cdiv(cols, 16) * 16
    while rest >= block_n:
        out.append((c0, block_n))
        c0, rest = c0 + block_n, rest - block_n
    for width in WIDTHS:  # what is left is below block_n: each smaller width at most once
        if width < block_n and rest >= width:
            out.append((c0, width))
            c0, rest = c0 + width, rest - width
    return out


def chunk(channels: int, most: int) -> int:
    """The reduction chunk (a power of two, 16..``most``): the largest whose padding of
    ``channels`` stays within 1/16 (one chunk in 16 wasted) of the least padding; longer MMA steps
    are worth a little padding (528 channels: 32, not 16)."""
    sizes = [c for c in (64, 32, 16) if c <= most]
    least = min(_cdiv(channels, c) * c for c in sizes)
    return next(c for c in sizes if _cdiv(channels, c) * c * 16 <= least * 17)


@dataclass(frozen=True)
class Schedule:
    """One launch's decomposition (``build_schedule``). ``items`` rows follow ``COLUMNS``."""

    spec: InceptionSpec
    n: int
    h: int
    w: int
    block_m: int
    block_n: int
    bk: int  # input-channel chunk of P
    bkq: int  # and of Q, whose nine tap tiles all sit in registers: at most 2048 pixel-channels
    bk3: int  # reduce-channel chunks of C3 and C5
    bk5: int
    n_tiles: int
    tile_target: int  # P items per tile: the ready count a C item waits for
    n_slots: int
    max_splits: int
    items: tuple[tuple[int, ...], ...]

    @property
    def pixels(self) -> int:
        return self.n * self.h * self.w

    @property
    def state_size(self) -> int:
        """int32 words of launch state: ticket, finished programs, ready counts, split arrivals."""
        return 2 + self.n_tiles + self.n_slots

    def k_chunks(self, kind: int) -> int:
        """Reduction chunks of one whole (unsplit) item of ``kind``."""
        s = self.spec
        if kind in (P, Q):
            return _cdiv(s.in_channels, self.bk if kind == P else self.bkq)
        cred, k, bk = (s.ch3x3red, s.k3, self.bk3) if kind == C3 else (s.ch5x5red, s.k5, self.bk5)
        return k * k * _cdiv(cred, bk)

    def chunk_of(self, kind: int) -> int:
        return {P: self.bk, Q: self.bkq, C3: self.bk3, C5: self.bk5}[kind]

    def item_mnk(self, row: tuple[int, ...]) -> tuple[int, int, int]:
        """(M, N, K) of the item's GEMM at the padded shape tensor cores run."""
        return self.block_m, row[3], (row[10] - row[9]) * self.chunk_of(row[0])


def _dep_range(t: int, block_m: int, pix: int, hw: int, w: int, pad: int) -> tuple[int, int]:
    """Tiles holding the rows a KxK item of tile ``t`` reads: its pixels and their halo, clipped
    to the images the tile covers (rows of another image are never read)."""
    p0 = t * block_m
    p1 = min(p0 + block_m, pix) - 1
    lo = max((p0 // hw) * hw, p0 - pad * w - pad)
    hi = min((p1 // hw + 1) * hw - 1, p1 + pad * w + pad)
    return lo // block_m, hi // block_m


@functools.lru_cache(maxsize=256)
def build_schedule(spec: InceptionSpec, n: int, h: int, w: int, block_m: int, block_n: int, bk: int,
                   bk_red: int, split_k: int, programs: int = 1) -> Schedule:
    """The ticket order of one launch. ``split_k`` caps the splits of every item's reduction
    (each split keeps at least one chunk). A KxK item is issued about one wave of ``programs``
    after the last P item it reads, so that its producers are done (not just claimed) by the time
    it is claimed, and it seldom spins; any lag keeps every dependency on a smaller ticket."""
    pix, hw = n * h * w, h * w
    n_tiles = _cdiv(pix, block_m)
    bk3, bk5 = chunk(spec.ch3x3red, bk_red), chunk(spec.ch5x5red, bk_red)
    bkq = min(bk, 2048 // block_m)
    proto = Schedule(spec, n, h, w, block_m, block_n, bk, bkq, bk3, bk5, n_tiles, 0, 0, 1, ())
    blocks = {P: column_blocks(spec.ch1x1 + spec.ch3x3red + spec.ch5x5red, block_n),
              Q: column_blocks(spec.pool_proj, block_n),
              C3: column_blocks(spec.ch3x3, block_n), C5: column_blocks(spec.ch5x5, block_n)}
    splits = {kind: max(1, min(split_k, proto.k_chunks(kind))) for kind in blocks}
    pads = {C3: spec.k3 // 2, C5: spec.k5 // 2}
    deps = {kind: [_dep_range(t, block_m, pix, hw, w, pad) for t in range(n_tiles)] for kind, pad in pads.items()}
    ready_at: dict[int, list[tuple[int, int]]] = {}
    per_tile = sum(len(blocks[kind]) * splits[kind] for kind in (P, Q))
    lag = _cdiv(programs, per_tile) if programs > 1 else 0
    for kind in (C3, C5):
        for t, (_, hi) in enumerate(deps[kind]):
            ready_at.setdefault(min(n_tiles - 1, hi + lag), []).append((kind, t))
    items: list[tuple[int, ...]] = []
    slots = 0

    def emit(kind: int, t: int, dep: tuple[int, int]) -> None:
        nonlocal slots
        s = splits[kind]
        for c0, width in blocks[kind]:
            slot = -1
            if s > 1:
                slot, slots = slots, slots + 1
            total = proto.k_chunks(kind)
            items.extend((kind, t, c0, width, i, s, slot, *dep, total * i // s, total * (i + 1) // s)
                         for i in range(s))

    for t in range(n_tiles):
        emit(P, t, (-1, -1))
        emit(Q, t, (-1, -1))
        for kind, tc in sorted(ready_at.get(t, ())):
            emit(kind, tc, deps[kind][tc])
    return Schedule(spec, n, h, w, block_m, block_n, bk, bkq, bk3, bk5, n_tiles, len(blocks[P]), slots,
                    max(splits.values()), tuple(items))
