"""The kernel's launch protocol, simulated: what the launcher hands the kernel (recorded, not
copied), a randomized-interleaving simulation of persistent programs working the table, the
static checks of a table, and the cases the tests share (tests/test_protocol.py,
tests/test_schedule.py). A helper module, not a test file."""

from __future__ import annotations

import inspect
import math
import random
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import fused_inception.kernels.triton_inception as tk
from fused_inception import InceptionSpec, googlenet_spec
from fused_inception.kernels.schedule import C3, C5, COLUMNS, KINDS, P, Q
from fused_inception.kernels.tuning import TileConfig, default_config, schedule_for

from .helpers import make_block

CPU = torch.device("cpu")
_KERNEL_PARAMS = list(inspect.signature(tk.inception_fwd_kernel.fn).parameters)


# -- what the launcher hands the kernel -----------------------------------------------------------
@dataclass
class Launch:
    """One recorded launch: the grid, the table and state tensors, and every other kernel argument
    by name (NHW, H, W, n_items, TILE_TARGET, BM, K3, ...)."""

    spec: InceptionSpec
    cfg: TileConfig
    grid: int
    table: torch.Tensor
    state: torch.Tensor
    args: dict

    def __getattr__(self, name):
        try:
            return self.__dict__["args"][name]
        except KeyError:
            raise AttributeError(name) from None

    def rows(self) -> list[list[int]]:
        return self.table.reshape(-1, len(COLUMNS)).tolist()


class _Recorder:
    """Stands in for ``inception_fwd_kernel``: ``kernel[grid](*args, **kw)`` records the call."""

    def __init__(self):
        self.calls = []

    def __getitem__(self, grid):
        return lambda *args, **kw: self.calls.append((grid, args, kw))


def record_launch(spec: InceptionSpec, n: int, h: int, w: int, cfg: TileConfig, max_programs: int) -> Launch:
    """Call ``inception_forward_triton`` as the op does, with the kernel replaced by a recorder."""
    block = make_block(spec)
    x = torch.empty(n, spec.in_channels, h, w)
    recorder = _Recorder()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tk, "inception_fwd_kernel", recorder)
        tk.inception_forward_triton(x, block.packed_weights(x.dtype), spec, cfg, max_programs=max_programs)
    (grid, args, kw), = recorder.calls
    named = dict(zip(_KERNEL_PARAMS, args)) | {k: v for k, v in kw.items() if k in _KERNEL_PARAMS}
    assert set(named) == set(_KERNEL_PARAMS), "the recorder missed kernel arguments"
    sched = schedule_for(spec, n, h, w, cfg, max_programs)
    # The table is the launcher's cached upload of this schedule, not a rebuilt copy.
    assert named["table_ptr"] is tk.work_table(sched, CPU)
    return Launch(spec, cfg, grid[0], named["table_ptr"], named["state_ptr"], named)


# -- the protocol simulation ----------------------------------------------------------------------
class ProtocolError(AssertionError):
    """The simulated launch broke the protocol (an early read, a lost write, dirty state...)."""


class Deadlock(ProtocolError):
    """Every resident program spins on a ready count nobody can raise."""


class EarlyRead(ProtocolError):
    """A KxK item read R cells that were not yet stored and released."""


class Sim:
    """The kernel's protocol over one recorded launch, on a simulated state buffer.

    Each program is a generator: the code between two ``yield`` is one atomic step against shared
    state, ``yield tile`` means "spinning on ready[tile]" (the scheduler runs a spinning program
    again only once its poll would succeed: a failed poll changes nothing). ``zero_state`` and
    ``reset_arrivals`` switch off the kernel's two clean-ups (the last program's zeroing, the last
    split's arrival reset), to see what each one is needed for.
    """

    def __init__(self, launch: Launch, table: list[list[int]] | None = None, grid: int | None = None,
                 zero_state: bool = True, reset_arrivals: bool = True):
        L = launch
        self.table = table if table is not None else L.rows()
        self.grid = grid if grid is not None else L.grid
        self.n_items, self.n_tiles, self.state_size = L.n_items, L.n_tiles, L.state_size
        assert self.n_items == len(self.table)
        self.n_programs = L.n_programs if grid is None else grid
        self.target, self.bm, self.nhw, self.h, self.w = L.TILE_TARGET, L.BM, L.NHW, L.H, L.W
        self.c1, self.c3r, self.c3, self.c5r, self.c5, self.cp = L.C1, L.C3R, L.C3, L.C5R, L.C5, L.CP
        self.rc = self.c3r + self.c5r
        self.cout = self.c1 + self.c3 + self.c5 + self.cp
        # (K, reduce channels, chunk, first R column) of the two KxK kinds, as the kernel reads them
        self.kxk = {C3: (L.K3, L.C3R, L.BK3, 0), C5: (L.K5, L.C5R, L.BK5, L.C3R)}
        self.zero_state, self.reset_arrivals = zero_state, reset_arrivals
        # The launch state as the launcher hands it over: its real contents and size (the shared
        # buffer may be larger than this launch's state_size).
        self.state = launch.state.tolist()
        self.split_ticket = {(r[6], r[4]): i for i, r in enumerate(self.table) if r[6] >= 0}
        self.launch_no = 0
        self._halo = {}
        self.stats = {"steps": 0, "reads": 0, "out_of_order_arrivals": 0, "max_running": 0, "spins": 0}

    # geometry ------------------------------------------------------------------------------------
    def tile_pixels(self, tile: int) -> np.ndarray:
        return np.arange(tile * self.bm, min(tile * self.bm + self.bm, self.nhw))

    def halo_rows(self, kind: int, tile: int, tap: int) -> np.ndarray:
        """R rows the kernel's tap ``tap`` loads for the valid pixels of ``tile`` (its mask)."""
        key = (kind, tile, tap)
        if key not in self._halo:
            k = self.kxk[kind][0]
            p = self.tile_pixels(tile)
            hw = self.h * self.w
            hh, ww = (p % hw) // self.w, p % self.w
            dh, dw = tap // k - k // 2, tap % k - k // 2
            inside = (hh + dh >= 0) & (hh + dh < self.h) & (ww + dw >= 0) & (ww + dw < self.w)
            rows = (p + dh * self.w + dw)[inside]
            assert (rows // hw == p[inside] // hw).all(), "a halo read crosses into another image"
            self._halo[key] = rows
        return self._halo[key]

    def read_set(self, row: list[int]) -> dict[int, np.ndarray]:
        """Every R row a KxK item reads, by tap (the tiles its reads land in)."""
        kind, tile, k_lo, k_hi = row[0], row[1], row[9], row[10]
        _, cred, bkr, _ = self.kxk[kind]
        nch = -(-cred // bkr)
        return {kk // nch: self.halo_rows(kind, tile, kk // nch) for kk in range(k_lo, k_hi)}

    # one program -----------------------------------------------------------------------------------
    def _claim(self) -> int:
        ticket = self.state[0]
        self.state[0] += 1
        return ticket

    def _check_reads(self, ticket: int, row: list[int], chunks: list[int]) -> None:
        kind, tile = row[0], row[1]
        _, cred, bkr, _ = self.kxk[kind]
        nch = -(-cred // bkr)
        for tap in sorted({kk // nch for kk in chunks}):
            rows = self.halo_rows(kind, tile, tap)
            self.stats["reads"] += len(rows)
            # The whole R row: every column block of the tile's P items stored and released it.
            ok = self.r_released[rows].all(axis=1)
            if not ok.all():
                bad = int(rows[~ok][0])
                bt = bad // self.bm
                raise EarlyRead(
                    f"launch {self.launch_no}: {KINDS[kind]} ticket {ticket} (tile {tile}, deps {row[7]}..{row[8]}, "
                    f"split {row[4]}/{row[5]}) read R row {bad} of tile {bt} before it was released "
                    f"(R columns stored: {int(self.r_stored[bad].astype(bool).sum())}/{self.rc}; "
                    f"ready[{bt}] = {self.state[2 + bt]} of {self.target})")

    def _epilogue(self, row: list[int]) -> None:
        kind, tile, c0, width = row[:4]
        p = self.tile_pixels(tile)
        p0, p1 = p[0], p[-1] + 1
        if kind == P:
            hi = min(c0 + width, self.c1 + self.rc)
            if c0 < self.c1:
                self.out_written[p0:p1, c0:min(hi, self.c1)] += 1
            if hi > self.c1:
                self.r_stored[p0:p1, max(c0, self.c1) - self.c1:hi - self.c1] += 1
        else:
            first, cols = {Q: (self.c1 + self.c3 + self.c5, self.cp), C3: (self.c1, self.c3),
                           C5: (self.c1 + self.c3, self.c5)}[kind]
            self.out_written[p0:p1, first + c0:first + min(c0 + width, cols)] += 1

    def _release(self, row: list[int]) -> None:
        tile, c0, width = row[1], row[2], row[3]
        p = self.tile_pixels(tile)
        lo, hi = max(c0, self.c1) - self.c1, min(c0 + width, self.c1 + self.rc) - self.c1
        if hi > lo:
            self.r_released[p[0]:p[-1] + 1, lo:hi] = True
        assert 2 + tile < self.state_size, f"ready[{tile}] lies outside the launch state"
        self.state[2 + tile] += 1

    def program(self, rng: random.Random):
        st = self.state
        arrive = 2 + self.n_tiles
        ticket = self._claim()
        yield
        while ticket < self.n_items:
            row = self.table[ticket]
            kind, tile, c0, width, split, n_splits, slot, dep_lo, dep_hi, k_lo, k_hi = row
            self.worked[ticket] += 1
            if kind >= C3:
                for t in range(dep_lo, dep_hi + 1):
                    while st[2 + t] < self.target:  # the spinning acquire
                        yield t
                    yield  # the poll that saw the count reach the target
            chunks = list(range(k_lo, k_hi))
            while chunks:  # the reduction, a random number of chunks per step
                take = rng.randint(1, 4)
                group, chunks = chunks[:take], chunks[take:]
                if kind >= C3:
                    self._check_reads(ticket, row, group)
                yield
            last = n_splits == 1
            if n_splits > 1:
                assert 0 <= slot and arrive + slot < self.state_size, f"slot {slot} lies outside the launch state"
                self.ws[slot, split] = (self.launch_no, ticket)  # the fp32 partial
                yield
                arrived = st[arrive + slot]  # acq_rel atomic_add
                st[arrive + slot] += 1
                self.arrivals.setdefault(slot, []).append(split)
                yield
                last = arrived == n_splits - 1
                if last:
                    # The kernel adds the partials in split order: each must be this launch's.
                    order = []
                    for s in range(n_splits):
                        want = (self.launch_no, self.split_ticket.get((slot, s)))
                        if self.ws.get((slot, s)) != want:
                            raise ProtocolError(
                                f"launch {self.launch_no}: slot {slot} combined by split {split} (ticket {ticket}) "
                                f"but split {s}'s partial is {self.ws.get((slot, s))}, not {want}: arrivals "
                                f"{self.arrivals[slot]}")
                        order.append(s)
                    self.combined.setdefault(slot, []).append(order)
                    if self.reset_arrivals:
                        st[arrive + slot] = 0  # atomic_xchg
                    yield
            if last:
                self._epilogue(row)
                yield
                if kind == P:
                    self._release(row)
                    yield
            ticket = self._claim()
            yield
        finished = st[1]
        st[1] += 1
        yield
        if finished == self.n_programs - 1 and self.zero_state:
            st[:self.state_size] = [0] * self.state_size

    # one launch ------------------------------------------------------------------------------------
    def step_bound(self) -> int:
        """The most non-spinning steps a launch takes (each item at most: its acquires, a step per
        chunk, partial, arrival, combine, epilogue, release, next claim)."""
        return sum(max(r[8] - r[7] + 1, 0) + (r[10] - r[9]) + 6 for r in self.table) + 3 * self.grid

    def launch(self, rng: random.Random, resident: int) -> None:
        """Run one launch to its end under a random interleaving; raise ProtocolError on a fault."""
        self.launch_no += 1
        self.r_stored = np.zeros((self.nhw, self.rc), np.int32)
        self.r_released = np.zeros((self.nhw, self.rc), bool)
        self.out_written = np.zeros((self.nhw, self.cout), np.int32)
        self.worked = [0] * self.n_items
        self.ws, self.arrivals, self.combined = {}, {}, {}
        st, target = self.state, self.target
        # Speeds spread over two orders of magnitude: some programs lag far behind the others.
        speed = [math.exp(rng.gauss(0.0, 1.5)) for _ in range(self.grid)]
        pending = list(range(self.grid))
        rng.shuffle(pending)  # the hardware may start blocks in any order
        running: dict[int, list] = {}

        def start():
            pid = pending.pop()
            running[pid] = [self.program(random.Random(rng.random())), None]

        while pending and len(running) < resident:
            start()
        bound, steps = self.step_bound(), 0
        while running:
            self.stats["max_running"] = max(self.stats["max_running"], len(running))
            runnable = [pid for pid, (_, t) in running.items() if t is None or st[2 + t] >= target]
            if not runnable:
                spinning = "; ".join(f"program {pid} spins on ready[{t}] = {st[2 + t]} < {target}"
                                     for pid, (_, t) in sorted(running.items()))
                raise Deadlock(f"launch {self.launch_no}: deadlock after {steps} steps, {len(running)} of "
                               f"{self.grid} programs resident ({resident} fit), {len(pending)} not started, "
                               f"ticket counter {st[0]} of {self.n_items} items: {spinning}")
            pid = rng.choices(runnable, weights=[speed[p] for p in runnable])[0]
            prog = running[pid]
            if prog[1] is not None:
                self.stats["spins"] += 1
            try:
                prog[1] = next(prog[0])
            except StopIteration:
                del running[pid]
                if pending:
                    start()
            steps += 1
            if steps > bound:
                raise ProtocolError(f"launch {self.launch_no}: no end after {steps} steps (bound {bound})")
        self.stats["steps"] += steps
        self._check_launch()

    def _check_launch(self) -> None:
        n = self.launch_no
        missed = [i for i, c in enumerate(self.worked) if c != 1]
        if missed:
            raise ProtocolError(f"launch {n}: tickets worked other than once: {missed[:10]} "
                                f"({[self.worked[i] for i in missed[:10]]})")
        for name, arr in (("R", self.r_stored), ("output", self.out_written)):
            bad = np.argwhere(arr != 1)
            if len(bad):
                p, c = bad[0]
                raise ProtocolError(f"launch {n}: {len(bad)} {name} elements not written exactly once, e.g. "
                                    f"pixel {p} channel {c} written {arr[p, c]} times")
        for slot, orders in self.combined.items():
            if orders != [list(range(len(orders[0])))]:
                raise ProtocolError(f"launch {n}: slot {slot} combined {len(orders)} times, orders {orders}")
        slots = {r[6] for r in self.table if r[6] >= 0}
        if set(self.combined) != slots:
            raise ProtocolError(f"launch {n}: split slots never combined: {sorted(slots - set(self.combined))}")
        self.stats["out_of_order_arrivals"] += sum(a != sorted(a) for a in self.arrivals.values())
        dirty = {i: v for i, v in enumerate(self.state) if v}
        if dirty:
            raise ProtocolError(f"launch {n}: the launch state is not left zero: {dict(list(dirty.items())[:8])} "
                                f"(0: ticket, 1: finished, 2..{1 + self.n_tiles}: ready counts, then arrivals)")


# -- cases --------------------------------------------------------------------------------------------
SMALL = (9, 4, 6, 8, 3, 5, 4)  # every branch below one 16-wide column block
WIDE = (24, 40, 24, 72, 8, 40, 24)  # P: 104 = 64 + 32 + 16 with block_n 64; C3: 72 = 64 + 16


def _bm16(block_n=16, split_k=1):
    return TileConfig(block_m=16, block_n=block_n, block_k=16, block_kr=16, split_k=split_k)


# (id, spec, n, h, w, cfg); cfg None: default_config for the shape, as on an H100/H200.
SHAPES = [
    ("3a-n1-28x28-default", googlenet_spec("3a"), 1, 28, 28, None),
    ("3a-n2-6x5-default", googlenet_spec("3a", "paper"), 2, 6, 5, None),
    ("4e-n1-7x7-default", googlenet_spec("4e", "paper"), 1, 7, 7, None),
    ("4e-n2-6x6-default", googlenet_spec("4e"), 2, 6, 6, None),
    ("5b-n1-7x7-default", googlenet_spec("5b", "paper"), 1, 7, 7, None),
    ("5b-n2-7x7-default", googlenet_spec("5b"), 2, 7, 7, None),
    ("k3k5-n2-5x7-bm16", InceptionSpec(*SMALL, k3=3, k5=5), 2, 5, 7, _bm16()),
    ("k3k5-n2-5x7-bm16-split3", InceptionSpec(*SMALL, k3=3, k5=5), 2, 5, 7, _bm16(split_k=3)),
    ("k1k7-n3-6x4-bm16-split2", InceptionSpec(*SMALL, k3=1, k5=7), 3, 6, 4, _bm16(split_k=2)),
    ("k7k3-n2-3x9-bm16", InceptionSpec(*SMALL, k3=7, k5=3), 2, 3, 9, _bm16()),
    ("k1k1-n2-4x4-bm16-split2", InceptionSpec(*SMALL, k3=1, k5=1), 2, 4, 4, _bm16(split_k=2)),
    ("k5k3-n2-9x11-bm16-bn64-split4", InceptionSpec(*WIDE, k3=5, k5=3), 2, 9, 11, _bm16(64, 4)),
]
# (id, max_programs the launcher is given, programs resident at once). "grid3-of-8": fewer programs
# than fit; "grid40-of-4": ten times more than fit (the rest start as running ones exit);
# "grid264-of-132": an H100/H200 launch (2 programs per SM) where occupancy lets one per SM run;
# "grid1": one program, in ticket order (the interpreter's schedule).
GRIDS = [("grid3-of-8", 3, 8), ("grid40-of-4", 40, 4), ("grid264-of-132", 264, 132), ("grid1", 1, 1)]
SEEDS = [0, 1]


def _cfg(spec, n, h, w, cfg):
    return cfg if cfg is not None else default_config(spec, n, h, w)


# -- static checks of the table ---------------------------------------------------------------------
def static_faults(launch: Launch, rows: list[list[int]] | None = None) -> list[str]:
    """What is wrong with a table (empty: nothing): dependency order and halo coverage."""
    rows = rows if rows is not None else launch.rows()
    sim = Sim(launch, rows)
    faults = []
    last_p = {}  # tile -> ticket of its last P item
    for i, r in enumerate(rows):
        if r[0] == P:
            last_p[r[1]] = i
    for i, r in enumerate(rows):
        if r[0] < C3:
            continue
        deps = range(r[7], r[8] + 1)
        late = [t for t in deps if last_p.get(t, math.inf) >= i]
        if late:
            faults.append(f"ticket {i} ({KINDS[r[0]]} tile {r[1]}) precedes P items of tiles {late}")
        read_tiles = {int(t) for rows_ in sim.read_set(r).values() for t in np.unique(rows_ // sim.bm)}
        if not read_tiles <= set(deps):
            faults.append(f"ticket {i} ({KINDS[r[0]]} tile {r[1]}) reads tiles {sorted(read_tiles - set(deps))} "
                          f"outside its deps {r[7]}..{r[8]}")
    return faults


