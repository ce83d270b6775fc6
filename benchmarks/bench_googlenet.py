#!/usr/bin/env python
"""End-to-end GoogLeNet inference: the converted network versus the same providers on the whole model.

Default (on a CUDA GPU): fused_inception.models.googlenet("torchvision") in eval mode, 224x224
images, channels_last, batch 1, 32 and 256 in fp16 and in fp32 (TF32 off), plus fp32 at batch 10.
Providers as in bench_block.py, applied to the whole network: 'eager' is the network with every
BatchNorm folded; the fused providers are fused_inception.convert(...) of it (the nine Inception
blocks fused, the stem's BatchNorms folded). Each provider's logits are checked against an fp64
reference before timing. Reports images/s (median, p20-p80), TFLOP/s, % of the roofline floor and
speedups; writes JSON, the table and a PNG under benchmarks/results/. The whole-network code is
networks.py's, shared with bench_inception_v3.py.

Without CUDA it says so and what a GPU run prints, and runs a correctness pass instead (no
timing): the PyTorch reference and the converted network with block 3a on Triton's interpreter
(the other blocks converted too, on their PyTorch reference path: the interpreter takes seconds
per block), at 32x32 images, batch 1, fp32, and exits 0 when every check passes. The 'compile'
provider is left out of it unless asked for (--providers): Inductor compiles the whole network on
CPU for minutes; bench_block.py's CPU pass covers compile.
"""

from __future__ import annotations

import argparse
import sys

import networks

GPU_DEFAULTS, CPU_DEFAULTS = networks.defaults("1,32,256", "fp32:10", image_size=(224, 32))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return networks.parser("bench_googlenet.py", __doc__, GPU_DEFAULTS, CPU_DEFAULTS, cpu_blocks="3a").parse_args(argv)


def network(fi, args: argparse.Namespace | None = None) -> networks.Network:
    """GoogLeNet (torchvision's variant), its blocks 3a..5b at inception3a..inception5b."""
    return networks.Network("GoogLeNet (torchvision variant)",
                            lambda: fi.models.googlenet("torchvision", init_weights=False),
                            {b: f"inception{b}" for b in fi.GOOGLENET_BLOCKS}, cpu_blocks="3a", min_image=16)


def resolve(args: argparse.Namespace, cuda: bool) -> argparse.Namespace:
    import fused_inception as fi  # imported after the interpreter was switched on

    return networks.resolve(args, cuda, GPU_DEFAULTS, CPU_DEFAULTS, network(fi))


class Runner(networks.NetworkRunner):
    network = staticmethod(network)


gpu_table, cpu_table, plot = networks.gpu_table, networks.cpu_table, networks.plot


def main(argv: list[str] | None = None) -> int:
    return networks.main("bench_googlenet.py", parse_args(argv), resolve, Runner, networks.GPU_OUTPUT)


if __name__ == "__main__":
    sys.exit(main())
