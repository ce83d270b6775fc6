"""The one-launch Inception block forward in Triton, and its launcher.

One launch computes all four branches. The grid is persistent: each program walks over work
items ``(branch item, pixel tile)``, heaviest branch first. A branch item is a block of ``BN``
output channels of one branch:

* KxK branches (3x3 and "5x5"): recompute the 1x1 reduce on the tile plus its halo, stage it
  (post-ReLU, zero outside the image) in the program's own scratch rows, then run the KxK conv
  as ``K*K`` shifted GEMMs over that scratch.
* 1x1 branch: GEMM of the input tile with its columns of the packed 1x1 weights.
* pool branch: 3x3 max over nine shifted loads of ``x`` (NaN propagates; padding never wins),
  then GEMM with the projection weights.

Each branch stores straight into its channel slice of the output (the concat).
"""

from __future__ import annotations

import functools
import json
import os
import threading
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

from .._version import __version__
from ..packing import PackedWeights, conv_memory_format
from ..spec import InceptionSpec
from . import interpreting

__all__ = ["TileConfig", "autotune", "candidate_configs", "default_config", "inception_forward_triton", "interpreting"]


@triton.jit
def _mma(a, b, acc, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    # UPCAST works around the interpreter's bf16 tl.dot (it multiplies bit patterns).
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=PRECISION)


@triton.jit
def _relu(v, RELU: tl.constexpr):
    # where() keeps NaN, as torch.relu does (max(NaN, 0) would give 0 on the GPU).
    if RELU:
        v = tl.where(v < 0.0, 0.0, v)
    return v


@triton.jit
def _load_x(x_img, hh, ww, pix_ok, c0, sxc, sxh, sxw, CIN: tl.constexpr, BK: tl.constexpr):
    cs = c0 + tl.arange(0, BK)
    ptrs = x_img + cs[None, :] * sxc + hh[:, None] * sxh + ww[:, None] * sxw
    return tl.load(ptrs, mask=pix_ok[:, None] & (cs < CIN)[None, :], other=0.0)


@triton.jit
def _load_w(w_ptr, r0, c0, ROWS: tl.constexpr, COLS: tl.constexpr, LD: tl.constexpr,
            BR: tl.constexpr, BC: tl.constexpr):
    rs = r0 + tl.arange(0, BR)
    cs = c0 + tl.arange(0, BC)
    return tl.load(w_ptr + rs[:, None] * LD + cs[None, :],
                   mask=(rs < ROWS)[:, None] & (cs < COLS)[None, :], other=0.0)


@triton.jit
def _store_out(out_img, acc, bias_ptr, c0, hh, ww, pix_ok, c_off, soc, soh, sow,
               COUT: tl.constexpr, BN: tl.constexpr, RELU: tl.constexpr):
    cs = c0 + tl.arange(0, BN)
    c_ok = cs < COUT
    acc = _relu(acc + tl.load(bias_ptr + cs, mask=c_ok, other=0.0)[None, :], RELU)
    ptrs = out_img + (c_off + cs)[None, :] * soc + hh[:, None] * soh + ww[:, None] * sow
    tl.store(ptrs, acc.to(out_img.dtype.element_ty), mask=pix_ok[:, None] & c_ok[None, :])


@triton.jit
def _pointwise_item(x_img, out_img, w_ptr, bias_ptr, oh0, ow0, c0, H, W,
                    sxc, sxh, sxw, soc, soh, sow,
                    W_LD: tl.constexpr, W_COL: tl.constexpr, OUT_C: tl.constexpr,
                    CIN: tl.constexpr, COUT: tl.constexpr, POOL: tl.constexpr, RELU: tl.constexpr,
                    TH: tl.constexpr, TW: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                    PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """1x1 conv of ``x`` (or of its 3x3 max-pool when POOL) for output channels [c0, c0+BN)."""
    pix = tl.arange(0, TH * TW)
    hh = oh0 + pix // TW
    ww = ow0 + pix % TW
    pix_ok = (hh < H) & (ww < W)
    acc = tl.zeros((TH * TW, BN), dtype=tl.float32)
    for k0 in range(0, CIN, BK):
        if POOL:
            cs = k0 + tl.arange(0, BK)
            ok = pix_ok[:, None] & (cs < CIN)[None, :]
            # Start from the centre tap, which is inside the image for every valid pixel.
            a = tl.load(x_img + cs[None, :] * sxc + hh[:, None] * sxh + ww[:, None] * sxw,
                        mask=ok, other=0.0)
            if UPCAST:  # the interpreter (Triton 3.9) compares bf16 as raw bits: max(-1, 0.5) = -1
                a = a.to(tl.float32)
            for tap in tl.static_range(9):
                sh = hh + (tap // 3 - 1)
                sw = ww + (tap % 3 - 1)
                inside = pix_ok & (sh >= 0) & (sh < H) & (sw >= 0) & (sw < W)
                v = tl.load(x_img + cs[None, :] * sxc + sh[:, None] * sxh + sw[:, None] * sxw,
                            mask=inside[:, None] & (cs < CIN)[None, :], other=float("-inf"))
                if UPCAST:
                    v = v.to(tl.float32)
                a = tl.maximum(a, v, propagate_nan=tl.PropagateNan.ALL)
            # Padded lanes would be -inf and turn into NaN in the GEMM: zero them (in x's dtype:
            # a bf16 tensor and a Python float promote to fp32).
            a = tl.where(ok, a, 0.0).to(x_img.dtype.element_ty)
        else:
            a = _load_x(x_img, hh, ww, pix_ok, k0, sxc, sxh, sxw, CIN, BK)
        b = _load_w(w_ptr, k0, W_COL + c0, CIN, W_COL + COUT, W_LD, BK, BN)
        acc = _mma(a, b, acc, PRECISION, UPCAST)
    _store_out(out_img, acc, bias_ptr + W_COL, c0, hh, ww, pix_ok, OUT_C, soc, soh, sow, COUT, BN, RELU)


@triton.jit
def _kxk_item(x_img, out_img, scratch, w_in_ptr, b_in_ptr, wk_ptr, bk_ptr, oh0, ow0, c0, H, W,
              sxc, sxh, sxw, soc, soh, sow,
              W_LD: tl.constexpr, RED_COL: tl.constexpr, OUT_C: tl.constexpr,
              CIN: tl.constexpr, CRED: tl.constexpr, COUT: tl.constexpr, K: tl.constexpr,
              RELU: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr, BN: tl.constexpr,
              BK: tl.constexpr, BR: tl.constexpr, HC: tl.constexpr, G: tl.constexpr,
              SCRATCH_C: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """KxK conv of the reduce map for G blocks of BN output channels from c0, the reduce
    recomputed once on the tile's halo (in chunks of HC pixels) and shared by the G blocks."""
    BM: tl.constexpr = TH * TW
    PAD: tl.constexpr = K // 2
    HALO_W: tl.constexpr = TW + K - 1
    HALO_PIX: tl.constexpr = (TH + K - 1) * HALO_W
    # Phase 1: reduce = relu(x @ W_red + b) on the halo, 0 outside the image (the KxK conv
    # zero-pads the post-ReLU map), written to this program's scratch rows.
    tl.debug_barrier()  # the previous item's phase-2 reads of the scratch are done
    for hc in range(0, HALO_PIX, HC):
        hp = hc + tl.arange(0, HC)
        gh = oh0 - PAD + hp // HALO_W
        gw = ow0 - PAD + hp % HALO_W
        inside = (hp < HALO_PIX) & (gh >= 0) & (gh < H) & (gw >= 0) & (gw < W)
        for r0 in range(0, CRED, BR):
            acc = tl.zeros((HC, BR), dtype=tl.float32)
            for k0 in range(0, CIN, BK):
                a = _load_x(x_img, gh, gw, inside, k0, sxc, sxh, sxw, CIN, BK)
                b = _load_w(w_in_ptr, k0, RED_COL + r0, CIN, RED_COL + CRED, W_LD, BK, BR)
                acc = _mma(a, b, acc, PRECISION, UPCAST)
            rs = r0 + tl.arange(0, BR)
            r_ok = rs < CRED
            acc = _relu(acc + tl.load(b_in_ptr + RED_COL + rs, mask=r_ok, other=0.0)[None, :], RELU)
            acc = tl.where(inside[:, None] & r_ok[None, :], acc, 0.0)
            tl.store(scratch + hp[:, None] * SCRATCH_C + rs[None, :], acc.to(scratch.dtype.element_ty))
    tl.debug_barrier()  # the whole halo is staged before any shifted read
    # Phase 2: K*K shifted GEMMs over the staged halo.
    pix = tl.arange(0, BM)
    ty = pix // TW
    tx = pix % TW
    hh = oh0 + ty
    ww = ow0 + tx
    pix_ok = (hh < H) & (ww < W)
    for g in range(G):
        cg = c0 + g * BN
        if cg < COUT:
            acc = tl.zeros((BM, BN), dtype=tl.float32)
            for tap in range(K * K):
                hidx = (ty + tap // K) * HALO_W + (tx + tap % K)
                for r0 in range(0, CRED, BR):
                    rs = r0 + tl.arange(0, BR)
                    a = tl.load(scratch + hidx[:, None] * SCRATCH_C + rs[None, :])
                    b = _load_w(wk_ptr + tap * CRED * COUT, r0, cg, CRED, COUT, COUT, BR, BN)
                    acc = _mma(a, b, acc, PRECISION, UPCAST)
            _store_out(out_img, acc, bk_ptr, cg, hh, ww, pix_ok, OUT_C, soc, soh, sow, COUT, BN, RELU)


@triton.jit
def inception_fwd_kernel(
    x_ptr, out_ptr, scratch_ptr,
    w_in_ptr, b_in_ptr, w3_ptr, b3_ptr, w5_ptr, b5_ptr, wp_ptr, bp_ptr,
    H, W, tiles_w, tiles_per_img, n_tiles, total_work, n_programs, iters,
    sxn, sxc, sxh, sxw, son, soc, soh, sow,
    CIN: tl.constexpr, C1: tl.constexpr, C3R: tl.constexpr, C3: tl.constexpr,
    C5R: tl.constexpr, C5: tl.constexpr, CP: tl.constexpr, K3: tl.constexpr, K5: tl.constexpr,
    RELU: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
    BR3: tl.constexpr, BR5: tl.constexpr, HC: tl.constexpr, G: tl.constexpr,
    SCRATCH_PIX: tl.constexpr, SCRATCH_C: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):
    W_LD: tl.constexpr = C1 + C3R + C5R
    N3: tl.constexpr = (C3 + BN * G - 1) // (BN * G)  # KxK items hold G channel blocks each
    N5: tl.constexpr = (C5 + BN * G - 1) // (BN * G)
    N1: tl.constexpr = (C1 + BN - 1) // BN
    pid = tl.program_id(0)
    scratch = scratch_ptr + pid.to(tl.int64) * (SCRATCH_PIX * SCRATCH_C)
    # Programs stride over the work list (a range() starting at a program id trips the interpreter).
    for i in range(0, iters):
        work = pid + i * n_programs
        item = work // n_tiles
        tile = work % n_tiles
        n = tile // tiles_per_img
        t = tile % tiles_per_img
        oh0 = (t // tiles_w) * TH
        ow0 = (t % tiles_w) * TW
        x_img = x_ptr + n.to(tl.int64) * sxn
        out_img = out_ptr + n.to(tl.int64) * son
        if work >= total_work:
            item = -1
        if item < 0:
            pass
        elif item < N3:
            _kxk_item(x_img, out_img, scratch, w_in_ptr, b_in_ptr, w3_ptr, b3_ptr, oh0, ow0,
                      item * BN * G, H, W, sxc, sxh, sxw, soc, soh, sow,
                      W_LD, C1, C1, CIN, C3R, C3, K3, RELU, TH, TW, BN, BK, BR3, HC, G, SCRATCH_C,
                      PRECISION, UPCAST)
        elif item < N3 + N5:
            _kxk_item(x_img, out_img, scratch, w_in_ptr, b_in_ptr, w5_ptr, b5_ptr, oh0, ow0,
                      (item - N3) * BN * G, H, W, sxc, sxh, sxw, soc, soh, sow,
                      W_LD, C1 + C3R, C1 + C3, CIN, C5R, C5, K5, RELU, TH, TW, BN, BK, BR5, HC, G, SCRATCH_C,
                      PRECISION, UPCAST)
        elif item < N3 + N5 + N1:
            _pointwise_item(x_img, out_img, w_in_ptr, b_in_ptr, oh0, ow0, (item - N3 - N5) * BN, H, W,
                            sxc, sxh, sxw, soc, soh, sow, W_LD, 0, 0, CIN, C1, False, RELU,
                            TH, TW, BN, BK, PRECISION, UPCAST)
        else:
            _pointwise_item(x_img, out_img, wp_ptr, bp_ptr, oh0, ow0, (item - N3 - N5 - N1) * BN, H, W,
                            sxc, sxh, sxw, soc, soh, sow, CP, 0, C1 + C3 + C5, CIN, CP, True, RELU,
                            TH, TW, BN, BK, PRECISION, UPCAST)


# This module is imported on the first launch, after the package fixed the mode (interpreting()):
# a TRITON_INTERPRET changed in between would bind the kernel the other way.
if isinstance(inception_fwd_kernel, InterpretedFunction) != interpreting():
    raise RuntimeError(f"Triton's interpreter is {'on' if interpreting() else 'off'} for fused_inception "
                       "(TRITON_INTERPRET when it was imported) but not for Triton now: set TRITON_INTERPRET "
                       "before importing fused_inception and leave it")


@dataclass(frozen=True)
class TileConfig:
    """Tile shape of one launch.

    A ``th`` x ``tw`` pixel tile; ``bn`` output channels per block; ``bk``/``br`` chunks of the
    input/reduce channels; ``hc`` halo pixels per reduce GEMM; ``kxk_group`` channel blocks per
    KxK work item (0: the whole branch, so the halo reduce is computed once per tile; 1: one block
    per item, more parallelism for small batches at the price of recomputing the reduce).
    """

    th: int = 8
    tw: int = 8
    bn: int = 64
    bk: int = 32
    br: int = 32
    hc: int = 64
    kxk_group: int = 0
    num_warps: int = 4
    num_stages: int = 2
    programs_per_sm: int = 2  # persistent programs per SM (each owns a scratch slot in L2)

    def __post_init__(self) -> None:
        for f in fields(self):  # a tuning-cache file may hold anything: floats, strings, JSON booleans
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"TileConfig.{f.name} must be an int, got {v!r}")
        for name in ("th", "tw", "bn", "bk", "br", "hc", "num_warps"):
            v = getattr(self, name)
            if v < 1 or v & (v - 1):
                raise ValueError(f"TileConfig.{name} must be a power of two, got {v}")
        if self.th * self.tw < 16 or min(self.bn, self.bk, self.br, self.hc) < 16:
            raise ValueError("TileConfig: th*tw, bn, bk, br and hc must be >= 16 (tl.dot's minimum)")
        if self.kxk_group < 0:
            raise ValueError(f"TileConfig.kxk_group must be >= 0, got {self.kxk_group}")
        if self.num_stages < 1 or self.programs_per_sm < 1:
            raise ValueError(f"TileConfig.num_stages and programs_per_sm must be >= 1, got {self.num_stages} "
                             f"and {self.programs_per_sm}")

    def group(self, spec: InceptionSpec) -> int:
        """Channel blocks per KxK work item for ``spec``."""
        whole = max(triton.cdiv(spec.ch3x3, self.bn), triton.cdiv(spec.ch5x5, self.bn))
        return whole if self.kxk_group == 0 else min(self.kxk_group, whole)


def _pow2_at_least(v: int, lo: int = 16, hi: int = 128) -> int:
    return max(lo, min(hi, triton.next_power_of_2(v)))


def _work_items(spec: InceptionSpec, cfg: TileConfig, n: int, h: int, w: int) -> int:
    g = cfg.group(spec)
    items = (sum(triton.cdiv(c, cfg.bn * g) for c in (spec.ch3x3, spec.ch5x5))
             + sum(triton.cdiv(c, cfg.bn) for c in (spec.ch1x1, spec.pool_proj)))
    return items * n * triton.cdiv(h, cfg.th) * triton.cdiv(w, cfg.tw)


def reduce_chunks(spec: InceptionSpec, cfg: TileConfig) -> tuple[int, int]:
    """Reduce-channel chunk of the two KxK branches: the smallest power of two that covers each
    reduce width, up to ``cfg.br`` (the "5x5" reduce is often 16-48 channels wide)."""
    br3, br5 = (min(cfg.br, _pow2_at_least(c, 16, 128)) for c in (spec.ch3x3red, spec.ch5x5red))
    return br3, br5


def scratch_shape(spec: InceptionSpec, cfg: TileConfig) -> tuple[int, int]:
    """(pixels, channels) of one program's halo scratch, padded to whole HC / BR chunks."""
    br3, br5 = reduce_chunks(spec, cfg)
    halo = max((cfg.th + k - 1) * (cfg.tw + k - 1) for k in (spec.k3, spec.k5))
    return (triton.cdiv(halo, cfg.hc) * cfg.hc,
            max(triton.cdiv(spec.ch3x3red, br3) * br3, triton.cdiv(spec.ch5x5red, br5) * br5))


def _small_batch(cfg: TileConfig) -> TileConfig:
    """8x8 tiles, 32-channel blocks, one block per KxK item: the most work items (the reduce is
    recomputed per item), for batches too small to fill the GPU otherwise."""
    return replace(cfg, th=8, tw=8, bn=32, kxk_group=1)


def default_config(spec: InceptionSpec, h: int, w: int, n: int | None = None,
                   sms: int | None = None, dtype: torch.dtype | None = None) -> TileConfig:
    """The heuristic tile shape (used untimed: autotuning off, or inside a CUDA graph capture).
    With ``n`` and ``sms`` given, a batch whose work items would not cover the SMs gets the
    small-batch shape instead. fp32 operands take 8 warps (4 spill registers at bn=64)."""
    # 8x8 tiles, 32-channel input chunks, 4 warps: on sm_90 (Triton 3.6) this compiles without
    # register spills and with ~52 KB of shared memory; 16x16 tiles with 2 stages need ~350 KB,
    # more than an SM has (benchmarks/compile_report.py).
    cfg = TileConfig(th=8, tw=8, bn=64, bk=_pow2_at_least(spec.in_channels, 16, 32),
                     br=_pow2_at_least(max(spec.ch3x3red, spec.ch5x5red), 16, 64), hc=32,
                     num_warps=8 if dtype == torch.float32 else 4, num_stages=2)
    if n is not None and sms is not None and _work_items(spec, cfg, n, h, w) < sms:
        return _small_batch(cfg)
    return cfg


def candidate_configs(spec: InceptionSpec, h: int, w: int, dtype: torch.dtype | None = None) -> list[TileConfig]:
    """The autotuning space for one block shape, the heuristic first.

    Kept small on purpose: each entry is a separate compilation of a large kernel, and a whole
    GoogLeNet tunes nine block shapes on first use.
    """
    base = default_config(spec, h, w, dtype=dtype)
    out = [base, _small_batch(base),
           replace(base, bk=_pow2_at_least(spec.in_channels, 16, 64), num_warps=8),
           replace(base, bn=128, num_warps=8),
           replace(base, num_stages=3)]
    if h > 8 and w > 8:  # fewer halo pixels per tile pixel (324/256 vs 100/64 for K=3), one stage
        out.append(replace(base, th=16, tw=16, num_warps=8, num_stages=1))
    return list(dict.fromkeys(out))


def _dot_precision(dtype: torch.dtype) -> str:
    if interpreting():
        return "ieee"  # the interpreter multiplies in numpy; ask for nothing it would ignore
    if dtype == torch.float32:
        return "tf32" if torch.backends.cudnn.allow_tf32 else "ieee"  # PyTorch's conv rule for fp32
    return "tf32"  # Triton's default; for fp16/bf16 operands it only means "tensor cores"


@functools.cache
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


@functools.cache
def _device_name(device_index: int) -> str:
    return torch.cuda.get_device_name(device_index)


# -- autotuning -----------------------------------------------------------------------------------
# Key: block shape, map size, dtype, layout, device and a power-of-two batch bucket (so batch 1
# and batch 256 may pick different tiles, but batch 200 and 256 share a result), and the package
# and Triton versions (another kernel, another compiler: another best tile). Results live in
# memory and in a JSON file (FUSED_INCEPTION_CACHE_DIR, default ~/.cache/fused_inception).
_TUNED: dict[str, TileConfig] = {}
_TUNE_LOCK = threading.Lock()


def _tune_key(x: torch.Tensor, spec: InceptionSpec) -> str:
    n, _, h, w = x.shape
    layout = "cl" if conv_memory_format(x) == torch.channels_last else "nchw"
    dev = _device_name(_device_index(x)) if x.is_cuda else x.device.type
    bucket = min(triton.next_power_of_2(max(n, 1)), 256)
    return (f"{dev}|fused_inception{__version__}|triton{triton.__version__}|{spec.channels}|k{spec.k3}{spec.k5}|"
            f"relu{int(spec.relu)}|{h}x{w}|{str(x.dtype).removeprefix('torch.')}|{layout}|{_dot_precision(x.dtype)}|n{bucket}")


def _cache_file() -> Path:
    root = os.environ.get("FUSED_INCEPTION_CACHE_DIR") or Path.home() / ".cache" / "fused_inception"
    return Path(root) / "triton_autotune.json"


def _load_disk_cache() -> dict:
    """The cache file's entries; none when it is missing or not a JSON object. The file is
    outside our control (half written, hand edited, an older format), so nothing here raises."""
    try:
        data = json.loads(_cache_file().read_text())
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


_CONFIG_FIELDS = frozenset(f.name for f in fields(TileConfig))


def _config_from_disk(entry: object) -> TileConfig | None:
    """The cached entry as a TileConfig; None (re-tune) for anything this version did not write."""
    if not isinstance(entry, dict) or entry.keys() != _CONFIG_FIELDS:
        return None
    try:
        return TileConfig(**entry)
    except (TypeError, ValueError):
        return None


def _store_disk_cache(key: str, cfg: TileConfig) -> None:
    try:
        path = _cache_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _load_disk_cache()
        data[key] = asdict(cfg)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        tmp.replace(path)
    except OSError:
        pass  # a read-only home only costs a re-tune in the next process


def _do_bench(fn) -> float:
    return triton.testing.do_bench(fn, warmup=5, rep=25, return_mode="median")


def autotune(x: torch.Tensor, packed: PackedWeights, spec: InceptionSpec,
             candidates: list[TileConfig] | None = None, bench=None) -> TileConfig:
    """The fastest tile config for this case, timed once per key and cached (memory and disk).

    ``bench(fn) -> ms`` times a launch (default ``triton.testing.do_bench``, median). A config
    that fails to compile or launch (e.g. out of shared memory) is skipped.
    """
    key = _tune_key(x, spec)
    with _TUNE_LOCK:
        if key in _TUNED:
            return _TUNED[key]
        disk = _config_from_disk(_load_disk_cache().get(key))
        if disk is not None:
            _TUNED[key] = disk
            return disk
        bench = bench or _do_bench
        out = torch.empty((x.shape[0], spec.out_channels, *x.shape[2:]), dtype=x.dtype, device=x.device,
                          memory_format=conv_memory_format(x))
        best, best_ms = None, float("inf")
        for cfg in candidates or candidate_configs(spec, x.shape[2], x.shape[3], x.dtype):
            try:
                ms = bench(lambda cfg=cfg: inception_forward_triton(x, packed, spec, config=cfg, out=out))
            except Exception:  # noqa: BLE001 - e.g. OutOfResources for a large tile
                continue
            if ms < best_ms:
                best, best_ms = cfg, ms
        if best is None:
            raise RuntimeError(f"no Triton tile config could run for {key}")
        _TUNED[key] = best
        _store_disk_cache(key, best)
        return best


def _pick_config(x: torch.Tensor, packed: PackedWeights, spec: InceptionSpec) -> TileConfig:
    n, _, h, w = x.shape
    if not x.is_cuda:
        return default_config(spec, h, w, dtype=x.dtype)
    cfg = _TUNED.get(_tune_key(x, spec))
    if cfg is not None:
        return cfg
    if os.environ.get("FUSED_INCEPTION_AUTOTUNE", "1") == "0" or torch.cuda.is_current_stream_capturing():
        # No timing (switched off, or inside a CUDA graph capture): the batch-aware heuristic.
        return default_config(spec, h, w, n, _sm_count(_device_index(x)), x.dtype)
    return autotune(x, packed, spec)


def _device_index(x: torch.Tensor) -> int:
    return x.device.index if x.device.index is not None else torch.cuda.current_device()


def inception_forward_triton(x: torch.Tensor, packed: PackedWeights, spec: InceptionSpec,
                             config: TileConfig | None = None, max_programs: int | None = None,
                             out: torch.Tensor | None = None) -> torch.Tensor:
    """Run the fused block on ``x`` (N, Cin, H, W) in one launch; returns (N, Cout, H, W).

    ``x`` may be NCHW, channels_last or strided; it is read in place. ``max_programs`` caps the
    persistent grid (default: a few programs per SM on a GPU, one per work item in the interpreter).
    """
    if x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError(f"the Triton backend takes float16, bfloat16 or float32 input, got {x.dtype}")
    n, cin, h, w = x.shape
    if cin != spec.in_channels:
        raise ValueError(f"expected {spec.in_channels} input channels, got {cin}")
    if out is None:
        out = torch.empty((n, spec.out_channels, h, w), dtype=x.dtype, device=x.device,
                          memory_format=conv_memory_format(x))
    if out.numel() == 0:
        return out
    if max(cin, spec.out_channels) * h * w >= 2**31:
        raise ValueError(f"one image of {max(cin, spec.out_channels)}x{h}x{w} elements exceeds 2^31")
    cfg = config or _pick_config(x, packed, spec)
    tiles_h, tiles_w = triton.cdiv(h, cfg.th), triton.cdiv(w, cfg.tw)
    n_tiles = n * tiles_h * tiles_w
    g = cfg.group(spec)
    total_work = _work_items(spec, cfg, n, h, w)
    if max_programs is None:
        if x.is_cuda:
            max_programs = _sm_count(_device_index(x)) * cfg.programs_per_sm
        else:
            max_programs = total_work
    grid = min(total_work, max_programs)
    br3, br5 = reduce_chunks(spec, cfg)
    scratch_pix, scratch_c = scratch_shape(spec, cfg)
    scratch = torch.empty((grid, scratch_pix, scratch_c), dtype=x.dtype, device=x.device)
    upcast = interpreting() and x.dtype == torch.bfloat16
    inception_fwd_kernel[(grid,)](
        x, out, scratch, *packed,
        h, w, tiles_w, tiles_h * tiles_w, n_tiles, total_work, grid, triton.cdiv(total_work, grid),
        *x.stride(), *out.stride(),
        CIN=cin, C1=spec.ch1x1, C3R=spec.ch3x3red, C3=spec.ch3x3, C5R=spec.ch5x5red, C5=spec.ch5x5,
        CP=spec.pool_proj, K3=spec.k3, K5=spec.k5, RELU=spec.relu,
        TH=cfg.th, TW=cfg.tw, BN=cfg.bn, BK=cfg.bk, BR3=br3, BR5=br5, HC=cfg.hc, G=g,
        SCRATCH_PIX=scratch_pix, SCRATCH_C=scratch_c,
        PRECISION=_dot_precision(x.dtype), UPCAST=upcast,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return out
