"""fused_inception.fid: the Fréchet distance against closed forms and numpy, feature statistics
against numpy, extract_features on a tensor, a Dataset and a folder of PNGs with a tiny stand-in
network (fast), and once (slow) the converted FID Inception against the unfused one."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

import fused_inception as fi
from fused_inception.fid import (
    ImageFolder,
    extract_features,
    feature_statistics,
    fid_from_features,
    frechet_distance,
)

from .helpers import randomize_, rel_err, requires_interpreter


def random_psd(d: int, rank: int | None = None, scale: float = 1.0) -> torch.Tensor:
    a = torch.randn(d, rank or d, dtype=torch.float64) * scale
    return a @ a.T / (rank or d)


def numpy_fid(mu1, s1, mu2, s2) -> float:
    """An independent route: tr sqrtm(S1 S2) as the sum of the square roots of S1 S2's eigenvalues
    (numpy's general, non-symmetric eig)."""
    mu1, s1, mu2, s2 = (np.asarray(a, dtype=np.float64) for a in (mu1, s1, mu2, s2))
    ev = np.linalg.eigvals(s1 @ s2)
    tr = np.sqrt(np.clip(ev.real, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr)


# -- the distance ----------------------------------------------------------------------------------
def test_frechet_distance_diagonal_closed_form():
    d = 64
    a, b = torch.rand(d, dtype=torch.float64) * 3, torch.rand(d, dtype=torch.float64) * 3
    a[:5] = 0  # singular covariances too
    mu1, mu2 = torch.randn(d, dtype=torch.float64), torch.randn(d, dtype=torch.float64)
    want = ((mu1 - mu2) ** 2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum()
    got = frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b))
    assert isinstance(got, float)
    assert abs(got - want.item()) <= 1e-10 * want.item()
    # Rotated by one orthogonal Q the covariances commute and the closed form still holds.
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))
    got = frechet_distance(mu1, q @ torch.diag(a) @ q.T, mu2, q @ torch.diag(b) @ q.T)
    assert abs(got - want.item()) <= 1e-9 * want.item()


@pytest.mark.parametrize("rank", [None, 20], ids=["full-rank", "rank-20"])
def test_frechet_distance_matches_numpy_eig(rank):
    d = 96
    s1, s2 = random_psd(d, rank, 2.0), random_psd(d, rank)
    mu1, mu2 = torch.randn(d, dtype=torch.float64), torch.randn(d, dtype=torch.float64)
    got = frechet_distance(mu1, s1, mu2, s2)
    want = numpy_fid(mu1, s1, mu2, s2)
    assert abs(got - want) <= 1e-8 * abs(want)
    # numpy arrays are accepted as they are
    assert frechet_distance(mu1.numpy(), s1.numpy(), mu2.numpy(), s2.numpy()) == pytest.approx(got, rel=1e-12)


@pytest.mark.parametrize("n,d", [(200, 16), (50, 64)], ids=["n>d", "n<d-singular"])
def test_fid_symmetric_and_zero_for_identical_sets(n, d):
    f1 = torch.rand(n, d, dtype=torch.float64)
    f2 = torch.rand(n, d, dtype=torch.float64) * 1.5 + 0.1
    tr = feature_statistics(f1)[1].trace().item()
    # With N <= D the covariance is singular: the square roots of its rounding-level eigenvalues
    # leave ~sqrt(eps) of the trace (the problem's conditioning); full rank gives ~eps.
    tol = 1e-9 if n > d else 1e-6
    assert abs(fid_from_features(f1, f1)) <= tol * tr
    assert abs(fid_from_features(f1, f1.clone().float())) <= max(tol, 1e-6) * tr  # fp32 in, float64 inside
    a, b = fid_from_features(f1, f2), fid_from_features(f2, f1)
    assert a > 0 and abs(a - b) <= tol * a


def test_feature_statistics_match_numpy():
    f = torch.randn(40, 12, dtype=torch.float32) * 3 + 1
    mu, sigma = feature_statistics(f)
    assert mu.dtype == sigma.dtype == torch.float64 and mu.shape == (12,) and sigma.shape == (12, 12)
    fn = f.double().numpy()
    np.testing.assert_allclose(mu.numpy(), fn.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(sigma.numpy(), np.cov(fn, rowvar=False), rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="N >= 2"):
        feature_statistics(f[:1])
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(mu, sigma, mu[:5], sigma)


# -- extract_features with a tiny stand-in network -------------------------------------------------
class Tiny(nn.Module):
    """Images (N, 3, H, W) -> (N, 2048): a 1x1 conv to 8 channels and an adaptive pool to 16x16,
    per image (no batch coupling); records the input dtypes it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.pool = nn.AdaptiveAvgPool2d(16)
        self.seen: list[tuple[torch.dtype, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((x.dtype, x.shape[0]))
        return self.pool(torch.relu(self.conv(x))).flatten(1)


def images(n: int, h: int = 20, w: int = 24) -> torch.Tensor:
    """Random images on the k/255 grid, so a PNG round trip gives them back exactly."""
    return torch.randint(0, 256, (n, 3, h, w)).float() / 255


def direct(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + 1]) for i in range(len(x))]).double()


def test_extract_features_tensor_with_remainder():
    model, x = Tiny().train(), images(7)
    f = extract_features(model, x, batch_size=3, progress=False)
    assert f.shape == (7, 2048) and f.dtype == torch.float64 and f.device.type == "cpu"
    assert [n for _, n in model.seen] == [3, 3, 1]  # the last, partial batch is kept
    assert rel_err(f, direct(model, x)) < 1e-6
    assert model.training  # given back in the mode it had


class Labelled(Dataset):
    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], i % 3


def test_extract_features_dataset_of_tuples():
    model, x = Tiny(), images(5)
    f = extract_features(model, Labelled(x), batch_size=2, progress=False)
    assert torch.equal(f, extract_features(model, x, batch_size=2, progress=False))
    assert rel_err(f, direct(model, x)) < 1e-6


def test_extract_features_folder_matches_tensor(tmp_path):
    from PIL import Image

    x = images(5)
    names = ["b.png", "a.PNG", "d.png", "c.bmp", "e.png"]  # read back sorted by name
    for name, img in zip(names, x):
        Image.fromarray((img * 255).round().byte().permute(1, 2, 0).numpy()).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    folder = ImageFolder(tmp_path)
    assert [p.name for p in folder.files] == sorted(names)
    assert torch.equal(folder[0], x[1])  # "a.PNG": float in [0, 1], CHW, exactly ToTensor's values
    order = [names.index(n) for n in sorted(names)]
    model = Tiny()
    f = extract_features(model, tmp_path, batch_size=2, progress=False)
    assert torch.equal(f, extract_features(model, x[order], batch_size=2, progress=False))
    assert extract_features(model, str(tmp_path), batch_size=4, progress=False).shape == (5, 2048)


def test_extract_features_images_of_different_sizes(tmp_path):
    from PIL import Image

    for i, (h, w) in enumerate([(20, 24), (31, 17), (20, 24)]):
        Image.fromarray(np.full((h, w), 40 * i, dtype=np.uint8)).save(tmp_path / f"{i}.png")  # grayscale -> RGB
    model = Tiny()
    f = extract_features(model, tmp_path, batch_size=1, progress=False)
    assert f.shape == (3, 2048)
    with pytest.raises(ValueError, match="batch_size=1"):
        extract_features(model, tmp_path, batch_size=2, progress=False)


def test_extract_features_progress_bar(capsys):
    pytest.importorskip("tqdm")
    model, x = Tiny(), images(4)
    extract_features(model, x, batch_size=2, progress=False)
    assert capsys.readouterr().err == ""
    extract_features(model, x, batch_size=2, progress=True)
    assert "features" in capsys.readouterr().err


def test_extract_features_dtype():
    model, x = Tiny(), images(3)
    ref = direct(model, x)
    f = extract_features(model, x, batch_size=2, dtype=torch.bfloat16, progress=False)
    assert f.dtype == torch.float64
    assert {dt for dt, _ in model.seen[-2:]} == {torch.bfloat16}  # inputs cast
    assert model.conv.weight.dtype == torch.bfloat16  # the model moved, as model.to does
    assert 0 < rel_err(f, ref) < 2e-2


def test_extract_features_list_output_and_bad_input():
    class PytorchFidLike(Tiny):  # pytorch-fid's InceptionV3: [features (N, D, 1, 1)]
        def forward(self, x):
            return [super().forward(x)[:, :, None, None]]

    model, x = PytorchFidLike(), images(3)
    assert extract_features(model, x, progress=False).shape == (3, 2048)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        extract_features(model, x[0], progress=False)
    with pytest.raises(TypeError):
        extract_features(model, [1, 2], progress=False)


# -- the converted FID Inception -------------------------------------------------------------------
@pytest.mark.slow
@requires_interpreter
def test_converted_fid_inception_features_match_unfused():
    """Every Mixed block fused (Triton's interpreter): pool3 features equal the unfused network's
    within fp32's tolerance. The network runs on 75x75 inputs (``features``, the smallest it takes):
    pytorch-fid's resize to 299 (``preprocess``, checked in test_models_v3.py) would make this
    test take a quarter of an hour in the interpreter without testing anything more of the fusion."""
    plain = randomize_(fi.models.fid_inception_v3()).eval()
    fused, report = fi.convert(copy.deepcopy(plain), backend="triton", return_report=True)
    mixed = [n for n, _ in plain.named_modules() if n.rsplit(".", 1)[-1].startswith("Mixed_")]
    assert len(mixed) == 11 and sorted(report.replaced) == sorted(mixed) and not report.skipped
    x = fi.models.FIDInceptionV3.preprocess(torch.rand(2, 3, 40, 50))
    x = torch.nn.functional.interpolate(x, size=(75, 75), mode="bilinear", align_corners=False)
    with torch.no_grad():
        ref, f = plain.features(x), fused.features(x)
    blocks = [m for m in fused.modules() if isinstance(m, fi.FusedBlock)]
    assert len(blocks) == 11 and all(b.last_backend == "triton" for b in blocks)
    assert f.shape == (2, 2048)
    assert rel_err(f, ref) < 1e-5
