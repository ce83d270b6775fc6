"""Compile the Triton kernel for a GPU target on a machine without one, and report its resources.

The launcher is run on CPU tensors of the real shapes with the kernel launch intercepted; each
argument is specialised exactly as Triton's JIT would (16-divisibility, ints equal to 1) and the
kernel is compiled ahead of time for the target (default sm_90, an H100/H200). The report gives,
per case: registers, spilled bytes (stack), shared memory, compile time, how many ``tt.dot``s became
wgmma (``warp_group_dot`` in the TTGIR), the ticket protocol's acquire/release instructions in the
PTX (and whether each acquire poll stayed inside its wait loop), and the SASS instruction mix that
matters (tensor-core HMMA/HGMMA, global-load widths). Usage:

    python benchmarks/compile_report.py [--blocks 3a,4d,5b] [--batches 1,256] [--dtype fp16]
                                        [--layout channels_last] [--arch 90]

Needs no GPU (Triton ships ptxas and cuobjdump); do not set TRITON_INTERPRET.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    sys.exit("compile_report.py compiles for a GPU: unset TRITON_INTERPRET")

import torch  # noqa: E402
import triton  # noqa: E402
from triton._C.libtriton import native_specialize_impl  # noqa: E402
from triton.backends.compiler import BaseBackend, GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from fused_inception import GOOGLENET_BLOCKS, GOOGLENET_SPATIAL, FusedInception, googlenet_spec  # noqa: E402
from fused_inception.kernels import triton_inception as tk  # noqa: E402
from fused_inception.kernels import tuning  # noqa: E402

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def capture_launch(x: torch.Tensor, block: FusedInception, cfg: tuning.TileConfig, sms: int):
    """Run the launcher with the kernel launch intercepted; returns (args, constexpr kwargs, options)."""
    seen = {}

    def fake_run(*args, grid, warmup, **kwargs):
        seen["args"], seen["kwargs"] = args, kwargs

    real = tk.inception_fwd_kernel.run
    tk.inception_fwd_kernel.run = fake_run
    try:
        tk.inception_forward_triton(x, block.packed_weights(x.dtype), block.spec, cfg,
                                    max_programs=sms * cfg.programs_per_sm)
    finally:
        tk.inception_fwd_kernel.run = real
    return seen["args"], seen["kwargs"]


def compile_case(args, kwargs, arch: int, fn=None):
    fn = fn or tk.inception_fwd_kernel
    kwargs = dict(kwargs)
    options = {"num_warps": kwargs.pop("num_warps"), "num_stages": kwargs.pop("num_stages")}
    signature, constexprs, attrs = {}, {}, {}
    positional = dict(zip(fn.arg_names, args))
    for i, name in enumerate(fn.arg_names):
        if name in kwargs:
            signature[name] = "constexpr"
            constexprs[(i,)] = kwargs[name]
            continue
        ty, spec = native_specialize_impl(BaseBackend, positional[name], False, True, True)
        signature[name] = ty
        if ty == "constexpr":
            constexprs[(i,)] = spec
        elif spec:
            attrs[(i,)] = BaseBackend.parse_attr(spec)
    t0 = time.perf_counter()
    kernel = triton.compile(ASTSource(fn, signature, constexprs, attrs), target=GPUTarget("cuda", arch, 32),
                            options=options)
    return kernel, time.perf_counter() - t0


def _tool(name: str) -> str:
    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)


def resources(cubin: bytes) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        usage = subprocess.run([_tool("cuobjdump"), "-res-usage", f.name], capture_output=True, text=True).stdout
        sass = subprocess.run([_tool("cuobjdump"), "-sass", f.name], capture_output=True, text=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", usage)
    ops = Counter(re.findall(
        r"\b(HGMMA|HMMA|LDGSTS(?:\.[0-9A-Z]+)*|LDG\.E(?:\.[0-9A-Z]+)*|STG\.E(?:\.[0-9A-Z]+)*|LDL|STL)\b", sass))
    out = {"regs": int(m[1]), "stack": int(m[2]), "local": int(m[4])} if m else {}
    out["sass"] = dict(ops)
    return out


def dot_facts(kernel) -> dict:
    """How the kernel's ``tt.dot``s were lowered: on sm_90 each should become ``warp_group_dot``
    (wgmma) ops in the TTGIR (``wgmma``: how many; a dot fed from registers may take several); a
    ``tt.dot`` left there (``mma_left``) runs as mma.sync (or FMA). Checked on the TTGIR because
    SASS cannot be mapped back to loops."""
    ttgir = kernel.asm["ttgir"]
    return {"dots": len(re.findall(r"\btt\.dot\b", kernel.asm["ttir"])),
            "wgmma": len(re.findall(r"\bttng\.warp_group_dot\b(?!_)", ttgir)),
            "mma_left": len(re.findall(r"\btt\.dot\b", ttgir))}


def protocol_facts(ptx: str) -> dict:
    """The ticket protocol as compiled: release atomics, and acquire operations (an acquiring
    atomic that LLVM may turn into ``ld.acquire``: also an acquire, unlike a volatile load), and
    ``spin_loops``: short loops (a label, a branch back to it within 40 lines) that poll an acquire,
    one per specialisation of the item code when the compiler kept the poll inside its wait loop
    instead of hoisting it (which would spin forever on a stale value)."""
    lines = ptx.splitlines()
    labels = {m[1]: i for i, line in enumerate(lines) if (m := re.match(r"^(\$L__\w+):", line))}
    back = [(labels[m[1]], i) for i, line in enumerate(lines)
            if (m := re.search(r"\bbra(?:\.uni)?\s+(\$L__\w+);", line)) and labels.get(m[1], i + 1) <= i]
    acquires = [i for i, line in enumerate(lines) if re.search(r"\b(?:ld|atom)\.global\.gpu\.acquire\b", line)]
    return {"release": sum(bool(re.search(r"\batom\.global\.gpu\.release\b", line)) for line in lines),
            "acquire": len(acquires),
            "spin_loops": sum(hi - lo <= 40 and any(lo <= i <= hi for i in acquires) for lo, hi in back)}


# -- the graph kernel (triton_graph.py) ------------------------------------------------------------
GRAPH_CASES = (("Mixed_5b", "fp16", "channels_last", 1), ("Mixed_7c", "fp32", "nchw", 1))
# --sweep: every tile config of SWEEP_SPACE (block_m, block_n, block_k, num_warps, num_stages) on
# these cases (batch 50: pytorch-fid's, no split reductions), to find which ones compile without
# spills and within sm_90's 227 KB of shared memory (default_graph_config picks among those).
SWEEP_CASES = (("Mixed_5b", "fp16", "channels_last", 50), ("Mixed_6e", "fp16", "channels_last", 50),
               ("Mixed_7c", "fp16", "channels_last", 50), ("Mixed_7c", "fp32", "nchw", 50))
SWEEP_SPACE = tuple((m, nb, k, wp, st) for m in (64, 128) for nb in (64, 128) for k in (32, 64) for wp in (4, 8)
                    for st in (2, 3, 4))


def graph_report(arch: int, sms: int, cases=GRAPH_CASES, change: dict | None = None) -> list[dict]:
    """Compile facts of the graph kernel for Inception-v3 blocks: (block, dtype, layout, batch) each,
    with the launcher's default config (its fields in ``change`` replaced). ``align``: the
    launcher's ALIGN/X_ALIGN (``triton_graph._align``; 1/1 is the unhinted scalar path)."""
    from fused_inception.graph import INCEPTION_V3_BLOCKS
    from fused_inception.kernels import triton_graph as tg
    from fused_inception.packing import graph_offsets

    rows = []
    for name, dt, layout, n in cases:
        graph, hw = INCEPTION_V3_BLOCKS[name]
        dtype = DTYPES[dt]
        x = torch.randn(n, graph.in_channels, hw, hw, dtype=dtype)
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        w_total, b_total = graph_offsets(graph)[-1]
        cfg = tuning.default_graph_config(graph, n, hw, hw, sms, dtype)
        if change:
            cfg = replace(cfg, **change)
        seen = {}

        def fake_run(*args, grid, warmup, seen=seen, **kwargs):
            seen["args"], seen["kwargs"] = args, kwargs

        real = tg.graph_fwd_kernel.run
        tg.graph_fwd_kernel.run = fake_run
        try:
            tg.block_forward_triton(x, torch.zeros(w_total, dtype=dtype), torch.zeros(b_total), graph, cfg,
                                    max_programs=sms * cfg.programs_per_sm)
        finally:
            tg.graph_fwd_kernel.run = real
        kernel, secs = compile_case(seen["args"], seen["kwargs"], arch, tg.graph_fwd_kernel)
        r = resources(kernel.asm["cubin"])
        rows.append({"graph": name, "dtype": dt, "layout": layout, "n": n, "m": cfg.block_m, "nb": cfg.block_n,
                     "k": cfg.block_k, "split": cfg.split_k, "warps": cfg.num_warps, "stages": cfg.num_stages,
                     "align": f"{seen['kwargs'].get('ALIGN', 1)}/{seen['kwargs'].get('X_ALIGN', 1)}",
                     "regs": r.get("regs", -1), "spill": r.get("stack", -1), "smem": kernel.metadata.shared,
                     **dot_facts(kernel), **protocol_facts(kernel.asm["ptx"]), "secs": f"{secs:.1f}",
                     "sass": ",".join(f"{k}:{v}" for k, v in sorted(r["sass"].items()))})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--blocks", default=",".join(GOOGLENET_BLOCKS))
    p.add_argument("--batches", default="1,256")
    p.add_argument("--dtype", default="fp16", choices=list(DTYPES))
    p.add_argument("--layout", default="channels_last", choices=["channels_last", "nchw"])
    p.add_argument("--arch", type=int, default=90, help="compute capability x10 (90: H100/H200, 80: A100)")
    p.add_argument("--sms", type=int, default=132)
    p.add_argument("--candidates", action="store_true", help="every autotune candidate, not the heuristic")
    p.add_argument("--graph", action="store_true", help="the graph kernel (triton_graph.py) on GRAPH_CASES instead")
    p.add_argument("--sweep", default="", metavar="I/N",
                   help="with --graph: the I-th of N shares of SWEEP_SPACE on SWEEP_CASES (e.g. 0/1: all of it)")
    p.add_argument("--sweep-only", default="", metavar="KEY=V,..;...",
                   help="with --sweep: only these values, e.g. 'warps=8;stages=2,3;dtype=fp16' "
                        "(keys: m, nb, k, warps, stages, dtype)")
    a = p.parse_args()
    if a.graph:
        print(f"triton {triton.__version__}, sm_{a.arch}, graph kernel; one line per case, key=value")
        if a.sweep:
            part, parts = (int(v) for v in a.sweep.split("/"))
            only = dict(kv.split("=", 1) for kv in a.sweep_only.split(";") if kv)
            keep = {key: set(v.split(",")) for key, v in only.items()}
            names = ("m", "nb", "k", "warps", "stages")
            space = [c for c in SWEEP_SPACE if all(str(v) in keep.get(key, {str(v)}) for key, v in zip(names, c))]
            cases = [c for c in SWEEP_CASES if c[1] in keep.get("dtype", {c[1]})]
            for m, nb, k, wp, st in space[part::parts]:
                change = {"block_m": m, "block_n": nb, "block_k": k, "num_warps": wp, "num_stages": st}
                for row in graph_report(a.arch, a.sms, cases, change):
                    print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
            return
        for row in graph_report(a.arch, a.sms):
            print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
        return
    dtype = DTYPES[a.dtype]
    print(f"triton {triton.__version__}, sm_{a.arch}, {a.dtype} {a.layout}; one line per case, key=value")
    for name in a.blocks.split(","):
        spec = googlenet_spec(name)
        hw = GOOGLENET_SPATIAL[name]
        block = FusedInception.from_spec(spec, dtype=dtype).eval()
        for n in (int(b) for b in a.batches.split(",")):
            x = torch.randn(n, spec.in_channels, hw, hw, dtype=dtype)
            if a.layout == "channels_last":
                x = x.contiguous(memory_format=torch.channels_last)
            cfgs = (tuning.candidate_configs(spec, n, hw, hw, a.sms, dtype, a.layout == "channels_last") if a.candidates
                    else [tuning.default_config(spec, n, hw, hw, a.sms, dtype, a.layout == "channels_last")])
            for cfg in cfgs:
                args, kwargs = capture_launch(x, block, cfg, a.sms)
                kernel, secs = compile_case(args, kwargs, a.arch)
                r = resources(kernel.asm["cubin"])
                facts = {"block": name, "n": n, "m": cfg.block_m, "nb": cfg.block_n, "k": cfg.block_k,
                         "kr": cfg.block_kr, "split": cfg.split_k, "warps": cfg.num_warps,
                         "stages": cfg.num_stages, "regs": r.get("regs", -1), "spill": r.get("stack", -1),
                         "smem": kernel.metadata.shared, **dot_facts(kernel), **protocol_facts(kernel.asm["ptx"]),
                         "secs": f"{secs:.1f}"}
                sass = " ".join(f"{k}:{v}" for k, v in sorted(r["sass"].items()))
                print(" ".join(f"{k}={v}" for k, v in facts.items()), f"sass={sass.replace(' ', ',')}", flush=True)


if __name__ == "__main__":
    main()
