"""Test set-up: Triton's interpreter on machines without CUDA, the test tiers, seeding.

TRITON_INTERPRET must be set before fused_inception is imported (Triton binds a kernel to the
interpreter when it is defined), hence here, at collection time.

Tiers: ``python -m pytest`` runs the default tier (pyproject.toml's addopts deselect ``slow``);
``-m slow`` runs the rest, and CI runs both; ``-m gpu`` is the GPU suite of a CUDA machine. A case
matrix keeps one representative of each feature in the default tier with
``@pytest.mark.fast_cases("id", ...)``: its other cases are marked ``slow`` here. Without CUDA every
``gpu`` test is skipped here with one reason, and the run ends with a short account of the skips,
so a newcomer sees why a third of the suite did not run.
"""

import os
import zlib
from collections import Counter, defaultdict
from pathlib import Path

import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

GPU_SKIP_REASON = "GPU-only test: no CUDA device"


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker: the slow marks must be in place
def pytest_collection_modifyitems(config, items):
    matrices = defaultdict(list)
    for item in items:
        if item.get_closest_marker("fast_cases") is not None:
            matrices[item.nodeid.split("[")[0]].append(item)
    # With every case of a matrix collected (no `test[id]` on the command line, no --lf), each id
    # named in fast_cases must exist: a renamed case would otherwise drop out of the default tier.
    whole = not any("[" in arg for arg in config.args) and not config.getoption("lf", False)
    for name, cases in matrices.items():
        fast = set(cases[0].get_closest_marker("fast_cases").args)
        ids = {item.callspec.id for item in cases}
        if whole and not fast <= ids:
            raise pytest.UsageError(f"{name}: fast_cases {sorted(fast - ids)} name no case; cases: {sorted(ids)}")
        for item in cases:
            if item.callspec.id not in fast:
                item.add_marker(pytest.mark.slow)
    if not CUDA:
        # Placed first, this skipif wins over the tests' own CUDA conditions (pytest evaluates
        # skipif marks in order, before skip marks), so every GPU-only test gives this one reason.
        gpu_only = pytest.mark.skipif(True, reason=GPU_SKIP_REASON)
        for item in items:
            if item.get_closest_marker("gpu") is not None:
                item.add_marker(gpu_only, append=False)


def pytest_terminal_summary(terminalreporter):
    """Why tests were skipped, in a few lines: the GPU-only ones as one count, every other skip
    with its place and reason (`-rs` would list each GPU-only test function on its own line)."""
    root = terminalreporter.config.rootpath
    gpu, other = 0, Counter()
    for rep in terminalreporter.stats.get("skipped", []):
        if not isinstance(rep.longrepr, tuple):
            continue
        path, line, message = rep.longrepr
        reason = message.removeprefix("Skipped: ")
        if reason == GPU_SKIP_REASON:
            gpu += 1
        else:
            where = Path(path).relative_to(root) if Path(path).is_relative_to(root) else path
            other[f"{where}:{line}: {reason}"] += 1
    if gpu:
        terminalreporter.write_line(f"{gpu} GPU-only test{'s' * (gpu != 1)} skipped: no CUDA device "
                                    "(on a CUDA machine: python -m pytest -m gpu)")
    for where, n in other.items():
        terminalreporter.write_line(f"skipped {n}: {where}")


@pytest.fixture
def default_tiles(monkeypatch):
    """The heuristic tiles, no autotuning (a compile per candidate): for tests about the op's
    integration, not tile choice (``pytestmark = pytest.mark.usefixtures("default_tiles")``)."""
    monkeypatch.setenv("FUSED_INCEPTION_AUTOTUNE", "0")


@pytest.fixture(autouse=True)
def _seed(request):
    # A fresh, reproducible draw per test (never zeros), different between tests.
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))
    yield
