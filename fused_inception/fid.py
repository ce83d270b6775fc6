"""What a FID user needs around a (converted) FID Inception: features of a set of images, their
statistics and the Fréchet distance, in torch only.

    model = fused_inception.convert(fid_inception_v3("pt_inception-2015-12-05-6726825d.pth"))
    fid = fid_from_features(extract_features(model, "real/"), extract_features(model, "fake/"))

``extract_features`` reads images as pytorch-fid does (PIL, ``.convert("RGB")``, ``ToTensor``: float
in [0, 1], CHW) so that the numbers are comparable with it; the network itself resizes to 299 and
scales to [-1, 1]. The statistics and the distance are float64 throughout: the features may come
from an fp16 forward, but FID subtracts traces of order 1e2-1e3 to get values of order 1-10, which
a lower precision would not survive. No scipy: the matrix square root's trace comes from two
symmetric eigendecompositions (see ``frechet_distance``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

__all__ = ["IMAGE_EXTENSIONS", "ImageFolder", "extract_features", "feature_statistics", "fid_from_features",
           "frechet_distance"]

# pytorch-fid's list, matched case-insensitively here.
IMAGE_EXTENSIONS = frozenset({"bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp"})


class ImageFolder(Dataset):
    """The image files directly in ``root`` (not its subfolders), sorted by name, each loaded with
    PIL as RGB and returned as a float tensor in [0, 1] of shape (3, H, W): pytorch-fid's
    ``ImagePathDataset`` with ``ToTensor``. Images keep their own size (the network resizes)."""

    def __init__(self, root: str | Path) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"not a folder of images: {root}")
        self.files = sorted(p for p in root.iterdir()
                            if p.is_file() and p.suffix[1:].lower() in IMAGE_EXTENSIONS)
        if not self.files:
            raise ValueError(f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {root}")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        from PIL import Image  # only this loader needs Pillow

        with Image.open(self.files[i]) as img:
            rgb = np.array(img.convert("RGB"))  # (H, W, 3) uint8
        return torch.from_numpy(rgb).permute(2, 0, 1).float().div(255)


def _image(item) -> torch.Tensor:
    """One dataset item as a float (3, H, W) image: the first element of an (image, label, ...)
    tuple; uint8 scaled by 1/255 as ``ToTensor`` does."""
    if isinstance(item, (tuple, list)):
        item = item[0]
    if not isinstance(item, torch.Tensor):
        raise TypeError(f"a dataset item must be an image tensor or an (image, ...) tuple, not {type(item).__name__}")
    if item.dim() != 3:
        raise ValueError(f"an image must be (C, H, W), got shape {tuple(item.shape)}")
    return item.float().div(255) if item.dtype == torch.uint8 else item


def _collate(items: list) -> torch.Tensor:
    images = [_image(item) for item in items]
    if len({tuple(im.shape) for im in images}) > 1:
        raise ValueError("images of different sizes in one batch: use batch_size=1 (the network resizes each "
                         "image to 299x299 itself) or resize them to one size first")
    return torch.stack(images)


def extract_features(model: nn.Module, data: str | Path | Dataset | torch.Tensor, batch_size: int = 50,
                     device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                     num_workers: int = 0, progress: bool = True) -> torch.Tensor:
    """The (N, D) features (D = 2048 for pool3) of every image of ``data``, in order, as float64
    on the CPU.

    ``data``: a folder (its image files, see ``ImageFolder``), a ``Dataset`` of (3, H, W) image
    tensors in [0, 1] or of (image, label) tuples, or an (N, 3, H, W) tensor in [0, 1]. Images of
    different sizes work with ``batch_size=1`` (a batch must be one size). A final batch smaller
    than ``batch_size`` is kept: every image counts.

    ``device``/``dtype``: where and in which precision the network runs; given, the model is moved
    there (``model.to``, in place, as pytorch-fid does), else it runs where its parameters are.
    Inputs are cast to that dtype; the features come back float64 whatever it was. The model is
    put in eval mode (training-mode BatchNorm would use batch statistics) and given back in the
    mode it had. A model output that is a list or tuple (pytorch-fid's ``InceptionV3``) gives its
    first element; (N, D, 1, 1) is flattened.
    """
    if isinstance(data, (str, Path)):
        data = ImageFolder(data)
    elif isinstance(data, torch.Tensor):
        if data.dim() != 4:
            raise ValueError(f"a tensor of images must be (N, 3, H, W), got shape {tuple(data.shape)}")
    elif not isinstance(data, Dataset):
        raise TypeError(f"data must be a folder path, a Dataset or a tensor, not {type(data).__name__}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    param = next((p for p in (*model.parameters(), *model.buffers()) if p.is_floating_point()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.get_default_dtype()

    # A tensor is a Dataset as far as DataLoader is concerned (len and integer indexing).
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, drop_last=False, num_workers=num_workers,
                        collate_fn=_collate, pin_memory=device.type == "cuda")
    batches = loader
    if progress:
        try:
            from tqdm import tqdm  # optional: no bar without it
        except ImportError:
            pass
        else:
            batches = tqdm(loader, desc="features", unit="batch")

    was_training = model.training
    model.eval()
    features = []
    try:
        with torch.no_grad():  # not inference_mode: its tensors could not be modified in place later
            for x in batches:
                out = model(x.to(device=device, dtype=dtype, non_blocking=True))
                if isinstance(out, (tuple, list)):
                    out = out[0]
                features.append(out.flatten(1).to(device="cpu", dtype=torch.float64))
    finally:
        model.train(was_training)
    if not features:
        raise ValueError("no images in data")
    return torch.cat(features)


def _as_f64(a) -> torch.Tensor:
    return torch.as_tensor(a).detach().to(device="cpu", dtype=torch.float64)


def feature_statistics(features) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and covariance (D, D) of (N, D) features, float64: numpy's ``mean(axis=0)`` and
    ``cov(rowvar=False)`` (N - 1 in the denominator), as pytorch-fid computes them."""
    f = _as_f64(features)
    if f.dim() != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be (N, D) with N >= 2, got shape {tuple(f.shape)}")
    return f.mean(0), torch.cov(f.T, correction=1)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """The Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2):
    ||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrtm(sigma1 sigma2)), in float64.

    Tensors or numpy arrays. Unlike pytorch-fid (scipy's ``sqrtm``) it needs no ``eps * I`` retry
    for singular covariances (fewer than D + 1 samples) and never has an imaginary part to drop.
    """
    mu1, sigma1, mu2, sigma2 = (_as_f64(a) for a in (mu1, sigma1, mu2, sigma2))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"shapes do not match: mu {tuple(mu1.shape)}, {tuple(mu2.shape)}; "
                         f"sigma {tuple(sigma1.shape)}, {tuple(sigma2.shape)}")
    # tr(sqrtm(S1 S2)) without a non-symmetric square root. S1 = Q diag(lam) Q^T (eigh), so
    # R = S1^(1/2) = Q diag(sqrt(lam)) Q^T is symmetric PSD and S1 S2 = R (R S2). XY and YX have the
    # same eigenvalues, so S1 S2 has those of M = R S2 R: symmetric PSD (M = (S2^(1/2) R)^T
    # (S2^(1/2) R)), so real and >= 0. The principal square root scipy's sqrtm computes has the
    # square roots of S1 S2's eigenvalues as its eigenvalues, hence tr(sqrtm(S1 S2)) = sum_i
    # sqrt(lambda_i(M)). More stable: both decompositions are symmetric (eigh is backward stable,
    # eigenvalues real), where sqrtm takes a Schur form of the non-symmetric S1 S2, which for
    # singular or ill-conditioned covariances returns complex or non-finite values. Eigenvalues
    # that rounding made slightly negative are clamped to 0 (in lam and in M's). With singular
    # covariances the result still carries ~sqrt(eps) * tr relative noise (the square root of
    # rounding-level eigenvalues): the problem's own conditioning, not this method's.
    lam, q = torch.linalg.eigh((sigma1 + sigma1.T) / 2)
    r = (q * lam.clamp_min(0).sqrt()) @ q.T
    m = r @ sigma2 @ r
    tr_covmean = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()
    diff = mu1 - mu2
    return float(diff @ diff + sigma1.trace() + sigma2.trace() - 2 * tr_covmean)


def fid_from_features(features1, features2) -> float:
    """FID between two sets of (N, D) features (e.g. from ``extract_features``)."""
    return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))
