"""Work decomposition of the Triton kernel per GoogLeNet block (no GPU needed).

For each block and batch, from the launcher's own work table (``kernels/schedule.py``): the
tile config the heuristic picks, the work items and how many waves of persistent programs they
make, the splits, and the multiply-accumulates the items issue at their padded MMA shapes against
the block's minimum. ``benchmarks/work_count.py`` counts the same MACs inside the interpreter while
the kernel runs (a test checks both agree exactly). Usage:

    python benchmarks/tiling_analysis.py [--sms 132] [--batches 1 8 32 256]
"""

from __future__ import annotations

import argparse

import numpy as np

from fused_inception import GOOGLENET_BLOCKS, GOOGLENET_SPATIAL, googlenet_spec
from fused_inception.kernels.schedule import C3, C5, COLUMNS, KINDS, P, Q, Schedule
from fused_inception.kernels.tuning import default_config, schedule_for


def analyse(name: str, n: int, sms: int, cfg=None) -> dict:
    """Counts for GoogLeNet block ``name`` at batch ``n`` with tile config ``cfg`` (default: the
    launcher's heuristic for that batch, used when autotuning is off)."""
    return {"block": name, **analyse_spec(googlenet_spec(name), GOOGLENET_SPATIAL[name], n, sms, cfg)}


def analyse_spec(s, hw: int, n: int, sms: int, cfg=None) -> dict:
    """``analyse`` for any block ``s`` on an ``hw`` x ``hw`` map."""
    cfg = cfg or default_config(s, n, hw, hw, sms)
    sched = schedule_for(s, n, hw, hw, cfg)
    useful = n * hw * hw * s.macs_per_pixel
    macs = {kind: 0 for kind in KINDS}
    for row in sched.items:
        m, nn, k = sched.item_mnk(row)
        macs[KINDS[row[0]]] += m * nn * k
    done = sum(macs.values())
    programs = sms * cfg.programs_per_sm
    return {"n": n, "block_m": cfg.block_m, "split_k": cfg.split_k, "tiles": sched.n_tiles,
            "items": len(sched.items), "waves": len(sched.items) / programs, "useful_macs": useful,
            "macs": done, "overhead": done / useful, "macs_by_kind": macs}


def item_loads(sched: Schedule, elem: int) -> tuple[tuple[int, ...], ...]:
    """Per row of the table: (x or R bytes, weight bytes, other bytes, channels reduced, output
    columns) its loads request, counted as ``work_count.py`` counts them in the interpreter (masked
    lanes, i.e. taps outside the image, padding channels and columns, move nothing; in the
    interpreter the highest split arrives last). Other: the table row, and for the last split the
    bias (fp32) and the other splits' fp32 partials. Exact, from each item's pixel masks, so the
    byte targets can be checked for every block and batch in seconds."""
    s, h, w, bm = sched.spec, sched.h, sched.w, sched.block_m
    p = np.arange(sched.n_tiles * bm).reshape(sched.n_tiles, bm)
    ok, hh, ww = p < sched.pixels, (p % (h * w)) // w, p % w
    rows = ok.sum(1)

    def inside(k: int) -> np.ndarray:  # (tiles, taps): valid rows whose tap neighbour is in the image
        d = [(t // k - k // 2, t % k - k // 2) for t in range(k * k)]
        return np.stack([(ok & (hh + a >= 0) & (hh + a < h) & (ww + b >= 0) & (ww + b < w)).sum(1) for a, b in d], 1)

    cums = {}
    for kind in (P, Q, C3, C5):  # per chunk: channels, and rows x channels read; then prefix sums
        ch, kk = sched.chunk_of(kind), np.arange(sched.k_chunks(kind))
        if kind in (P, Q):
            chans = np.minimum((kk + 1) * ch, s.in_channels) - kk * ch
            a_rows = rows[:, None] if kind == P else inside(3).sum(1, keepdims=True)
        else:
            cred, k = (s.ch3x3red, s.k3) if kind == C3 else (s.ch5x5red, s.k5)
            chans = np.clip(cred - (kk % -(-cred // ch)) * ch, 0, ch)
            a_rows = inside(k)[:, kk // -(-cred // ch)]
        cums[kind] = (np.concatenate([[0], np.cumsum(chans)]), np.pad(np.cumsum(a_rows * chans, 1), ((0, 0), (1, 0))))
    n_cols = {P: s.ch1x1 + s.ch3x3red + s.ch5x5red, Q: s.pool_proj, C3: s.ch3x3, C5: s.ch5x5}
    out = []
    for kind, tile, c0, width, split, n_splits, _, _, _, k_lo, k_hi in sched.items:
        (c_cum, a_cum), cols = cums[kind], max(0, min(c0 + width, n_cols[kind]) - c0)
        kv, other = int(c_cum[k_hi] - c_cum[k_lo]), 4 * len(COLUMNS)
        if split == n_splits - 1:
            other += cols * 4 + (n_splits - 1) * int(rows[tile]) * width * 4
        out.append((int(a_cum[tile, k_hi] - a_cum[tile, k_lo]) * elem, kv * cols * elem, other, kv, cols))
    return tuple(out)


def load_bytes(sched: Schedule, elem: int) -> dict:
    """``item_loads`` summed by item kind."""
    out = {kind: 0 for kind in KINDS}
    for row, loads in zip(sched.items, item_loads(sched, elem)):
        out[KINDS[row[0]]] += sum(loads[:3])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sms", type=int, default=132, help="SM count (H100 SXM / H200: 132)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 256])
    a = p.parse_args()
    print(f"{'block':5} {'n':>4} {'BM':>4} {'split':>5} {'tiles':>6} {'items':>7} {'waves':>7} "
          f"{'GMAC':>8} {'MAC/min':>8}")
    for n in a.batches:
        for name in GOOGLENET_BLOCKS:
            r = analyse(name, n, a.sms)
            print(f"{r['block']:5} {r['n']:>4} {r['block_m']:>4} {r['split_k']:>5} {r['tiles']:>6} {r['items']:>7} "
                  f"{r['waves']:>7.2f} {r['useful_macs'] / 1e9:>8.3f} {r['overhead']:>8.3f}")


if __name__ == "__main__":
    main()
