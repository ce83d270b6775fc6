"""The graph kernel's launch protocol, simulated (``kernels/triton_graph.py``): what the launcher
hands the kernel (recorded, not copied), a randomized-interleaving simulation of persistent
programs working its tables, and the static checks of a table. A helper module of
tests/test_graph_protocol.py, in the style of tests/protocol_sim.py (GoogLeNet's v4 kernel), but
over any ``BlockGraph``: items name a node, the node table says what they read and write."""

from __future__ import annotations

import inspect
import math
import random
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import fused_inception.kernels.triton_graph as tg
from fused_inception.graph import BlockGraph
from fused_inception.kernels.graph_schedule import CONV, NODE_COLUMNS, POOL, SRC_WS, GraphSchedule
from fused_inception.kernels.tuning import TileConfig, graph_schedule_for
from fused_inception.packing import graph_offsets

from .protocol_sim import Deadlock, EarlyRead, ProtocolError, _Recorder

__all__ = ["Deadlock", "EarlyRead", "GraphLaunch", "GraphSim", "ProtocolError", "record_graph_launch",
           "static_faults"]

CPU = torch.device("cpu")
_PARAMS = list(inspect.signature(tg.graph_fwd_kernel.fn).parameters)


@dataclass
class GraphLaunch:
    """One recorded launch: grid, schedule, the two tables and the state as handed over, and every
    other kernel argument by name."""

    graph: BlockGraph
    sched: GraphSchedule
    grid: int
    items: list[list[int]]
    nodes: list[dict[str, int]]
    state: list[int]
    args: dict


def record_graph_launch(graph: BlockGraph, n: int, h: int, w: int, cfg: TileConfig, max_programs: int) -> GraphLaunch:
    """Call ``block_forward_triton`` with the kernel replaced by a recorder."""
    wt, bt = graph_offsets(graph)[-1]
    x = torch.empty(n, graph.in_channels, h, w)
    rec = _Recorder()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tg, "graph_fwd_kernel", rec)
        tg.block_forward_triton(x, torch.ones(wt), torch.ones(bt), graph, cfg, max_programs=max_programs)
    (grid, args, kw), = rec.calls
    named = dict(zip(_PARAMS, args)) | {k: v for k, v in kw.items() if k in _PARAMS}
    assert set(named) == set(_PARAMS), "the recorder missed kernel arguments"
    sched = graph_schedule_for(graph, n, h, w, cfg, max_programs)
    items, nodes = tg.graph_tables(sched, CPU)
    assert named["table_ptr"] is items and named["node_ptr"] is nodes  # the cached upload of this schedule
    rows = items.reshape(-1, 11).tolist()
    node_rows = [dict(zip(NODE_COLUMNS, r)) for r in nodes.reshape(-1, len(NODE_COLUMNS)).tolist()]
    return GraphLaunch(graph, sched, grid[0], rows, node_rows, named["state_ptr"].tolist(), named)


class GraphSim:
    """The protocol over one recorded launch. Programs are generators; the code between two
    ``yield`` is one atomic step, ``yield word`` means "spinning on state[word]" (run again only
    once the poll would succeed). ``zero_state=False``: the last program does not zero the state."""

    def __init__(self, launch: GraphLaunch, items: list[list[int]] | None = None, grid: int | None = None,
                 zero_state: bool = True):
        self.L = launch
        self.items = items if items is not None else launch.items
        self.nodes = launch.nodes
        self.grid = grid if grid is not None else launch.grid
        self.n_programs = self.grid
        self.bm, self.n = launch.args["BM"], launch.args["NB"]
        self.state = list(launch.state)
        self.size = launch.args["state_size"]
        self.arrive = launch.args["arrive_base"]
        self.zero_state = zero_state
        self.split_ticket = {(r[6], r[4]): i for i, r in enumerate(self.items) if r[6] >= 0}
        self.ws_nodes = [i for i, nd in enumerate(self.nodes) if nd["out_off"] >= 0]
        # Each ready word's target, as its readers' node rows give it.
        self.target = {nd["dep_ready"] + t: nd["dep_target"] for j, nd in enumerate(self.nodes) if nd["dep_ready"] >= 0
                       for t in range(launch.sched.n_tiles[launch.graph.nodes[j].src])}
        self.launch_no = 0
        self._rows = {}
        self.stats = {"reads": 0, "max_running": 0, "out_of_order_arrivals": 0}

    # geometry --------------------------------------------------------------------------------------
    def pixels(self, node: int, tile: int) -> np.ndarray:
        nd = self.nodes[node]
        return np.arange(tile * self.bm, min(tile * self.bm + self.bm, self.n * nd["ho"] * nd["wo"]))

    def tap_rows(self, node: int, tile: int, tap: int) -> np.ndarray:
        """Source rows (flat over the producer's map) tap ``tap`` loads for the tile's pixels."""
        key = (node, tile, tap)
        if key not in self._rows:
            nd = self.nodes[node]
            p = self.pixels(node, tile)
            img, rem = p // (nd["ho"] * nd["wo"]), p % (nd["ho"] * nd["wo"])
            ih = rem // nd["wo"] * nd["sh"] - nd["ph"] + tap // nd["kw"]
            iw = rem % nd["wo"] * nd["sw"] - nd["pw"] + tap % nd["kw"]
            inside = (ih >= 0) & (ih < nd["hi"]) & (iw >= 0) & (iw < nd["wi"])
            self._rows[key] = ((img * nd["hi"] + ih) * nd["wi"] + iw)[inside]
        return self._rows[key]

    def reads(self, row: list[int], chunks) -> list[tuple[np.ndarray, slice]]:
        """(source rows, source channels) of each reduction chunk of a workspace-reading item."""
        nd = self.nodes[row[0]]
        out = []
        for kk in chunks:
            tap, c = divmod(kk, nd["nch"])
            out.append((self.tap_rows(row[0], row[1], tap), slice(c * nd["bk"], min(nd["cin"], (c + 1) * nd["bk"]))))
        return out

    # one program ---------------------------------------------------------------------------------
    def _claim(self) -> int:
        self.state[0] += 1
        return self.state[0] - 1

    def _check_reads(self, ticket, row, chunks) -> None:
        src = self.L.graph.nodes[row[0]].src
        for rows, cs in self.reads(row, chunks):
            self.stats["reads"] += len(rows)
            ok = self.released[src][rows, cs].all(axis=1)
            if not ok.all():
                bad = int(rows[~ok][0])
                raise EarlyRead(f"launch {self.launch_no}: ticket {ticket} (node {row[0]} tile {row[1]}, deps "
                                f"{row[7]}..{row[8]}) read row {bad} (tile {bad // self.bm}) of node {src}'s "
                                "workspace before it was released")

    def _epilogue(self, row) -> None:
        node, tile, c0, width = row[:4]
        nd = self.nodes[node]
        p = self.pixels(node, tile)
        hi = min(c0 + width, nd["cout"])
        if nd["out_c0"] >= 0:
            self.out[node][p[0]:p[-1] + 1, c0:hi] += 1
        if nd["out_off"] >= 0:
            self.stored[node][p[0]:p[-1] + 1, c0:hi] += 1

    def program(self, rng: random.Random):
        st = self.state
        ticket = self._claim()
        yield
        while ticket < len(self.items):
            row = self.items[ticket]
            node, tile, c0, width, split, n_splits, slot, dep_lo, dep_hi, k_lo, k_hi = row
            nd = self.nodes[node]
            self.worked[ticket] += 1
            if dep_lo >= 0:
                for t in range(dep_lo, dep_hi + 1):
                    while st[nd["dep_ready"] + t] < nd["dep_target"]:
                        yield nd["dep_ready"] + t
                    yield
            chunks = list(range(k_lo, k_hi))
            while chunks:
                take = rng.randint(1, 4)
                group, chunks = chunks[:take], chunks[take:]
                if nd["kind"] == CONV and nd["src"] == SRC_WS:
                    self._check_reads(ticket, row, group)
                yield
            last = n_splits == 1
            if n_splits > 1:
                self.partials[slot, split] = (self.launch_no, ticket)
                yield
                arrived = st[self.arrive + slot]
                st[self.arrive + slot] += 1
                self.arrivals.setdefault(slot, []).append(split)
                yield
                last = arrived == n_splits - 1
                if last:
                    for s in range(n_splits):
                        want = (self.launch_no, self.split_ticket.get((slot, s)))
                        if self.partials.get((slot, s)) != want:
                            raise ProtocolError(f"launch {self.launch_no}: slot {slot} combined by split {split} "
                                                f"but split {s}'s partial is {self.partials.get((slot, s))}")
                    self.combined[slot] = self.combined.get(slot, 0) + 1
                    st[self.arrive + slot] = 0
                    yield
            if last:
                self._epilogue(row)
                yield
                if nd["out_off"] >= 0:
                    p = self.pixels(node, tile)
                    self.released[node][p[0]:p[-1] + 1, c0:min(c0 + width, nd["cout"])] = True
                    st[nd["ready"] + tile] += 1
                    yield
            ticket = self._claim()
            yield
        finished = st[1]
        st[1] += 1
        yield
        if finished == self.n_programs - 1 and self.zero_state:
            st[:self.size] = [0] * self.size

    # one launch ------------------------------------------------------------------------------------
    def launch(self, rng: random.Random, resident: int) -> None:
        self.launch_no += 1
        maps = {i: (self.n * nd["ho"] * nd["wo"], nd["cout"]) for i, nd in enumerate(self.nodes)}
        self.stored = {i: np.zeros(maps[i], np.int32) for i in self.ws_nodes}
        self.released = {i: np.zeros(maps[i], bool) for i in self.ws_nodes}
        self.out = {i: np.zeros(maps[i], np.int32) for i, nd in enumerate(self.nodes) if nd["out_c0"] >= 0}
        self.worked = [0] * len(self.items)
        self.partials, self.arrivals, self.combined = {}, {}, {}
        speed = [math.exp(rng.gauss(0.0, 1.5)) for _ in range(self.grid)]
        pending = list(range(self.grid))
        rng.shuffle(pending)
        running: dict[int, list] = {}

        def start():
            pid = pending.pop()
            running[pid] = [self.program(random.Random(rng.random())), None]

        while pending and len(running) < resident:
            start()
        bound = sum(max(r[8] - r[7] + 1, 0) + (r[10] - r[9]) + 6 for r in self.items) + 3 * self.grid
        steps = 0
        while running:
            self.stats["max_running"] = max(self.stats["max_running"], len(running))
            runnable = [pid for pid, (_, w) in running.items() if w is None or self.state[w] >= self.target[w]]
            if not runnable:
                raise Deadlock(f"launch {self.launch_no}: deadlock, {len(running)} programs resident, "
                               f"{len(pending)} not started, ticket counter {self.state[0]} of {len(self.items)}")
            pid = rng.choices(runnable, weights=[speed[p] for p in runnable])[0]
            try:
                running[pid][1] = next(running[pid][0])
            except StopIteration:
                del running[pid]
                if pending:
                    start()
            steps += 1
            if steps > bound:
                raise ProtocolError(f"launch {self.launch_no}: no end after {steps} steps")
        self._check_launch()

    def _check_launch(self) -> None:
        n = self.launch_no
        missed = [i for i, c in enumerate(self.worked) if c != 1]
        if missed:
            raise ProtocolError(f"launch {n}: tickets worked other than once: {missed[:10]}")
        for what, maps in (("workspace", self.stored), ("output", self.out)):
            for node, arr in maps.items():
                bad = np.argwhere(arr != 1)
                if len(bad):
                    raise ProtocolError(f"launch {n}: node {node}: {len(bad)} {what} elements not written exactly "
                                        f"once, e.g. {tuple(bad[0])} written {arr[tuple(bad[0])]} times")
        slots = {r[6] for r in self.items if r[6] >= 0}
        if set(self.combined) != slots or any(c != 1 for c in self.combined.values()):
            raise ProtocolError(f"launch {n}: split slots not combined exactly once")
        self.stats["out_of_order_arrivals"] += sum(a != sorted(a) for a in self.arrivals.values())
        dirty = {i: v for i, v in enumerate(self.state) if v}
        if dirty:
            raise ProtocolError(f"launch {n}: the launch state is not left zero: {dict(list(dirty.items())[:8])}")


# -- static checks ----------------------------------------------------------------------------------
def static_faults(launch: GraphLaunch, items: list[list[int]] | None = None) -> list[str]:
    """What is wrong with a table (empty: nothing): every dependency on a smaller ticket, every
    row a workspace item reads inside its dependency range, every output channel of every pixel
    covered by exactly one item (counting an item's splits once)."""
    items = items if items is not None else launch.items
    sim = GraphSim(launch, items)
    graph, faults = launch.graph, []
    last = {}  # (node, tile) -> ticket of its last item
    for i, r in enumerate(items):
        last[r[0], r[1]] = max(last.get((r[0], r[1]), -1), i)
    cover = {i: np.zeros((launch.sched.n * nd["ho"] * nd["wo"], nd["cout"]), np.int32)
             for i, nd in enumerate(launch.nodes) if nd["out_c0"] >= 0}
    for i, r in enumerate(items):
        nd = launch.nodes[r[0]]
        if r[4] == 0 and r[0] in cover:
            p = sim.pixels(r[0], r[1])
            cover[r[0]][p[0]:p[-1] + 1, r[2]:min(r[2] + r[3], nd["cout"])] += 1
        if nd["kind"] != CONV or nd["src"] != SRC_WS:
            if r[7] >= 0:
                faults.append(f"ticket {i}: node {r[0]} reads no workspace but waits on {r[7]}..{r[8]}")
            continue
        src = graph.nodes[r[0]].src
        late = [t for t in range(r[7], r[8] + 1) if last.get((src, t), math.inf) >= i]
        if r[7] < 0 or late:
            faults.append(f"ticket {i} (node {r[0]} tile {r[1]}) precedes items of node {src} tiles {late}")
        read = {int(t) for rows, _ in sim.reads(r, range(r[9], r[10])) for t in np.unique(rows // sim.bm)}
        outside = sorted(t for t in read if not r[7] <= t <= r[8])
        if outside:
            faults.append(f"ticket {i} (node {r[0]} tile {r[1]}) reads tiles {outside} of node {src} outside "
                          f"its deps {r[7]}..{r[8]}")
    for node, arr in cover.items():
        if (arr != 1).any():
            faults.append(f"node {node}: output elements covered {sorted(set(arr.ravel().tolist()) - {1})} times")
    kinds = {nd["kind"] for nd in launch.nodes}
    assert kinds <= {-1, CONV, POOL}
    return faults
