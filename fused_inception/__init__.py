"""fused_inception: Inception blocks (GoogLeNet, Inception-v3 and its FID variant) in one kernel launch."""

from . import models
from ._version import __version__ as __version__
from .convert import ConversionReport, convert, unconvert
from .fused_block import FusedBlock
from .graph import BlockGraph, Conv, Pool
from .module import BACKENDS, FusedInception, invalidate_caches
from .reference import ReferenceBlock, ReferenceInception
from .spec import GOOGLENET_BLOCKS, GOOGLENET_SPATIAL, InceptionSpec, googlenet_spec
from .structure import NotAnInceptionBlock

__all__ = [
    "BACKENDS", "BlockGraph", "Conv", "ConversionReport", "FusedBlock", "FusedInception", "GOOGLENET_BLOCKS",
    "GOOGLENET_SPATIAL", "InceptionSpec", "NotAnInceptionBlock", "Pool", "ReferenceBlock", "ReferenceInception",
    "convert", "googlenet_spec", "invalidate_caches", "models", "unconvert",
]
