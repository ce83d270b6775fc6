#!/usr/bin/env python
"""A few small launches of the fused kernels, for compute-sanitizer (memcheck, racecheck).

Run under the sanitizer (device_check.sh does):

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck --error-exitcode 1 \\
        python benchmarks/sanitize_cases.py
    compute-sanitizer --tool racecheck --error-exitcode 1 python benchmarks/sanitize_cases.py --quick

Each case launches a kernel once into an output pre-filled with NaN and checks it with the test
suite's ``check_fused`` (every element written, fp64 CPU oracle, one tolerance table), so the only
device work is the fused kernel and a few copies: the sanitizer's report is about our kernels, not
cuDNN's. GoogLeNet's kernel (and the CUDA extension) with partial tiles, odd channel counts,
K = 1/3/5/7, ReLU off; the graph kernel on Inception-v3 and FID blocks (rectangular kernels,
stride 2, splits, pool heads); NCHW, channels_last and strided inputs.
Without PyTorch's caching allocator (PYTORCH_NO_CUDA_MEMORY_CACHING=1) an out-of-bounds access
lands outside any allocation, where memcheck sees it. Autotuning is off (one launch per case).
Exits 1 if a check fails, 0 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("FUSED_INCEPTION_AUTOTUNE", "0")  # one launch per case, no tuning sweeps

import environment as E  # noqa: E402
import providers as P  # noqa: E402
import runner  # noqa: E402
import torch  # noqa: E402

TESTS = Path(__file__).resolve().parents[1] / "tests"

QUICK = ("3a-partial-tiles", "odd-channels-k5", "k1-k7-norelu-sliced", "v3-6a-stride2", "fid-e1-odd")


def cases(fi) -> list[tuple]:
    """(name, GoogLeNet spec or BlockGraph, batch, H, W, dtype, layout)."""
    from helpers import small_graph

    from fused_inception.graph import inception_e, inception_v3_graph

    spec = fi.InceptionSpec
    return [
        ("3a-partial-tiles", spec(192, 64, 96, 128, 16, 32, 32), 2, 9, 11, "fp16", "channels_last"),
        ("odd-channels-k5", spec(19, 7, 9, 17, 5, 11, 3, k5=5), 1, 13, 17, "fp32", "nchw"),
        ("5b-bf16", spec(832, 384, 192, 384, 48, 128, 128), 1, 7, 7, "bf16", "channels_last"),
        ("k1-k7-norelu-sliced", spec(33, 16, 8, 24, 12, 20, 9, k3=1, k5=7, relu=False), 3, 5, 6, "fp16", "sliced"),
        ("tf32-4e-14x14", spec(528, 256, 160, 320, 32, 128, 128), 1, 14, 14, "tf32", "channels_last"),
        ("v3-5b-partial-tiles", inception_v3_graph("Mixed_5b"), 2, 9, 11, "fp16", "channels_last"),
        ("v3-6a-stride2", inception_v3_graph("Mixed_6a"), 1, 9, 9, "fp32", "nchw"),
        ("fid-7c-maxpool-bf16", inception_v3_graph("Mixed_7c", fid=True), 1, 5, 6, "bf16", "sliced"),
        ("fid-e1-odd", small_graph(inception_e(8, "avg_exclude_pad"), 7), 2, 5, 6, "fp16", "nchw"),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)} (racecheck is slow)")
    p.add_argument("--impls", default="triton,cuda",
                   help="fused implementations to launch; 'cuda' (GoogLeNet's block only) is skipped, with a "
                        "message, when the extension is not available")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cpu: a dry run of the same checks on Triton's interpreter (for CI; no sanitizer)")
    args = p.parse_args(argv)
    if args.device == "cpu":
        E.use_interpreter_if_no_cuda(force_cpu=True)  # before fused_inception is imported
    elif not torch.cuda.is_available():
        print("sanitize_cases.py: needs a CUDA device (it exists to run under compute-sanitizer); "
              "--device cpu runs the checks on Triton's interpreter")
        return 0
    dev = torch.device(args.device)
    fi = E.import_fused_inception()
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    from helpers import check_fused, nan_output, rel_err

    from fused_inception.kernels.triton_graph import block_forward_triton
    from fused_inception.kernels.triton_inception import inception_forward_triton
    from fused_inception.kernels.tuning import pick_config

    impls = runner.parse_list(args.impls, ("triton", "cuda"), "impl")
    if "cuda" in impls and dev.type == "cpu":
        print("cuda: skipped (needs a CUDA device)")
        impls.remove("cuda")
    if "cuda" in impls:
        problem = P.cuda_extension_problem()
        if problem:
            print(f"cuda: skipped ({problem})")
            impls.remove("cuda")

    def launch(impl: str, block, x: torch.Tensor) -> torch.Tensor:
        """One launch into a NaN-filled output (an unwritten element stays NaN)."""
        graph = block.graph
        out, _ = nan_output(x.shape[0], graph.out_channels, *graph.out_size(*x.shape[2:]), x.dtype, x.device,
                            channels_last=x.stride(1) == 1 and x.shape[1] > 1)
        with torch.no_grad():
            packed = block.packed_weights(x.dtype)
            if isinstance(block, fi.FusedBlock):
                return block_forward_triton(x, *packed, graph, out=out)
            if impl == "triton":
                return inception_forward_triton(x, packed, block.spec, pick_config(x, packed, block.spec), out=out)
            from fused_inception.cuda_ext import inception_forward_cuda
            return inception_forward_cuda(x, packed, block.spec, out=out)

    failures = 0
    for name, case, n, h, w, dt, layout in cases(fi):
        if args.quick and name not in QUICK:
            continue
        E.set_precision(dt)
        for impl in impls if isinstance(case, fi.InceptionSpec) else ["triton"]:
            torch.manual_seed(len(name))
            try:
                *_, out, ref = check_fused(lambda block, x, impl=impl: launch(impl, block, x), case, n, h, w,
                                           dtype=E.torch_dtype(dt), layout=layout, device=dev, bias_shift=0.2)
                verdict = f"ok rel err {rel_err(out, ref):.2e}"
            except AssertionError as e:
                failures += 1
                verdict = f"FAIL {e}"
            print(f"{impl:6s} {name:22s} N={n} {h}x{w} {dt:4s} {layout:13s} {verdict}", flush=True)
    E.set_precision("tf32")  # PyTorch's defaults back
    print(f"sanitize_cases: {failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
