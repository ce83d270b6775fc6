"""Output of the benchmarks: tables, JSON, plots, and the headline summaries of saved results.

``python benchmarks/report.py summary FILE.json ...`` prints the short headline tables of saved
results (used last by ``device_check.sh``).
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import providers as P
import torch


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object] | str | None],
                 right: Iterable[int] = ()) -> str:
    """Plain monospace table; ``right`` lists the columns aligned right. A row ``None`` is a rule,
    a string row is printed as it is (a heading spanning the columns)."""
    right = set(right)
    cells = [r if r is None or isinstance(r, str) else [("" if v is None else str(v)) for v in r] for r in rows]
    widths = [len(h) for h in headers]
    for r in cells:
        if isinstance(r, list):
            widths = [max(w, len(c)) for w, c in zip(widths, r)]

    def line(values: Sequence[str]) -> str:
        padded = (v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths)))
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * w for w in widths)
    out = [line(headers), rule]
    out += [rule if r is None else r if isinstance(r, str) else line(r) for r in cells]
    return "\n".join(out)


def fmt(value: float | None, digits: int = 3) -> str:
    """Significant-digit formatting for table cells ('-' for missing)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value == 0:
        return "0"
    mag = math.floor(math.log10(abs(value)))
    if mag < -3:
        return f"{value:.{max(digits - 1, 0)}e}"
    decimals = max(0, digits - 1 - mag)
    return f"{value:.{decimals}f}"


def json_default(o):
    """Objects json cannot write (NaN and inf floats never get here: ``_nan_to_none`` made them None)."""
    if isinstance(o, (torch.dtype, torch.device, Path)):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _nan_to_none(o):
    if isinstance(o, float) and (math.isnan(o) or math.isinf(o)):
        return None
    if isinstance(o, dict):
        return {k: _nan_to_none(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_nan_to_none(v) for v in o]
    return o


def write_json(path: Path, obj: dict) -> None:
    """Atomic write (tmp file + rename), so a run stopped mid-way leaves the last complete state."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_nan_to_none(obj), indent=1, default=json_default) + "\n")
    os.replace(tmp, path)


def try_import_pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def group_cases(cases: Sequence[dict], keys: Sequence[str]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for c in cases:
        groups.setdefault(tuple(c[k] for k in keys), []).append(c)
    return groups


PROVIDER_COLORS = {"eager": "#7f7f7f", "eager-graph": "#bcbd22", "compile": "#9467bd", "fused-triton": "#1f77b4",
                   "fused-triton-graph": "#17becf", "fused-cuda": "#d62728", "fused-cuda-graph": "#ff9896"}


def plot_bars(plt, ax, labels: Sequence[str], series: dict[str, list[float | None]], *, log: bool,
              ylabel: str, title: str, hline: float | None = None) -> None:
    """Grouped bars, one colour per provider (the same in every panel); missing values leave gaps."""
    series = {k: v for k, v in series.items() if any(x is not None and x > 0 for x in v)}
    n = max(len(series), 1)
    width = 0.8 / n
    for i, (name, values) in enumerate(series.items()):
        xs = [j + (i - (n - 1) / 2) * width for j in range(len(labels))]
        ys = [v if v is not None and v > 0 else float("nan") for v in values]
        ax.bar(xs, ys, width=width, label=name, color=PROVIDER_COLORS.get(name))
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=90 if len(labels) > 12 else 0, fontsize=8)
    ax.set_xlim(-0.6, len(labels) - 0.4)
    if log:
        from matplotlib.ticker import FuncFormatter

        ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
        ax.tick_params(axis="y", which="minor", labelsize=6)
    if hline is not None:
        ax.axhline(hline, color="black", linewidth=0.8)
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo, max(hi, hline * 1.5))  # keep the reference line in view
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    if series:
        ax.legend(fontsize=7)


def plot_speedups(plt, ax, labels: Sequence[str], cases: Sequence[dict], title: str) -> None:
    """The fused providers' speedups over the best peer, one bar group per case."""
    names = dict.fromkeys(n for c in cases for n in c["providers"] if P.provider_group(n) == "fused")
    speed = {n: [c["providers"].get(n, {}).get("speedup_vs_best_peer") for c in cases] for n in names}
    plot_bars(plt, ax, labels, speed, log=True, ylabel="speedup over best peer (x)", title=title, hline=1.0)


def pyplot_or_warn():
    """``matplotlib.pyplot`` (Agg backend), or None after saying on stderr that it is missing."""
    plt = try_import_pyplot()
    if plt is None:
        print("matplotlib is not installed: no PNG (pip install matplotlib)", file=sys.stderr)
    return plt


def save_figure(plt, fig, path: Path) -> bool:
    """Lay out, write as PNG and close ``fig``; True (``plot`` returns it: a PNG was written)."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def status_cell(r: dict) -> str:
    """A provider's check in the GPU tables: 'ok <rel err>', 'MISMATCH <rel err>', 'ERROR' or the status."""
    st = r.get("status", "-")
    if st == "ok":
        return f"ok {fmt(r.get('rel_err'), 2)}"
    if st == "mismatch":
        return f"MISMATCH {fmt(r.get('rel_err'), 2)}"
    return st.upper() if st == "error" else st


# -- summaries (device_check.sh prints these last) --------------------------------------------------
def summarize_block(data: dict) -> str:
    rows = []
    fused = [p for p in P.FUSED if any(p in c["providers"] for c in data.get("cases", []))]
    for c in data.get("cases", []):
        prov = c["providers"]
        best = c.get("best_peer")
        best_us = prov[best]["median_ms"] * 1e3 if best else None
        row = [c["block"], c["batch"], c["dtype"], c.get("method", "-"), fmt(best_us), best or "-"]
        for p in fused:
            r = prov.get(p, {})
            if r.get("status") != "ok":
                row += [r.get("status", "-"), "", ""]
            elif r.get("median_ms") is None:
                row += ["ok (untimed)", "", ""]
            else:
                row += [fmt(r["median_ms"] * 1e3), fmt(r.get("speedup_vs_best_peer")), fmt(r.get("pct_floor"))]
        rows.append(row)
    headers = ["block", "N", "dtype", "method", "best peer us", "best peer"]
    for p in fused:
        headers += [f"{p} us", "x peer", "%floor"]
    title = f"{data.get('benchmark', 'bench_block')}: {data.get('env', {}).get('gpu', {}).get('name', 'no GPU')}"
    if not data.get("complete", False):
        title += "  (INCOMPLETE: the run stopped early)"
    return title + "\n" + format_table(headers, rows, right=range(1, len(headers)))


def summarize_googlenet(data: dict) -> str:
    """A whole network's results (bench_googlenet.py, bench_inception_v3.py)."""
    rows = []
    providers = list(dict.fromkeys(p for c in data.get("cases", []) for p in c["providers"]))
    for c in data.get("cases", []):
        row = [c["dtype"], c["batch"], c.get("image_size", "-")]
        for p in providers:
            r = c["providers"].get(p, {})
            row.append(fmt(r.get("images_per_s")) if r.get("images_per_s") else r.get("status", "-"))
        best = c.get("best_peer")
        fused_best = max((c["providers"][p].get("speedup_vs_best_peer") or 0 for p in c["providers"]
                          if P.provider_group(p) == "fused"), default=0)
        row += [best or "-", fmt(fused_best) if fused_best else "-"]
        rows.append(row)
    headers = ["dtype", "N", "img", *[f"{p} img/s" for p in providers], "best peer", "best fused x peer"]
    title = f"{data.get('benchmark', 'bench_googlenet')}: {data.get('env', {}).get('gpu', {}).get('name', 'no GPU')}"
    if not data.get("complete", False):
        title += "  (INCOMPLETE: the run stopped early)"
    return title + "\n" + format_table(headers, rows, right=range(1, len(headers)))


def summarize(paths: Sequence[str]) -> int:
    status = 0
    for p in paths:
        path = Path(p)
        if not path.exists():
            print(f"{path}: missing (the benchmark did not write it)")
            status = 1
            continue
        data = json.loads(path.read_text())
        kind = data.get("benchmark")
        # bench_block[_<family>]: per block; bench_googlenet, bench_inception_v3: per network case
        print(summarize_block(data) if kind.startswith("bench_block") else summarize_googlenet(data))
        print()
    return status


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "summary":
        sys.exit(summarize(sys.argv[2:]))
    print("usage: python benchmarks/report.py summary RESULTS.json [...]", file=sys.stderr)
    sys.exit(2)
