"""LPIPS and ArtFID's Inception against PyTorch transcriptions of their reference code, in
float64, through the real reading and conversion of ``.pth`` files (both of PyTorch's
layouts) written with random weights; FID against its eigenvalue form; the scores' weights
offline are one line each."""

from __future__ import annotations

import collections
import csv
import urllib.error

import jax
import numpy as np
import pytest
from PIL import Image

from nst_jax import metrics
from nst_jax.errors import WeightsError
from nst_jax.files import digest, score_weights, torch_pth

from conftest import assert_refused, exit_code

torch = pytest.importorskip("torch")
F = torch.nn.functional
nn = torch.nn


def write_lpips_files(folder) -> tuple:
    """torchvision's AlexNet ``features`` layout (zip file) and LPIPS' lin layout (legacy
    file, as LPIPS' own released file is), random values from fixed seeds."""
    torch.manual_seed(0)
    alexnet = collections.OrderedDict()
    shapes = {
        0: (64, 3, 11),
        3: (192, 64, 5),
        6: (384, 192, 3),
        8: (256, 384, 3),
        10: (256, 256, 3),
    }
    for index, (out, cin, k) in shapes.items():
        alexnet[f"features.{index}.weight"] = torch.randn(out, cin, k, k) / (cin * k * k) ** 0.5
        alexnet[f"features.{index}.bias"] = torch.randn(out) * 0.1
    alexnet["classifier.1.weight"] = torch.randn(8, 4)  # heads LPIPS does not use
    lin = collections.OrderedDict(
        (f"lin{i}.model.1.weight", torch.rand(1, c, 1, 1))
        for i, c in enumerate((64, 192, 384, 256, 256))
    )
    torch.save(alexnet, folder / "alexnet.pth")
    torch.save(lin, folder / "lin.pth", _use_new_zipfile_serialization=False)
    return folder / "alexnet.pth", folder / "lin.pth", alexnet, lin


def torch_lpips(alexnet: dict, lin: dict, a: np.ndarray, b: np.ndarray) -> float:
    """LPIPS v0.1 as richzhang/PerceptualSimilarity's lpips.py computes it (its ScalingLayer,
    normalize_tensor, NetLinLayer and spatial_average), in float64."""
    shift = torch.tensor([-0.030, -0.088, -0.188], dtype=torch.float64)[None, :, None, None]
    scale = torch.tensor([0.458, 0.448, 0.450], dtype=torch.float64)[None, :, None, None]
    w = {k: v.double() for k, v in alexnet.items()}

    def features(x):
        x = (torch.tensor(x).permute(2, 0, 1)[None] * 2 - 1 - shift) / scale
        h1 = F.relu(F.conv2d(x, w["features.0.weight"], w["features.0.bias"], 4, 2))
        h2 = F.relu(
            F.conv2d(F.max_pool2d(h1, 3, 2), w["features.3.weight"], w["features.3.bias"], 1, 2)
        )
        h3 = F.relu(
            F.conv2d(F.max_pool2d(h2, 3, 2), w["features.6.weight"], w["features.6.bias"], 1, 1)
        )
        h4 = F.relu(F.conv2d(h3, w["features.8.weight"], w["features.8.bias"], 1, 1))
        h5 = F.relu(F.conv2d(h4, w["features.10.weight"], w["features.10.bias"], 1, 1))
        return h1, h2, h3, h4, h5

    total = 0.0
    for k, (f0, f1) in enumerate(zip(features(a), features(b), strict=True)):
        n0, n1 = (f / (torch.sqrt(torch.sum(f**2, dim=1, keepdim=True)) + 1e-10) for f in (f0, f1))
        weighted = F.conv2d((n0 - n1) ** 2, lin[f"lin{k}.model.1.weight"].double())
        total += float(weighted.mean([2, 3]))
    return total


def test_lpips_equals_the_reference_in_float64(tmp_path):
    # 1e-10 relative: the same float64 arithmetic in another order.
    alexnet_path, lin_path, alexnet, lin = write_lpips_files(tmp_path)
    out = score_weights.convert("lpips", [alexnet_path, lin_path], tmp_path / "lpips.msgpack")
    params = score_weights.load("lpips", out)
    # The converted file holds float32: the reference gets those same values.
    alexnet = {k: torch.tensor(np.asarray(v, np.float32)) for k, v in alexnet.items()}
    rng = np.random.default_rng(0)
    a, b = rng.random((40, 52, 3)), rng.random((40, 52, 3))
    expected = torch_lpips(alexnet, lin, a, b)
    with jax.enable_x64(True):
        params64 = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
        found = float(metrics.lpips(params64, a, b))
        assert float(metrics.lpips(params64, a, a)) == 0.0
    assert abs(found - expected) <= 1e-10 * expected, (found, expected)
    with pytest.raises(ValueError, match="31"):
        metrics.lpips(params, a[:30], b[:30])


class BasicConv2d(nn.Module):  # torchvision.models.inception, transcribed
    def __init__(self, cin, cout, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class InceptionA(nn.Module):
    def __init__(self, cin, pool_features):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x):
        dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        pool = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)), dbl, pool], 1)


class InceptionB(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), dbl, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin, c7):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_1(x)
        for layer in (
            self.branch7x7dbl_2,
            self.branch7x7dbl_3,
            self.branch7x7dbl_4,
            self.branch7x7dbl_5,
        ):
            d = layer(d)
        pool = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([self.branch1x1(x), b7, d, pool], 1)


class InceptionD(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pool = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([self.branch1x1(x), b3, d, pool], 1)


class Inception3(nn.Module):
    """torchvision's Inception3 up to its pooled features (ArtFID's return_features)."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = (
            InceptionA(192, 32),
            InceptionA(256, 64),
            InceptionA(288, 64),
        )
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b, self.Mixed_6c = InceptionC(768, 128), InceptionC(768, 160)
        self.Mixed_6d, self.Mixed_6e = InceptionC(768, 160), InceptionC(768, 192)
        self.Mixed_7a, self.Mixed_7b, self.Mixed_7c = (
            InceptionD(768),
            InceptionE(1280),
            InceptionE(2048),
        )
        self.fc1 = nn.Linear(2048, 3)  # a head FID does not use

    def forward(self, x):
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, kernel_size=3, stride=2)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """A random Inception3 (running statistics drawn too), saved as torch.save does."""
    torch.manual_seed(1)
    model = Inception3().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
    path = tmp_path_factory.mktemp("artfid") / "art_inception.pth"
    torch.save(model.state_dict(), path)
    return path, model


@pytest.mark.slow
def test_inception_features_equal_the_reference_in_float64(inception_file, tmp_path):
    # 1e-9 relative: float64 on both sides, 94 convolutions summed in other orders.
    path, model = inception_file
    params = score_weights.load("artfid", score_weights.convert("artfid", [path], tmp_path / "a"))
    image = np.random.default_rng(2).random((80, 91, 3))
    reference = model.double()
    with torch.no_grad():
        for p in reference.parameters():  # the float32 values the converted file holds
            p.copy_(p.float().double())
        expected = reference(torch.tensor(image).permute(2, 0, 1)[None])[0].numpy()
    model.float()
    with jax.enable_x64(True):
        params64 = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
        found = np.asarray(metrics.inception_features(params64, image))
    assert found.shape == (2048,)
    np.testing.assert_allclose(found, expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())
    with pytest.raises(ValueError, match="75"):
        metrics.inception_features(params, image[:70])


@pytest.mark.parametrize("rows", [(40, 30), (5, 4)])
def test_fid_equals_scipy_sqrtm_form(rows):
    # The definition as pytorch-fid computes it (scipy's sqrtm of S_a S_b), on full-rank
    # covariances (40, 30 rows of 6 features), where sqrtm is accurate: 1e-8 relative; and
    # on rank-deficient ones (5, 4 rows), where our form is exact: 1e-6 of the traces.
    from scipy import linalg

    rng = np.random.default_rng(3)
    a = rng.normal(size=(rows[0], 6))
    b = rng.normal(1.0, 2.0, size=(rows[1], 6)) @ rng.normal(size=(6, 6))
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(sa @ sb).real
    expected = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(sa) + np.trace(sb)
    expected -= 2 * np.trace(root)
    bound = 1e-8 * expected if rows[0] > 6 else 1e-6 * (np.trace(sa) + np.trace(sb))
    assert abs(metrics.fid(a, b) - expected) <= bound
    assert abs(metrics.fid(a, a)) <= 1e-9 * np.trace(sa)
    assert metrics.art_fid(2.0, 0.5) == 4.5
    with pytest.raises(ValueError, match="fid"):
        metrics.fid(a[:1], b)
    with pytest.raises(ValueError, match="fid"):
        metrics.fid(a, b[:, :3])


def test_scores_weights_offline_are_one_line(tmp_path, weights_h5, capsys, monkeypatch):
    (tmp_path / "c").mkdir()
    folders = [tmp_path / "c"] * 3
    base = ["score", *folders, "--weights", weights_h5, "-o", tmp_path / "s.csv", "-q"]
    assert_refused(tmp_path, [*base, "--lpips"], "weights fetch lpips", capsys=capsys)
    assert_refused(tmp_path, [*base, "--artfid"], "weights fetch lpips", capsys=capsys)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network here")

    monkeypatch.setattr(digest.urllib.request, "urlopen", offline)
    for name in ("lpips", "artfid"):
        assert_refused(tmp_path, ["weights", "fetch", name], "cannot download", capsys=capsys)


def test_damaged_score_weights_are_one_line(tmp_path, inception_file, capsys):
    alexnet_path, lin_path, *_ = write_lpips_files(tmp_path)
    cases = {
        "swapped": (["lpips", [lin_path, alexnet_path]], "not LPIPS"),
        "one_file": (["lpips", [alexnet_path]], "from 2 file"),
        "wrong_net": (["artfid", [alexnet_path]], "not ArtFID"),
    }
    for args, fragment in cases.values():
        with pytest.raises(WeightsError, match=fragment):
            score_weights.convert(*args, tmp_path / "x.msgpack")
    (tmp_path / "junk.msgpack").write_bytes(b"\x81\xa1a\x01")
    with pytest.raises(WeightsError, match="not an nst_jax LPIPS"):
        score_weights.load("lpips", tmp_path / "junk.msgpack")
    with pytest.raises(WeightsError, match="no such file"):
        score_weights.load("lpips", tmp_path / "none.msgpack")
    argv = ["weights", "convert", alexnet_path, tmp_path / "o.msgpack", "--network", "lpips"]
    assert_refused(tmp_path, argv, "--lin", capsys=capsys)
    with pytest.raises(WeightsError, match="names posix.system"):
        import os
        import pickle

        (tmp_path / "evil.pth").write_bytes(pickle.dumps(os.system))
        torch_pth.read_state_dict(tmp_path / "evil.pth")


@pytest.mark.slow
def test_score_with_lpips_and_artfid_on_a_folder(tmp_path, weights_h5, inception_file, capsys):
    """Acceptance 4: with weights converted by the command from files laid out as the
    published ones, score adds LPIPS per result, and FID and ArtFID for the set. (8 images
    here for the suite's time: Inception's pass per image is most of it.)"""
    alexnet_path, lin_path, *_ = write_lpips_files(tmp_path)
    convert = ["weights", "convert"]
    assert exit_code([*convert, alexnet_path, "--network", "lpips", "--lin", lin_path]) == 0
    assert exit_code([*convert, inception_file[0], "--network", "artfid"]) == 0
    rng = np.random.default_rng(6)
    for kind in ("contents", "styles", "results"):
        (tmp_path / kind).mkdir()
        for i in range(8):
            pixels = (rng.random((80, 80, 3)) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / kind / f"{i:02d}.png")
    out = tmp_path / "s.csv"
    folders = [tmp_path / k for k in ("contents", "styles", "results")]
    argv = [
        "score",
        *folders,
        "--weights",
        weights_h5,
        "-o",
        out,
        "--artfid",
        "-q",
        "--max-dim",
        "80",
    ]
    capsys.readouterr()
    assert exit_code(argv) == 0
    summary = dict(line.split() for line in capsys.readouterr().out.splitlines()[1:])
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and all(float(r["lpips"]) > 0 for r in rows)
    params = score_weights.load("lpips")
    first = [
        np.asarray(Image.open(p), np.float32) / 255 for p in (rows[0]["result"], rows[0]["content"])
    ]
    # float32 LPIPS of the same pixels, computed again: 1e-5 relative.
    assert float(rows[0]["lpips"]) == pytest.approx(float(metrics.lpips(params, *first)), rel=1e-5)
    lpips_mean = np.mean([float(r["lpips"]) for r in rows])
    fid = float(summary["fid"])
    assert fid > 0
    assert float(summary["artfid"]) == pytest.approx((lpips_mean + 1) * (fid + 1), rel=1e-5)


def test_score_functions_check_their_arguments(params):
    x = np.random.default_rng(7).random((40, 40, 3)).astype(np.float32)
    for bad in ({}, {"conv1": 1}, None, params):
        with pytest.raises(ValueError, match="lpips"):
            metrics.lpips(bad, x, x)
        with pytest.raises(ValueError, match="artfid"):
            metrics.inception_features(bad, np.zeros((80, 80, 3), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        metrics.fid(np.full((3, 4), np.nan), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="terms"):
        metrics.style_distances(params, x, x, terms="gram")
    with pytest.raises(ValueError, match="max_dim"):
        from nst_jax.session import score

        score.score_folders(params, "a", "b", "c", max_dim=0)
    with pytest.raises(ValueError, match="max_dim must be at most 2147483647"):  # check_count's
        score.score_folders(params, "a", "b", "c", max_dim=2**40)
    with pytest.raises(ValueError, match="rows must be a positive integer"):
        metrics.cfsd(params, x, x, rows=True)


def _pickle_in_zip(path, payload: bytes) -> None:
    """A zip laid out as torch.save's, whose data.pkl is ``payload``."""
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x/data.pkl", payload)
        archive.writestr("x/data/0", b"\0" * 16)


@pytest.mark.slow
def test_hostile_pth_files_are_one_line_and_change_nothing(tmp_path):
    """Cases of a hostile probe: a pickle that sets attributes on an allowed function, a
    tensor of absurd size over a small storage, a storage made of a plain tuple, a zip
    entry that inflates past the limit, a pipe."""
    import os
    import pickle
    import zipfile

    G = lambda module, name: f"c{module}\n{name}\n".encode()  # noqa: E731 - GLOBAL
    build = (
        b"\x80\x02"
        + G("torch._utils", "_rebuild_parameter")
        + b"N}X\x08\x00\x00\x00__name__X\x05\x00\x00\x00pwneds\x86b."
    )
    _pickle_in_zip(tmp_path / "build.pth", build)
    with pytest.raises(WeightsError):  # BUILD reaches a fresh wrapper, which refuses it
        torch_pth.read_state_dict(tmp_path / "build.pth")
    # The pickles below are well formed: the same writer's sound tensor reads.
    _pickle_in_zip(tmp_path / "good.pth", _state_dict_pickle({"w": ("T", (2,), (1,))}))
    assert torch_pth.read_state_dict(tmp_path / "good.pth")["w"].shape == (2,)
    # A tensor 2**40 x 2**40 with zero strides, and one on a storage that is a plain tuple.
    for name, structure in {
        "huge": {"w": ("T", (2**40, 2**40), (0, 0))},
        "tuple_storage": {"w": ("plain", (2,), (1,))},
    }.items():
        payload = _state_dict_pickle(structure)
        _pickle_in_zip(tmp_path / f"{name}.pth", payload)
        with pytest.raises(WeightsError):
            torch_pth.read_state_dict(tmp_path / f"{name}.pth")
    with zipfile.ZipFile(tmp_path / "bomb.pth", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x/data.pkl", _state_dict_pickle({"w": ("T", (2,), (1,))}))
        archive.writestr("x/data/0", b"\0" * ((1 << 30) + 8))
    assert (tmp_path / "bomb.pth").stat().st_size < 4 << 20
    with pytest.raises(WeightsError, match="larger than"):
        torch_pth.read_state_dict(tmp_path / "bomb.pth")
    os.mkfifo(tmp_path / "fifo.pth")
    with pytest.raises(WeightsError, match="regular"):
        torch_pth.read_state_dict(tmp_path / "fifo.pth")
    del pickle


def _state_dict_pickle(structure: dict) -> bytes:
    """A protocol-2 pickle of ``{name: tensor}``: each tensor ``(storage kind, size,
    stride)``, "T" a FloatStorage persistent id, "plain" a tuple in its place."""
    G = lambda module, name: f"c{module}\n{name}\n".encode()  # noqa: E731
    out = b"\x80\x02" + G("collections", "OrderedDict") + b")R("
    for name, (kind, size, stride) in structure.items():
        out += b"X" + len(name).to_bytes(4, "little") + name.encode()
        out += G("torch._utils", "_rebuild_tensor_v2") + b"("
        if kind == "T":
            out += b"(X\x07\x00\x00\x00storage" + G("torch", "FloatStorage")
            out += b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQ"
        else:
            out += b"X\x01\x00\x00\x000X\x01\x00\x00\x00f\x86"
        out += (
            b"K\x00"
            + _ints(size)
            + _ints(stride)
            + b"\x89"
            + G("collections", "OrderedDict")
            + b")RtR"
        )
    return out + b"u."


def _ints(values) -> bytes:
    import pickle

    return pickle.dumps(tuple(values), protocol=2)[2:-1]
