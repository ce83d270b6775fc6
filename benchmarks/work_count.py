"""The work the Triton kernel really issues, counted inside Triton's interpreter (no GPU needed).

Runs the real kernel on CPU tensors with ``tl.dot`` and ``tl.load`` instrumented and reports, per
block and batch, the multiply-accumulates the dots issue and the bytes the loads request, each
over the block's minimum (``counting.py``: ``block_flops`` / ``block_min_bytes``: x, weights and output
once). A dot counts M*N*K of its operand tiles, padding included: that is what tensor cores run.
A load counts its masked-in lanes times the element size, the bytes the memory system is asked
for (L2 or DRAM; the interpreter cannot tell which). Shifted loads for pool taps and KxK taps
count each time. These are counts, not timings. Usage:

    python benchmarks/work_count.py [--blocks 3a 4e] [--batches 1 8] [--dtype fp16] [--layout channels_last]
                                    [--sms 132]

The tile config is the launcher's untimed heuristic for a GPU with ``--sms`` SMs (default 132, an
H100/H200), the one it runs when autotuning is off (batch-aware: small batches split reductions).

Each case runs a whole block in the interpreter: seconds for batch 1, minutes for large batches.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import environment as E  # noqa: E402
import report as R  # noqa: E402
from counting import block_flops, block_min_bytes  # noqa: E402

if __name__ == "__main__":
    E.use_interpreter_if_no_cuda(force_cpu=True)  # before Triton's import, which reads TRITON_INTERPRET

from triton.runtime import interpreter as _interp  # noqa: E402


@dataclass
class Counts:
    macs: int = 0
    load_bytes: int = 0
    dots: int = 0
    loads: int = 0


@contextlib.contextmanager
def counting() -> Iterator[Counts]:
    """Count every ``tl.dot`` and ``tl.load`` the interpreter executes inside the block."""
    counts = Counts()
    builder = _interp.InterpreterBuilder
    dot, load = builder.create_dot, builder.create_masked_load

    def create_dot(self, a, b, d, *args):
        *_, m, k = a.data.shape
        n = b.data.shape[-1]
        counts.macs += int(np.prod(a.data.shape[:-2], dtype=np.int64)) * m * n * k
        counts.dots += 1
        return dot(self, a, b, d, *args)

    def create_masked_load(self, ptrs, mask, other, *args):
        out = load(self, ptrs, mask, other, *args)
        counts.load_bytes += int(np.count_nonzero(mask.data)) * out.data.itemsize
        counts.loads += 1
        return out

    builder.create_dot, builder.create_masked_load = create_dot, create_masked_load
    try:
        yield counts
    finally:
        builder.create_dot, builder.create_masked_load = dot, load


def count_block(spec, n: int, h: int, w: int, dtype: torch.dtype = torch.float16,
                layout: str = "channels_last", config=None) -> dict:
    """Run ``spec`` once through the Triton launcher (``config``: its tile config, default the
    launcher's own choice) and return the counts against the minimum."""
    fi = E.import_fused_inception()
    if not E.interpreter_on():
        raise RuntimeError("work_count needs Triton's interpreter: set TRITON_INTERPRET=1 before fused_inception "
                           "is imported (the script does)")
    from fused_inception.kernels.triton_inception import inception_forward_triton
    from fused_inception.kernels.tuning import default_config

    block = fi.FusedInception.from_spec(spec).eval()
    x = torch.randn(n, spec.in_channels, h, w).to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    packed = block.to(dtype).packed_weights(dtype)
    config = config or default_config(spec, n, h, w, dtype=dtype)
    with counting() as c:
        inception_forward_triton(x, packed, spec, config)
    elem = x.element_size()
    min_macs = block_flops(spec, n, h, w) // 2
    min_bytes = block_min_bytes(spec, n, h, w, elem)["total"]
    return {"macs": c.macs, "min_macs": min_macs, "mac_ratio": c.macs / min_macs,
            "load_bytes": c.load_bytes, "min_bytes": min_bytes, "byte_ratio": c.load_bytes / min_bytes,
            "dots": c.dots, "loads": c.loads}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--blocks", nargs="+", default=["3a", "4a", "4e", "5b"])
    p.add_argument("--batches", type=int, nargs="+", default=[1])
    p.add_argument("--dtype", default="fp16", choices=["fp16", "bf16", "fp32"])
    p.add_argument("--layout", default="channels_last", choices=["channels_last", "nchw"])
    p.add_argument("--variant", default="torchvision", choices=["torchvision", "paper"])
    p.add_argument("--sms", type=int, default=132, help="plan the heuristic's tiles for this many SMs")
    a = p.parse_args()
    fi = E.import_fused_inception()
    from fused_inception.kernels.tuning import default_config

    dtype = E.torch_dtype(a.dtype)
    rows = []
    for n in a.batches:
        for name in a.blocks:
            hw, spec = fi.GOOGLENET_SPATIAL[name], fi.googlenet_spec(name, a.variant)
            cfg = default_config(spec, n, hw, hw, a.sms, dtype)
            r = count_block(spec, n, hw, hw, dtype, a.layout, config=cfg)
            rows.append([name, n, f"{r['macs'] / 1e9:.3f}", f"{r['mac_ratio']:.2f}",
                         f"{r['load_bytes'] / 2**20:.1f}", f"{r['byte_ratio']:.1f}"])
    tiles = f"heuristic for {a.sms} SMs"
    print(f"work issued by the Triton kernel, counted in Triton's interpreter ({a.variant}, {a.dtype}, {a.layout}, "
          f"{tiles} tiles)")
    print(R.format_table(["block", "N", "GMAC", "MAC/min", "load MiB", "bytes/min"], rows, right=range(1, 6)))


if __name__ == "__main__":
    main()
