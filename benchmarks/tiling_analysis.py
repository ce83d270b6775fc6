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

from fused_inception import GOOGLENET_BLOCKS, GOOGLENET_SPATIAL, googlenet_spec
from fused_inception.kernels.schedule import COLUMNS, KINDS
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


def load_bytes(sched, elem: int) -> dict:
    """The bytes the kernel's loads request for ``sched``, by item kind, counted as
    ``work_count.py`` counts them in the interpreter (masked-in lanes times the element size):
    the work-table row, x, its pool taps and R's KxK taps, weights, biases (fp32), and the split
    partials (fp32) the last split reads back. Exact, from each item's pixel masks, so the byte targets can be checked
    for every block and batch in seconds."""
    import numpy as np

    s, h, w, bm = sched.spec, sched.h, sched.w, sched.block_m
    p = np.arange(sched.n_tiles * bm).reshape(sched.n_tiles, bm)
    ok = p < sched.pixels
    hh, ww = (p % (h * w)) // w, p % w

    def inside(k: int, tap: int) -> np.ndarray:  # per tile: valid rows whose tap neighbour is in the image
        dh, dw = tap // k - k // 2, tap % k - k // 2
        return (ok & (hh + dh >= 0) & (hh + dh < h) & (ww + dw >= 0) & (ww + dw < w)).sum(1)

    rows = ok.sum(1)
    pool_rows = sum(inside(3, t) for t in range(9))
    taps = {k: [inside(k, t) for t in range(k * k)] for k in {s.k3, s.k5}}
    wcols = {0: s.ch1x1 + s.ch3x3red + s.ch5x5red, 1: s.pool_proj, 2: s.ch3x3, 3: s.ch5x5}
    red = {2: (s.ch3x3red, s.k3), 3: (s.ch5x5red, s.k5)}
    out = {kind: 0 for kind in KINDS}
    for kind, tile, c0, width, split, n_splits, _, _, _, k_lo, k_hi in sched.items:
        chunk = sched.chunk_of(kind)
        ncols = max(0, min(c0 + width, wcols[kind]) - c0)
        total = 4 * len(COLUMNS)  # the item's row of the work table
        for kk in range(k_lo, k_hi):
            if kind < 2:
                ch = min((kk + 1) * chunk, s.in_channels) - kk * chunk
                a_rows = rows[tile] if kind == 0 else pool_rows[tile]
            else:
                c, k = red[kind]
                tap, cc = divmod(kk, -(-c // chunk))
                ch = max(0, min((cc + 1) * chunk, c) - cc * chunk)
                a_rows = taps[k][tap][tile]
            total += (a_rows + ncols) * max(ch, 0) * elem
        if split == n_splits - 1:  # the epilogue: in the interpreter the highest split arrives last
            total += ncols * 4 + (n_splits - 1) * rows[tile] * width * 4  # the other splits' partials
        out[KINDS[kind]] += int(total)
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
