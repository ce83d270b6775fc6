"""fused_inception: GoogLeNet's Inception block in one kernel launch."""

from . import models
from ._version import __version__ as __version__
from .convert import ConversionReport, convert, unconvert
from .module import BACKENDS, FusedInception, invalidate_caches
from .reference import ReferenceInception
from .spec import GOOGLENET_BLOCKS, GOOGLENET_SPATIAL, InceptionSpec, googlenet_spec
from .structure import NotAnInceptionBlock

__all__ = [
    "BACKENDS", "ConversionReport", "FusedInception", "GOOGLENET_BLOCKS", "GOOGLENET_SPATIAL",
    "InceptionSpec", "NotAnInceptionBlock", "ReferenceInception", "convert", "googlenet_spec", "invalidate_caches",
    "models", "unconvert",
]
