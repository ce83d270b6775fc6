"""Test set-up: Triton's interpreter on machines without CUDA, seeding, shared helpers.

TRITON_INTERPRET must be set before fused_inception is imported (Triton binds a kernel to the
interpreter when it is defined), hence here, at collection time.
"""

import os
import zlib

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed(request):
    # A fresh, reproducible draw per test (never zeros), different between tests.
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))
    yield
