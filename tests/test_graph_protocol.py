"""The graph kernel's work table and launch protocol (``kernels/graph_schedule.py``,
``kernels/triton_graph.py``), under interleavings Triton's interpreter never runs (it runs one
program after another, so an early read or an order that deadlocks with programs side by side
would pass the interpreted tests). The simulator is tests/graph_protocol_sim.py.

* Static checks of the table for every block kind (Inception-v3 A-E, the FID variants,
  GoogLeNet) at small shapes and at the real Inception-v3 shapes: every dependency on a smaller
  ticket, every workspace row an item's taps read inside its dependency range, every output
  element covered by exactly one item, ready-count and split-slot words inside the state.
* A randomized-interleaving simulation of the recorded launch (the very tables, grid and state
  the launcher hands the kernel), with grids below and above co-residency and one program: no
  deadlock, no read of a workspace element before its producer released it, every element written
  once, splits combined once in split order, the state zero after each of two launches.
* Mutations the checks must catch: a dependency range one tile short, a consumer ticketed before
  its producer, a last program that does not zero the state.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

pytest.importorskip("triton")

from fused_inception.graph import FID_BLOCKS, INCEPTION_V3_BLOCKS  # noqa: E402
from fused_inception.kernels.graph_schedule import COLUMNS, SRC_WS, build_graph_schedule  # noqa: E402
from fused_inception.kernels.schedule import column_blocks  # noqa: E402
from fused_inception.kernels.tuning import H100_SMS, MIN_ITEMS, TileConfig, default_graph_config  # noqa: E402

from .graph_protocol_sim import (  # noqa: E402
    Deadlock,
    EarlyRead,
    GraphSim,
    ProtocolError,
    record_graph_launch,
    static_faults,
)
from .helpers import CFG16, GRAPH_CASES  # noqa: E402

SPLIT = replace(CFG16, split_k=3)
# (id, block, config); the blocks' own n, h, w.
SIM_CASES = [(k, k, CFG16) for k in GRAPH_CASES] + [(f"{k}-split3", k, SPLIT) for k in ("A", "C", "D", "fid-E2")]
GRIDS = [("grid3-of-8", 3, 8), ("grid40-of-4", 40, 4), ("grid1", 1, 1)]


@pytest.mark.parametrize("case", SIM_CASES, ids=[c[0] for c in SIM_CASES])
def test_static_table_small(case):
    _, kind, cfg = case
    graph, n, h, w = GRAPH_CASES[kind]
    for programs in (1, 40):
        launch = record_graph_launch(graph, n, h, w, cfg, programs)
        assert static_faults(launch) == []
        _check_structure(launch)


REAL = [(f"{name}{'-fid' if fid else ''}-n{n}", g, n, hw) for fid, table in ((False, INCEPTION_V3_BLOCKS),
                                                                              (True, FID_BLOCKS))
        for name, (g, hw) in table.items() for n in (1, 2) if not fid or g.kind.startswith("fid")]


@pytest.mark.parametrize("case", REAL, ids=[c[0] for c in REAL])
def test_static_table_inception_v3(case):
    """The real shapes with the default config, as on an H100/H200 (264 programs): the checks,
    and at least max(MIN_ITEMS, SMs) items wherever splits could make them."""
    _, graph, n, hw = case
    cfg = default_graph_config(graph, n, hw, hw, dtype=None)
    launch = record_graph_launch(graph, n, hw, hw, cfg, H100_SMS * cfg.programs_per_sm)
    assert static_faults(launch) == []
    _check_structure(launch)
    sched = launch.sched
    most = sum(len(column_blocks(nd["cout"], cfg.block_n)) * sched.n_tiles[i] *
               (nd["kh"] * nd["kw"] * nd["nch"] if nd["kind"] == 0 else 1)
               for i, nd in enumerate(launch.nodes) if nd["kind"] >= 0)
    assert len(sched.items) >= min(max(MIN_ITEMS, H100_SMS), most) or cfg.split_k == 16


def _check_structure(launch) -> None:
    """State words, split structure, ready targets, workspace leading dimensions."""
    s, rows = launch.sched, launch.items
    assert len(COLUMNS) == len(rows[0]) and launch.args["state_size"] == s.state_size
    splits = {}
    for i, r in enumerate(rows):
        node, tile, c0, _, split, n_splits, slot = r[:7]
        assert 0 <= tile < s.n_tiles[node] and (slot >= 0) == (n_splits > 1) and slot < s.n_slots
        assert (slot < 0 or s.arrive_base + slot < s.state_size) and n_splits <= s.max_splits
        splits.setdefault((node, tile, c0), []).append((split, n_splits, r[9], r[10], i))
    for (node, _, _), parts in splits.items():
        nd = launch.nodes[node]
        assert [p[0] for p in parts] == list(range(parts[0][1]))
        bounds = [parts[0][2]] + [p[3] for p in parts]
        total = nd["kh"] * nd["kw"] * nd["nch"] if nd["kind"] == 0 else 1
        assert bounds[0] == 0 and bounds[-1] == total and all(p[2] < p[3] for p in parts)
    for i, nd in enumerate(launch.nodes):
        if nd["kind"] == 0 and nd["src"] == SRC_WS:
            src = launch.graph.nodes[i].src
            assert nd["dep_target"] == len({c0 for (j, t, c0) in splits if j == src and t == 0})
            assert nd["dep_ready"] == launch.nodes[src]["ready"] and nd["in_ld"] % 8 == 0
        if nd["ready"] >= 0:
            assert 2 <= nd["ready"] and nd["ready"] + s.n_tiles[i] <= s.arrive_base


@pytest.mark.parametrize("grid", GRIDS, ids=[g[0] for g in GRIDS])
@pytest.mark.parametrize("case", SIM_CASES, ids=[c[0] for c in SIM_CASES])
@pytest.mark.parametrize("seed", [0, 1])
def test_random_interleavings(case, grid, seed):
    """Two back-to-back launches on one state, each under a random interleaving."""
    _, kind, cfg = case
    gid, programs, resident = grid
    graph, n, h, w = GRAPH_CASES[kind]
    launch = record_graph_launch(graph, n, h, w, cfg, programs)
    assert launch.grid == min(programs, len(launch.items)) and not any(launch.state)
    sim = GraphSim(launch)
    rng = random.Random(f"{case[0]}/{gid}/{seed}")
    sim.launch(rng, resident)
    sim.launch(rng, resident)
    assert sim.stats["max_running"] == min(resident, launch.grid)
    if any(r[7] >= 0 for r in launch.items):
        assert sim.stats["reads"] > 0


# -- the checks can fail ----------------------------------------------------------------------------
def _mutant(programs=1):
    graph, n, h, w = GRAPH_CASES["C"]  # a chain four convs deep: every kind of dependency
    return record_graph_launch(graph, n, h, w, replace(CFG16, split_k=2), programs)


def _short_deps(rows):
    out = [list(r) for r in rows]
    for r in out:
        if r[8] > r[7] >= 0:
            r[8] -= 1
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_short_dependency_is_an_early_read(seed):
    """Dependency ranges one tile short: the static check sees it; several programs read a
    workspace row before its release; one program, in ticket order, never does."""
    launch = _mutant(programs=1)
    rows = _short_deps(launch.items)
    assert any("outside its deps" in f for f in static_faults(launch, rows))
    with pytest.raises(EarlyRead, match="before it was released"):
        for s in range(20):  # the first few interleavings nearly always show it
            GraphSim(launch, rows, grid=8).launch(random.Random(seed * 100 + s), resident=8)
    GraphSim(launch, rows, grid=1).launch(random.Random(seed), resident=1)


def test_consumer_before_producer_deadlocks():
    launch = _mutant()
    rows = launch.items
    i = next(i for i, r in enumerate(rows) if r[7] >= 0)
    rows = [rows[i]] + [r for j, r in enumerate(rows) if j != i]
    assert any("precedes" in f for f in static_faults(launch, rows))
    with pytest.raises(Deadlock):
        GraphSim(launch, rows, grid=1).launch(random.Random(0), resident=1)
    with pytest.raises(Deadlock, match="2 not started"):
        GraphSim(launch, rows, grid=3).launch(random.Random(0), resident=1)
    GraphSim(launch, rows, grid=3).launch(random.Random(0), resident=3)


def test_dirty_state_is_caught():
    sim = GraphSim(_mutant(8), zero_state=False)
    with pytest.raises(ProtocolError, match="not left zero"):
        sim.launch(random.Random(0), resident=8)


def test_double_cover_is_caught():
    launch = _mutant()
    rows = [list(r) for r in launch.items]
    r = next(r for r in rows if r[4] == 0 and launch.nodes[r[0]]["out_c0"] >= 0 and r[1] > 0)
    r[1] -= 1  # the item writes the tile before its own: one tile twice, its own never
    assert any("covered" in f for f in static_faults(launch, rows))


def test_build_is_cached_and_deterministic():
    graph, n, h, w = GRAPH_CASES["E"]
    args = (graph, n, h, w, 16, 16, 16, 2, 7)
    a = build_graph_schedule(*args)
    assert build_graph_schedule(*args) is a
    build_graph_schedule.cache_clear()
    assert build_graph_schedule(*args) == a
    assert TileConfig(block_m=16, block_n=16, block_k=16, block_kr=16) == CFG16
