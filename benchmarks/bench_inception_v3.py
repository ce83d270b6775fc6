#!/usr/bin/env python
"""End-to-end Inception-v3 inference: the converted network versus the same providers on the whole model.

Default (on a CUDA GPU): fused_inception.models.inception_v3(aux_logits=False) in eval mode
(torchvision's network, randomly initialised), 299x299 images, channels_last, batch 1, 50
(pytorch-fid's default) and 256, in fp16 and in fp32 (TF32 off). --fid runs pytorch-fid's FID
network instead, fused_inception.models.fid_inception_v3(): its own resize to 299x299 and [-1, 1]
scaling, the FID variants of the blocks, the 2048 pool3 features as its output. Providers as in
bench_block.py, applied to the whole network: 'eager' is the network with every BatchNorm folded;
the fused providers are fused_inception.convert(...) of it (the eleven Mixed blocks, each one
FusedBlock launch; the stem's BatchNorms folded, its convs on cuDNN). The fused-cuda providers are
listed as unavailable: the CUDA extension computes GoogLeNet's block only. Each provider's output
is checked against an fp64 reference before timing. Reports the time and images/s (median,
p20-p80), TFLOP/s, % of the roofline floor and speedups; writes JSON, the table and a PNG under
benchmarks/results/. The whole-network code is networks.py's, shared with bench_googlenet.py.

Without CUDA it says so and what a GPU run prints, and runs a correctness pass instead (no
timing): the PyTorch reference and the converted network with Mixed_5b on Triton's interpreter
(the other blocks converted too, on their PyTorch reference path: the interpreter takes seconds
per block), at 75x75 images (the smallest the network takes), batch 1, fp32, and exits 0 when
every check passes. With --fid the network resizes to 299x299 itself, so its CPU pass runs
Mixed_7c (8x8, the FID-only max-pool variant) on the interpreter. 'compile' is left out of the
CPU pass unless --providers names it.
"""

from __future__ import annotations

import argparse
import sys

import networks

GPU_DEFAULTS, CPU_DEFAULTS = networks.defaults("1,50,256", "none", image_size=(299, 75))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = networks.parser("bench_inception_v3.py", __doc__, GPU_DEFAULTS, CPU_DEFAULTS,
                        cpu_blocks="Mixed_5b; with --fid Mixed_7c")
    p.add_argument("--fid", action="store_true",
                   help="pytorch-fid's FID Inception (fid_inception_v3(): resize, FID blocks, pool3 features)")
    return p.parse_args(argv)


def network(fi, args: argparse.Namespace) -> networks.Network:
    """Inception-v3 (torchvision's, without the auxiliary classifier) or, with --fid, pytorch-fid's
    network, whose blocks sit under ``inception.``."""
    from fused_inception.graph import INCEPTION_V3_BLOCKS

    if args.fid:
        return networks.Network("FID Inception-v3 (pytorch-fid, pool3 features)", fi.models.fid_inception_v3,
                                {b: f"inception.{b}" for b in INCEPTION_V3_BLOCKS}, cpu_blocks="Mixed_7c",
                                min_image=1)
    return networks.Network("Inception-v3 (torchvision, aux_logits=False)",
                            lambda: fi.models.inception_v3(aux_logits=False, init_weights=False),
                            {b: b for b in INCEPTION_V3_BLOCKS}, cpu_blocks="Mixed_5b", min_image=75)


def resolve(args: argparse.Namespace, cuda: bool) -> argparse.Namespace:
    import fused_inception as fi  # imported after the interpreter was switched on

    return networks.resolve(args, cuda, GPU_DEFAULTS, CPU_DEFAULTS, network(fi, args))


class Runner(networks.NetworkRunner):
    network = staticmethod(network)


def main(argv: list[str] | None = None) -> int:
    return networks.main("bench_inception_v3.py", parse_args(argv), resolve, Runner, networks.GPU_OUTPUT)


if __name__ == "__main__":
    sys.exit(main())
