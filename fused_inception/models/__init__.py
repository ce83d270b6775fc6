"""Whole networks built from this package's blocks' layouts, randomly initialised (nothing is
downloaded): GoogLeNet (``googlenet``), torchvision's Inception-v3 (``inception_v3``) and
pytorch-fid's FID Inception (``fid_inception_v3``), each state_dict-compatible with its original.

``InceptionAux`` here is GoogLeNet's; Inception-v3's is ``fused_inception.models.inception_v3.InceptionAux``
(as in torchvision, the package attributes ``googlenet`` and ``inception_v3`` are the functions,
which hide their modules; ``from fused_inception.models.inception_v3 import ...`` reaches the module).
"""

from .googlenet import GoogLeNet, GoogLeNetOutputs, InceptionAux, googlenet
from .inception_v3 import (
    BasicConv2d,
    FIDInceptionA,
    FIDInceptionC,
    FIDInceptionE_1,
    FIDInceptionE_2,
    FIDInceptionV3,
    Inception3,
    InceptionA,
    InceptionB,
    InceptionC,
    InceptionD,
    InceptionE,
    InceptionOutputs,
    fid_inception_v3,
    inception_v3,
    load_fid_weights,
)

__all__ = [
    "BasicConv2d", "FIDInceptionA", "FIDInceptionC", "FIDInceptionE_1", "FIDInceptionE_2", "FIDInceptionV3",
    "GoogLeNet", "GoogLeNetOutputs", "Inception3", "InceptionA", "InceptionAux", "InceptionB", "InceptionC",
    "InceptionD", "InceptionE", "InceptionOutputs", "fid_inception_v3", "googlenet", "inception_v3",
    "load_fid_weights",
]
