"""Scores for comparing methods: every registered term's distance, CFSD against a NumPy
reference in float64, and ``nst-jax score`` over a 20-image folder."""

from __future__ import annotations

import csv

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import nst_jax
from nst_jax import metrics
from nst_jax.core import style_terms
from nst_jax.session import score

from conftest import assert_refused, exit_code

LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1")


def numpy_cfsd(fc: np.ndarray, fr: np.ndarray) -> float:
    """StyleID's PatchSimi for one image, as their code computes it (whole matrices):
    ``kl_div(log_softmax(S_result), softmax(S_content), reduction="batchmean")``."""

    def log_softmax(s):
        s = s - s.max(-1, keepdims=True)
        return s - np.log(np.exp(s).sum(-1, keepdims=True))

    fc, fr = (f.reshape(-1, f.shape[-1]) / f.shape[-1] for f in (fc, fr))
    log_p, log_q = log_softmax(fc @ fc.T), log_softmax(fr @ fr.T)
    return float(np.sum(np.exp(log_p) * (log_p - log_q)))


def test_cfsd_equals_the_whole_matrix_reference_in_float64(params64):
    # 1e-10 relative: the same float64 features; blocks of 7 rows (not a divisor of the 48
    # positions) only reorder the sums.
    rng = np.random.default_rng(3)
    content, result = rng.random((24, 32, 3)), rng.random((24, 32, 3))
    with jax.enable_x64(True):
        features = [
            np.asarray(nst_jax.vgg19_features(params64, jnp.asarray(x), ("block3_conv1",))[
                "block3_conv1"])
            for x in (content, result)
        ]  # fmt: skip
        expected = numpy_cfsd(*features)
        for rows in (7, 48, 1000):
            found = float(metrics.cfsd(params64, content, result, rows=rows))
            assert abs(found - expected) <= 1e-10 * abs(expected), (rows, found, expected)
        assert float(metrics.cfsd(params64, content, content)) == 0.0
    assert expected > 0
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="rows"):
            metrics.cfsd(params64, content, result, rows=bad)
    with pytest.raises(ValueError, match="one size"):
        metrics.cfsd(params64, content, result[:20])


@pytest.mark.slow
def test_style_distances_cover_every_registered_term(params64):
    """Each term's distance is its own loss on one layer at weight 1; an image against itself
    is 0 for every term (float64; W2 up to its square root's rounding)."""
    rng = np.random.default_rng(4)
    a, b = rng.random((16, 20, 3)), rng.random((12, 12, 3))
    layers = ("block1_conv1", "block3_conv1")  # block3 of b is 3x3: mrf's 3x3 patches fit
    with jax.enable_x64(True):
        found = metrics.style_distances(params64, a, b, layers)
        same = metrics.style_distances(params64, a, a, layers)
        fa, fb = (nst_jax.vgg19_features(params64, jnp.asarray(x), layers) for x in (a, b))
    assert set(found) == set(style_terms.names())
    for name in found:
        term = style_terms.style_term(name)
        for i, layer in enumerate(layers):
            value = float(found[name][layer])
            if min(fa[layer].shape[:2] + fb[layer].shape[:2]) < term.min_side:
                assert np.isnan(value), (name, layer)
                continue
            keys = {"key": jax.random.fold_in(jax.random.key(0), i)} if term.random else {}
            with jax.enable_x64(True):
                own = term.loss({layer: term.statistic(fa[layer])},
                                {layer: term.target(fb[layer])}, 1.0, None, **keys)  # fmt: skip
            assert value == pytest.approx(float(own), rel=1e-12), (name, layer)
            assert value > 0, (name, layer)
            assert abs(float(same[name][layer])) <= 1e-9 * value, (name, layer)


def write_folders(root, count: int, size=(40, 48)) -> None:
    rng = np.random.default_rng(5)
    for kind in ("contents", "styles", "results"):
        (root / kind).mkdir()
        for i in range(count):
            pixels = (rng.random((*size, 3)) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / kind / f"{i:02d}.png")


@pytest.mark.slow
def test_score_on_an_image_folder(tmp_path, weights_h5, capsys):
    """Acceptance 4: CFSD, the content distance and every term's distance per result; the
    summary printed is the CSV's column means. (8 images here for the suite's time: each
    row is its own pass, so 8 rows check what 20 did.)"""
    write_folders(tmp_path, 8)
    out = tmp_path / "scores.csv"
    # Every term, mrf too (not a default: its memory grows with the square of the pixels).
    argv = ["score", tmp_path / "contents", tmp_path / "styles", tmp_path / "results",
            "-o", out, "--weights", weights_h5, "--max-dim", "32", "-q",
            "--terms", ",".join(style_terms.names())]  # fmt: skip
    assert exit_code(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8
    assert [r["result"].rsplit("/", 1)[1] for r in rows] == [f"{i:02d}.png" for i in range(8)]
    assert all(r["content"].endswith(r["result"].rsplit("/", 1)[1]) for r in rows)
    columns = ["cfsd", "content_distance"] + [f"style_{n}" for n in style_terms.names()]
    assert list(rows[0])[3:] == columns
    means = dict(line.split() for line in printed[1:])
    for column in columns:
        values = np.array([float(r[column]) for r in rows])
        assert float(means[column]) == pytest.approx(np.mean(values), rel=1e-5, nan_ok=True)
    assert all(float(r["cfsd"]) > 0 for r in rows)
    # Again without --force: the CSV is not replaced.
    assert_refused(tmp_path, argv, "scores.csv", capsys=capsys)


def test_score_refuses_unpaired_folders_and_odd_outputs(tmp_path, weights_h5, capsys):
    write_folders(tmp_path, 3)
    (tmp_path / "results" / "02.png").unlink()
    folders = [tmp_path / k for k in ("contents", "styles", "results")]
    base = ["score", *folders, "--weights", weights_h5, "-q"]
    assert_refused(tmp_path, [*base, "-o", tmp_path / "s.csv"], "2 results for 3", capsys=capsys)
    (tmp_path / "results" / "02.png").write_bytes((tmp_path / "results" / "01.png").read_bytes())
    (tmp_path / "styles" / "02.png").unlink()
    assert_refused(tmp_path, [*base, "-o", tmp_path / "s.csv"], "2 styles for 3", capsys=capsys)
    (tmp_path / "styles" / "00.png").unlink()
    (tmp_path / "styles" / "01.png").unlink()
    (tmp_path / "styles" / "x.png").write_bytes((tmp_path / "results" / "01.png").read_bytes())
    into_input = [*base, "-o", tmp_path / "contents" / "00.png", "--force"]
    assert_refused(tmp_path, into_input, "00.png", capsys=capsys)
    assert_refused(tmp_path, [*base, "--terms", "nope"], "nope", capsys=capsys)
    assert_refused(tmp_path, [*base, "--extractor", "alexnet"], "alexnet", capsys=capsys)
    # A result that is a link to nothing is named, not passed over: with an extra file the
    # counts would match and the pairing by names would shift (a hostile probe).
    (tmp_path / "results" / "01.png").unlink()
    (tmp_path / "results" / "01.png").symlink_to(tmp_path / "gone.png")
    (tmp_path / "results" / "03.png").write_bytes((tmp_path / "results" / "00.png").read_bytes())
    (tmp_path / "contents" / "03.png").write_bytes((tmp_path / "contents" / "00.png").read_bytes())
    assert_refused(tmp_path, [*base, "-o", tmp_path / "s.csv"], "01.png: a link to nothing",
                   capsys=capsys)  # fmt: skip


def test_score_library_arguments(params):
    with pytest.raises(ValueError):
        score.score_folders({"nope": {}}, "a", "b", "c")
    with pytest.raises(ValueError, match="unknown style_loss"):
        score.score_folders(params, "a", "b", "c", terms=("nope",))
    assert score.summary([]) == {}
    assert score.csv_text([]) == ""


def test_probed_score_cases(tmp_path, weights_h5, params, capsys):
    """Cases of a hostile probe: an image scaled past the pixel limit is one line; CFSD of
    images with no position left at relu3_1 is nan, as style distances of small layers are;
    mrf is not a default term (its memory grows with the square of the positions)."""
    write_folders(tmp_path, 1)
    folders = [tmp_path / k for k in ("contents", "styles", "results")]
    argv = ["score", *folders, "--weights", weights_h5, "-o", tmp_path / "s.csv", "-q"]
    assert_refused(tmp_path, [*argv, "--max-dim", "100000000"], "limit", capsys=capsys)
    assert_refused(tmp_path, [*argv, "-o", ""], "-o", capsys=capsys)
    tiny = np.random.default_rng(8).random((3, 3, 3)).astype(np.float32)
    with pytest.raises(metrics.ImageTooSmallError, match="content is 3x3"):
        metrics.cfsd(params, tiny, tiny)
    assert "mrf" not in score.default_terms() and "gram" in score.default_terms()
    with pytest.raises(ValueError, match="layers"):
        metrics.style_distances(params, tiny, tiny, layers="block1_conv1")
    with pytest.raises(ValueError, match="layers"):
        metrics.content_distance(params, tiny, tiny, layers=[])
