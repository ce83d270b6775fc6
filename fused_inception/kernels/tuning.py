"""Tile configurations of the Triton kernel: the heuristic, the autotuning space, the tuner and its
disk cache. The op picks a config here and hands it to the launcher, which never tunes."""

from __future__ import annotations

import functools
import json
import os
import threading
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
import triton

from .._version import __version__
from ..packing import PackedWeights, conv_memory_format
from ..spec import InceptionSpec
from . import interpreting
from .schedule import Schedule, build_schedule, chunk

__all__ = ["TileConfig", "autotune", "candidate_configs", "default_config", "default_graph_config", "dot_precision",
           "graph_schedule_for", "pick_config", "schedule_for", "H100_SMS", "MIN_ITEMS"]

H100_SMS = 132  # H100 SXM and H200: the SM count the CPU paths plan for
MIN_ITEMS = 100  # work items a launch offers at least (split reductions make up the rest)
MAX_SPLITS = 16
FP32_GRAPH_STAGES = 3  # the graph kernel's fp32 K-loop stages: cp.async loads, 96 KB, two programs per SM
GRAPH_STAGES = 3  # fp16/bf16: 16-byte cp.async under ALIGN (48 KB); without it the loads are not pipelined


@dataclass(frozen=True)
class TileConfig:
    """Tile shape of one launch.

    ``block_m`` flat pixels per tile (64 or 128 on a GPU: wgmma's M); ``block_n`` the widest
    output-column block (narrower tail blocks of 64/32/16 cover the rest of a branch); ``block_k``
    the input-channel chunk of P and Q items, ``block_kr`` the most reduce channels per chunk of a
    KxK item; ``split_k`` the most splits of an item's reduction (1: none), to fill the GPU at small
    batch; ``programs_per_sm`` persistent programs per SM.
    """

    block_m: int = 64
    block_n: int = 128
    block_k: int = 64
    block_kr: int = 64
    split_k: int = 1
    num_warps: int = 4
    num_stages: int = 3
    programs_per_sm: int = 2

    def __post_init__(self) -> None:
        for f in fields(self):  # a tuning-cache file may hold anything: floats, strings, JSON booleans
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"TileConfig.{f.name} must be an int, got {v!r}")
        for name in ("block_m", "block_n", "block_k", "block_kr", "num_warps"):
            v = getattr(self, name)
            if v < 1 or v & (v - 1):
                raise ValueError(f"TileConfig.{name} must be a power of two, got {v}")
        if min(self.block_m, self.block_n, self.block_k, self.block_kr) < 16:
            raise ValueError("TileConfig: block_m, block_n, block_k and block_kr must be >= 16 (tl.dot's minimum)")
        if self.block_n > 128 or self.block_kr > 64:
            raise ValueError(f"TileConfig: block_n <= 128 and block_kr <= 64, got {self.block_n}, {self.block_kr}")
        if self.split_k < 1 or self.num_stages < 1 or self.programs_per_sm < 1:
            raise ValueError(f"TileConfig.split_k, num_stages and programs_per_sm must be >= 1, got "
                             f"{self.split_k}, {self.num_stages} and {self.programs_per_sm}")


def schedule_for(spec: InceptionSpec, n: int, h: int, w: int, cfg: TileConfig, programs: int | None = None) -> Schedule:
    """The work table a launch with ``cfg`` runs with ``programs`` persistent programs (default:
    ``cfg.programs_per_sm`` on each SM of an H100). Only the issue lag of KxK items depends on it."""
    programs = H100_SMS * cfg.programs_per_sm if programs is None else programs
    return build_schedule(spec, n, h, w, cfg.block_m, cfg.block_n, cfg.block_k, cfg.block_kr, cfg.split_k,
                          programs)


@functools.lru_cache(maxsize=1024)  # per forward on CPU, with autotuning off and in CUDA graph captures
def default_config(spec: InceptionSpec, n: int, h: int, w: int, sms: int = H100_SMS,
                   dtype: torch.dtype | None = None, channels_last: bool = True) -> TileConfig:
    """The heuristic config (used untimed: on CPU, with autotuning off, inside a CUDA graph
    capture) for an input in ``channels_last`` or another layout. Reductions are split only when
    the launch would offer fewer than ``max(MIN_ITEMS, sms)`` items, which happens at small batch."""
    # Column blocks of 128 (64 for fp32) over 8 warps: on sm_90 with Triton 3.6 every dot becomes
    # wgmma with no register spills and at most 96 KB of shared memory, two programs per SM
    # (compile_report.py). 128-pixel tiles halve the weight re-reads once they alone fill the GPU;
    # below that, and in fp32 (144 KB), 64-pixel tiles: more items, less padding on small maps.
    # 128-pixel tiles and input chunks of 64 channels only for channels_last half precision: NCHW
    # x tiles load as narrower vectors or elements, and spilled up to 408 B in those shapes.
    fp32 = dtype == torch.float32
    pixels = n * h * w
    big = channels_last and not fp32 and pixels >= 64 * sms and -pixels % 128 - -pixels % 64 <= pixels // 50
    cfg = TileConfig(block_m=128 if big else 64, block_n=64 if fp32 else 128,
                     block_k=chunk(spec.in_channels, 64 if channels_last and not fp32 else 32),
                     block_kr=32 if fp32 else 64,
                     num_warps=8, num_stages=3)
    items = len(schedule_for(spec, n, h, w, cfg).items)
    want = max(MIN_ITEMS, sms)
    if 0 < items < want:
        cfg = replace(cfg, split_k=min(MAX_SPLITS, -(-want // items)))
    return cfg


def candidate_configs(spec: InceptionSpec, n: int, h: int, w: int, sms: int = H100_SMS,
                      dtype: torch.dtype | None = None, channels_last: bool = True) -> list[TileConfig]:
    """The autotuning space for one case, the heuristic first. Small on purpose: each entry is a
    compilation of a large kernel, and a whole GoogLeNet tunes nine block shapes on first use."""
    base = default_config(spec, n, h, w, sms, dtype, channels_last)
    out = [base,
           replace(base, num_stages=4),
           replace(base, block_m=192 - base.block_m),
           replace(base, block_n=64 if base.block_n == 128 else 128),
           replace(base, split_k=max(1, base.split_k // 2)),
           replace(base, programs_per_sm=1)]
    return list(dict.fromkeys(out))


def dot_precision(dtype: torch.dtype) -> str:
    if interpreting():
        return "ieee"  # the interpreter multiplies in numpy; ask for nothing it would ignore
    if dtype == torch.float32:
        return "tf32" if torch.backends.cudnn.allow_tf32 else "ieee"  # PyTorch's conv rule for fp32
    return "tf32"  # Triton's default; for fp16/bf16 operands it only means "tensor cores"


@functools.cache
def sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


@functools.cache
def _device_name(device_index: int) -> str:
    return torch.cuda.get_device_name(device_index)


def device_index(x: torch.Tensor) -> int:
    return x.device.index if x.device.index is not None else torch.cuda.current_device()


# -- autotuning -----------------------------------------------------------------------------------
# Key: block shape, map size, dtype, layout, device and a power-of-two batch bucket (so batch 1
# and batch 256 may pick different tiles, but batch 200 and 256 share a result), and the package
# and Triton versions (another kernel, another compiler: another best tile). Results live in
# memory and in a JSON file (FUSED_INCEPTION_CACHE_DIR, default ~/.cache/fused_inception).
_TUNED: dict[str, TileConfig] = {}
_TUNE_LOCK = threading.Lock()


def _channels_last(x: torch.Tensor) -> bool:
    return conv_memory_format(x) == torch.channels_last


def _tune_key(x: torch.Tensor, spec: InceptionSpec) -> str:
    n, _, h, w = x.shape
    layout = "cl" if _channels_last(x) else "nchw"
    dev = _device_name(device_index(x)) if x.is_cuda else x.device.type
    bucket = min(triton.next_power_of_2(max(n, 1)), 256)
    return (f"{dev}|fused_inception{__version__}|triton{triton.__version__}|{spec.channels}|k{spec.k3}{spec.k5}|"
            f"relu{int(spec.relu)}|{h}x{w}|{str(x.dtype).removeprefix('torch.')}|{layout}|{dot_precision(x.dtype)}|n{bucket}")


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
    from .triton_inception import inception_forward_triton

    key = _tune_key(x, spec)
    with _TUNE_LOCK:
        if key in _TUNED:
            return _TUNED[key]
        disk = _config_from_disk(_load_disk_cache().get(key))
        if disk is not None:
            _TUNED[key] = disk
            return disk
        bench = bench or _do_bench
        n, _, h, w = x.shape
        out = torch.empty((n, spec.out_channels, h, w), dtype=x.dtype, device=x.device,
                          memory_format=conv_memory_format(x))
        sms = sm_count(device_index(x)) if x.is_cuda else H100_SMS
        best, best_ms = None, float("inf")
        for cfg in candidates or candidate_configs(spec, n, h, w, sms, x.dtype, _channels_last(x)):
            try:
                ms = bench(lambda cfg=cfg: inception_forward_triton(x, packed, spec, cfg, out=out))
            except Exception:  # noqa: BLE001 - e.g. OutOfResources for a large tile
                continue
            if ms < best_ms:
                best, best_ms = cfg, ms
        if best is None:
            raise RuntimeError(f"no Triton tile config could run for {key}")
        _TUNED[key] = best
        _store_disk_cache(key, best)
        return best


def pick_config(x: torch.Tensor, packed: PackedWeights, spec: InceptionSpec) -> TileConfig:
    """The config the op launches with: tuned on CUDA (once per key), the heuristic otherwise."""
    n, _, h, w = x.shape
    if not x.is_cuda:
        return default_config(spec, n, h, w, dtype=x.dtype, channels_last=_channels_last(x))
    cfg = _TUNED.get(_tune_key(x, spec))
    if cfg is not None:
        return cfg
    if os.environ.get("FUSED_INCEPTION_AUTOTUNE", "1") == "0" or torch.cuda.is_current_stream_capturing():
        # No timing (switched off, or inside a CUDA graph capture): the batch-aware heuristic.
        return default_config(spec, n, h, w, sm_count(device_index(x)), x.dtype, _channels_last(x))
    return autotune(x, packed, spec)


# -- the graph kernel (triton_graph.py) -----------------------------------------------------------
def graph_schedule_for(graph, n: int, h: int, w: int, cfg: TileConfig, programs: int | None = None):
    """The graph kernel's work table (``graph_schedule.build_graph_schedule``) for ``cfg`` with
    ``programs`` persistent programs (default: ``cfg.programs_per_sm`` on each SM of an H100)."""
    from .graph_schedule import build_graph_schedule

    programs = H100_SMS * cfg.programs_per_sm if programs is None else programs
    return build_graph_schedule(graph, n, h, w, cfg.block_m, cfg.block_n, cfg.block_k, cfg.split_k, programs)


@functools.lru_cache(maxsize=1024)
def default_graph_config(graph, n: int, h: int, w: int, sms: int = H100_SMS,
                         dtype: torch.dtype | None = None) -> TileConfig:
    """The graph kernel's config, untuned: 64-pixel tiles, column blocks of 64, 64-channel
    reduction chunks, 8 warps; FP32_GRAPH_STAGES stages in fp32, GRAPH_STAGES otherwise. ``block_kr`` is
    unused by the graph kernel. As in ``default_config``, reductions are split only when the
    launch would offer fewer than ``max(MIN_ITEMS, sms)`` items.

    Why, from ``compile_report.py --graph --sweep`` (sm_90, Triton 3.6; benchmarks/NOTES.md) and
    ``perf_model_graph.py``: only 64 x 64 tiles with 8 warps compile without spilling (128-pixel
    tiles spilled 300-530 bytes, 128-wide column blocks 240+, 4 warps 400+), so larger tiles
    "once the pixels fill the GPU" (GoogLeNet's rule) are not on offer here. Among those, 64-channel
    chunks halve the chunks of every K-loop, which the model prices above the padding of 48-, 96-
    and 160-channel maps to multiples of 64 (BK is per launch, not per node: one chunk size for
    every conv); the choice was made when every fp16/bf16 chunk cost a round trip (2-byte loads,
    not multi-buffered). Since the launcher's ALIGN (``triton_graph._align``: channel counts,
    offsets and strides multiples of 16 bytes, every Inception-v3 and GoogLeNet block in
    channels_last) the fp16/bf16 loads are 16-byte cp.async and multi-buffered: 3 stages, 48 KB,
    254 registers and no spills at 2, 3 and 4 stages alike (compile_report.py --graph, batch 50);
    the model gains 1-3% over 2 stages and nothing more at 4. Without ALIGN (odd channel counts)
    the stages are inert: 16 KB of shared memory whatever ``num_stages`` says. With
    64-channel chunks a conv of a 3x3 pool keeps the runtime tap loop (nine 64 x 64 loads in
    flight spilled; ``triton_graph.pool_unrolled``); pool items still unroll, 32 channels at a
    time. In fp32 the loads are 4-byte cp.async and multi-buffered: 3 stages (96 KB of shared
    memory, two programs per SM in 227 KB; 4 stages, 128 KB, would leave one).
    The model prefers these tiles end to end at batch 1, 50 and 256 with either parameter
    set (per block, only Mixed_7c at batch 1, pessimistic, is faster with 32-channel chunks, whose
    pool conv unrolls).
    """
    fp32 = dtype == torch.float32
    cfg = TileConfig(block_m=64, block_n=64, block_k=64, block_kr=32, num_warps=8,
                     num_stages=FP32_GRAPH_STAGES if fp32 else GRAPH_STAGES)
    items = len(graph_schedule_for(graph, n, h, w, cfg).items)
    want = max(MIN_ITEMS, sms)
    if 0 < items < want:
        cfg = replace(cfg, split_k=min(MAX_SPLITS, -(-want // items)))
    return cfg
