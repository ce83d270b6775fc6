"""The kernel's work table and its launch protocol, under interleavings the interpreter never runs.

Triton's interpreter runs one program after another, so the first program claims every ticket and
works them in table order: an item that read a tile before its producer released it, a ticket
order that deadlocks once programs really run side by side, a split counter that is not left at
zero, would all pass the interpreted kernel tests. This file and tests/test_schedule.py cover them in three ways
(the simulator itself is tests/protocol_sim.py):

* A randomized interleaving simulation of the protocol. The launcher is called for real with the
  kernel swapped for a recorder, so the simulation runs the very table tensor, grid, launch state
  and constants the launcher hands the kernel (no copy of the decomposition). ``grid`` persistent
  programs, at most ``resident`` of them on the GPU at once (the rest start only when a running one
  exits: what happens when occupancy allows fewer programs per SM than ``programs_per_sm``), claim
  tickets at random speeds and advance one atomic step at a time, as the kernel does: claim a
  ticket, acquire a ready count, a few reduction chunks, store a split partial, arrive, combine,
  epilogue, release, count itself finished, and (the last) zero the state. Checked: no deadlock;
  every R cell a KxK item reads (the exact halo of its tile's valid pixels, per reduction chunk)
  was stored and released before the read; R and every output element written exactly once;
  every ticket worked once; split partials all present and combined in split order, whatever the
  arrival order; the state buffer all zero after each of two back-to-back launches.
* Mutations showing the simulation can fail: a dependency range one tile short (an early read,
  which in-order execution never shows), a consumer ticketed before its producer (a deadlock with
  one program, and with three programs of which one fits on the GPU), kernel variants that leave
  the state dirty.
* Static checks of the table, and the real kernel in the interpreter for what a table cannot show:
  back-to-back launches with no host reset, bit-identical split results, NaN kept in its image.
"""

from __future__ import annotations

import random

import pytest

pytest.importorskip("triton")

from fused_inception import InceptionSpec  # noqa: E402

from .protocol_sim import (  # noqa: E402
    C3,
    GRIDS,
    SEEDS,
    SHAPES,
    SMALL,
    Deadlock,
    EarlyRead,
    Launch,
    ProtocolError,
    Sim,
    _bm16,
    _cfg,
    record_launch,
    static_faults,
)


@pytest.mark.parametrize("grid_id,max_programs,resident", GRIDS, ids=[g[0] for g in GRIDS])
@pytest.mark.parametrize("shape", SHAPES, ids=[s[0] for s in SHAPES])
@pytest.mark.parametrize("seed", SEEDS, ids=[f"seed{s}" for s in SEEDS])
def test_random_interleavings(shape, grid_id, max_programs, resident, seed):
    """Two back-to-back launches on one state, each under a random interleaving: no deadlock, no
    read of an unreleased R row, every ticket worked and every R and output element written once,
    split partials all present and added in split order, the state left zero."""
    _, spec, n, h, w, cfg = shape
    launch = record_launch(spec, n, h, w, _cfg(spec, n, h, w, cfg), max_programs)
    assert launch.grid == min(max_programs, launch.n_items)
    assert not launch.state.any(), "the launcher's state was not zero before the launch"
    if grid_id == "grid40-of-4":
        assert launch.grid > resident  # the co-residency case proper: programs wait to start
    sim = Sim(launch)
    rng = random.Random(f"{shape[0]}/{grid_id}/{seed}")
    sim.launch(rng, resident)
    sim.launch(rng, resident)  # no reset in between: the first launch left the state zero
    assert sim.stats["max_running"] == min(resident, launch.grid)
    if launch.grid > 1 and sim.table and any(r[0] >= C3 for r in sim.table):
        assert sim.stats["reads"] > 0
    n_slots = len({r[6] for r in sim.table if r[6] >= 0})
    if launch.grid > 1 and n_slots >= 8:
        # The interleavings did reorder split arrivals (the combine order never follows them).
        assert sim.stats["out_of_order_arrivals"] > 0


# -- the simulation can fail ------------------------------------------------------------------------
MUTANT_SHAPE = ("k3k5-n2-5x7-bm16", InceptionSpec(*SMALL, k3=3, k5=5), 2, 5, 7, _bm16(split_k=2))


def _mutant_launch(max_programs=8) -> Launch:
    _, spec, n, h, w, cfg = MUTANT_SHAPE
    return record_launch(spec, n, h, w, cfg, max_programs)


def _short_deps(rows):
    """Every KxK item waits for one tile less than it reads (the last tile of its halo)."""
    out = [list(r) for r in rows]
    for r in out:
        if r[0] >= C3:
            r[8] -= 1
    return out


def _consumer_first(rows):
    """The first KxK item whose halo reaches the next tile moves to ticket 0, before its producers."""
    i = next(i for i, r in enumerate(rows) if r[0] >= C3 and r[8] > r[1])
    return [list(rows[i])] + [list(r) for j, r in enumerate(rows) if j != i]


@pytest.mark.parametrize("seed", [0, 1, 2], ids=lambda s: f"seed{s}")
def test_short_dependency_is_an_early_read(seed):
    """A dependency range one tile short reads R rows before they are released: the simulation
    reports it with several programs, and in-order execution (one program, the interpreter's
    schedule) never shows it, which is why this simulation exists."""
    # Planned for one program, the table issues each KxK item right after its last producer (no
    # lag of a wave), where a short range is most exposed; eight programs then run it.
    launch = _mutant_launch(max_programs=1)
    rows = _short_deps(launch.rows())
    assert static_faults(launch, rows)  # the static checks see it too
    with pytest.raises(EarlyRead, match="before it was released"):
        Sim(launch, rows, grid=8).launch(random.Random(seed), resident=8)
    Sim(launch, rows, grid=1).launch(random.Random(seed), resident=1)  # in ticket order: unseen


def test_consumer_before_producer_deadlocks():
    """A consumer ticketed before its producers: one program spins on it forever; three programs
    of which only one fits on the GPU deadlock just the same (the other two never start); three
    resident programs get through (the spinning one waits while the others produce)."""
    launch = _mutant_launch()
    rows = _consumer_first(launch.rows())
    assert static_faults(launch, rows)
    with pytest.raises(Deadlock, match="program 0 spins on ready"):
        Sim(launch, rows, grid=1).launch(random.Random(0), resident=1)
    with pytest.raises(Deadlock, match="2 not started"):
        Sim(launch, rows, grid=3).launch(random.Random(0), resident=1)
    Sim(launch, rows, grid=3).launch(random.Random(0), resident=3)


def test_dirty_state_is_caught():
    """A kernel whose last program did not zero the state would hand the next launch a ticket
    counter past the end (and full ready counts): the end-of-launch check sees it."""
    sim = Sim(_mutant_launch(), zero_state=False)
    with pytest.raises(ProtocolError, match="launch state is not left zero"):
        sim.launch(random.Random(0), resident=8)


def test_arrival_reset_is_covered_by_the_final_zero():
    """The last split's arrival reset is not what keeps launches apart: the last program zeroes
    the arrival words with the rest of the state. Without the per-slot reset, back-to-back
    launches stay right."""
    sim = Sim(_mutant_launch(), reset_arrivals=False)
    sim.launch(random.Random(0), resident=8)
    sim.launch(random.Random(1), resident=8)


def test_stale_arrival_count_is_caught():
    """An arrival count left at 1 (what an aborted launch would leave without the launcher's
    reset) makes the next launch's first split of that slot combine before its sibling stored a
    partial: the combine check sees a partial of the previous launch."""
    sim = Sim(_mutant_launch())
    sim.launch(random.Random(0), resident=8)
    slot = next(r[6] for r in sim.table if r[6] >= 0)
    sim.state[2 + sim.n_tiles + slot] = 1
    with pytest.raises(ProtocolError, match="partial is"):
        sim.launch(random.Random(1), resident=8)


