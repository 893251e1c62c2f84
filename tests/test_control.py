"""Style control: masks (guided Grams), per-style weights and scales, gradient
normalisation, iterate averaging. 64 x 96 images and chunks of 10, as the other tests."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from test_safety import FAST, assert_refused, exit_code, stylize_argv

import nst_jax
from nst_jax.core import losses, objective, vgg
from nst_jax.core import targets as targets_mod
from nst_jax.files import image
from nst_jax.run import batching, inputs
from nst_jax.session import checkpoint

from conftest import eight_bit_image, into

STEPS_PER_CALL = 10


def config(**changes):
    return nst_jax.StyleConfig(steps_per_call=STEPS_PER_CALL, **changes)


@pytest.fixture(scope="module")
def second_style() -> np.ndarray:
    """A style whose Grams differ from the texture's: a flipped, darkened photo-like image."""
    return np.ascontiguousarray(eight_bit_image(64, 96, seed=7)[::-1, ::-1] * 0.5)


@pytest.fixture(scope="module")
def halves() -> np.ndarray:
    """``(2, 64, 96)``: the left and the right half of the content."""
    left = np.zeros((64, 96), np.float32)
    left[:, :48] = 1
    return np.stack([left, 1 - left])


# --- masks -------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_all_ones_mask_is_todays_result_bit_for_bit(params, content_image, style_image):
    # guided_gram multiplies by h w / sum(m^2), exactly 1.0 for ones: no rounding anywhere.
    cfg = config(steps=20)
    plain = nst_jax.stylize(content_image, style_image, params=params, config=cfg)
    ones = np.ones((1, 64, 96), np.float32)
    masked = nst_jax.stylize(content_image, [style_image], params=params, config=cfg, masks=ones)
    np.testing.assert_array_equal(masked.losses, plain.losses)
    np.testing.assert_array_equal(np.asarray(masked.image), np.asarray(plain.image))


@pytest.mark.slow
def test_each_half_takes_its_own_style(params, content_image, style_image, second_style, halves):
    # style_weight 1 (not the tutorial's 1e-2): with random test weights the style term must
    # dominate within 50 steps. Measured: the largest own/other distance ratio is 0.24.
    cfg = config(steps=50, style_weight=1.0)
    styles = [style_image, second_style]
    result = nst_jax.stylize(content_image, styles, params=params, config=cfg, masks=halves)
    features = vgg.image_features(params, jnp.asarray(result.image), cfg.style_layers, "max")
    masks = targets_mod.layer_masks(jnp.asarray(halves), cfg.style_layers)
    targets = [targets_mod.style_targets(params, jnp.asarray(s), cfg) for s in styles]
    for layer in cfg.style_layers:
        for k in (0, 1):
            gram = losses.guided_gram(features[layer], masks[layer][k])
            own = float(jnp.mean((gram - targets[k][layer]) ** 2))
            other = float(jnp.mean((gram - targets[1 - k][layer]) ** 2))
            print(f"{layer} half {k}: own/other distance {own / other:.2f}")
            assert own < other, (layer, k, own, other)


def test_guided_gram_is_the_weighted_gram_in_float64():
    # Reference: sum_p m_p^2 F_p F_p^T / sum_p m_p^2, written out in NumPy float64.
    rng = np.random.default_rng(0)
    features, mask = rng.random((5, 7, 4)), rng.random((5, 7))
    weights = (mask**2).reshape(-1)
    flat = features.reshape(-1, 4)
    expected = (flat * weights[:, None]).T @ flat / weights.sum()
    with jax.enable_x64():
        got = losses.guided_gram(jnp.asarray(features), jnp.asarray(mask))
        np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-12)


def test_layer_masks_have_each_layers_size(params):
    # An odd-sized image: the masks must match the feature maps, whose pools drop odd rows.
    image = jnp.full((37, 53, 3), 0.5)
    layers = objective.STYLE_LAYERS
    features = vgg.image_features(params, image, layers, "max")
    masks = targets_mod.layer_masks(jnp.ones((2, 37, 53)), layers)
    for layer in layers:
        assert masks[layer].shape == (2, *features[layer].shape[:2])


@pytest.mark.slow
def test_a_batch_with_different_masks_is_one_program(
    params, content_image, style_image, second_style, halves
):
    cfg = config(steps=10, style_weight=1.0)
    step = batching.batch_step(cfg, nst_jax.make_optimizer(cfg))
    before = step._cache_size()
    flipped = halves[::-1]
    masks = np.stack([halves, flipped])  # (2 images, 2 regions, H, W)
    contents = np.stack([content_image, content_image])
    styles = [style_image, second_style]
    result = nst_jax.stylize(contents, styles, params=params, config=cfg, masks=masks)
    assert step._cache_size() == before + 1
    # Region weights are traced (in the targets): other values reuse the program.
    weighted = cfg.replace(style_weights=(1.0, 3.0), steps=1)
    nst_jax.stylize(contents, styles, params=params, config=weighted, masks=masks)
    assert step._cache_size() == before + 1
    # The two images' regions are swapped, so they stylise differently.
    assert np.abs(np.asarray(result.image[0]) - np.asarray(result.image[1])).max() > 0.01


BAD_MASKS = {
    "two_masks_one_style": (lambda h: h, 1, "2 masks for 1 styles"),
    "not_k_h_w": (lambda h: h[0], 2, "expected (K, H, W)"),
}


@pytest.mark.parametrize("case", BAD_MASKS)
def test_bad_masks_are_one_line(params, content_image, style_image, halves, case):
    make, n_styles, message = BAD_MASKS[case]
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        nst_jax.stylize(
            content_image, [style_image] * n_styles, params=params, config=config(steps=1),
            masks=make(halves),
        )  # fmt: skip


def test_masks_need_the_gram_loss(params, content_image, style_image, halves):
    with pytest.raises(ValueError, match="needs style_loss gram"):
        nst_jax.stylize(
            content_image, [style_image] * 2, params=params,
            config=config(steps=1, style_loss="mean_std"), masks=halves,
        )  # fmt: skip


# --- per-style weights and scales ------------------------------------------------------


@pytest.mark.slow
def test_a_style_weight_per_style_multiplies_its_term(params, content_image, style_image):
    # One style per image: style_weights (2, 0) double the first image's style term and
    # remove the second's; step 1's terms are of the content image itself.
    cfg = config(steps=1, style_weights=(2.0, 0.0))
    seen = []
    contents = np.stack([content_image] * 2)
    styles = [style_image, style_image[::-1]]
    nst_jax.stylize(contents, styles, params=params, config=cfg, on_event=into(seen))
    plain = []
    nst_jax.stylize(
        contents,
        styles,
        params=params,
        config=config(steps=1),
        on_event=into(plain),
    )
    style_terms, plain_terms = seen[0].terms["style"], plain[0].terms["style"]
    np.testing.assert_allclose(style_terms[0], 2 * plain_terms[0], rtol=1e-6)
    assert style_terms[1] == 0.0


def test_a_scale_per_style_resizes_each(params, content_image, style_image):
    # style_scales (0.5, None): the first style at half the content's size, the second as
    # loaded; targets differ from the unscaled run only for the first.
    cfg = config(style_scales=(0.5, None))
    batch = inputs.make_batch(
        np.stack([content_image] * 2), [style_image, style_image[::-1].copy()], cfg
    )
    assert batch.style_scales == [[0.5], [None]]
    with pytest.raises(ValueError, match="style_scales has 2 values for 1 styles"):
        inputs.make_batch(content_image, style_image, cfg)


# --- normalised gradients ----------------------------------------------------------------


@pytest.mark.slow
def test_each_layers_gradient_is_normalised(params, content_image, style_image):
    # With normalize_gradients, the gradient reaching each (term, layer)'s features has L1
    # norm equal to its coefficient (term weight x layer weight / n_layers): checked by
    # rebuilding the image's gradient from unit-L1 layer gradients through the network's VJP.
    # Layers up to block3 (fast): two style layers, one content layer shared with neither.
    style_layers = ("block1_conv1", "block3_conv1")
    n_style = len(style_layers)
    cfg = config(
        normalize_gradients=True, tv_weight=0.0, content_weight=1.0, style_weight=float(n_style),
        content_layers=("block3_conv2",), style_layers=style_layers,
    )  # fmt: skip
    x = jnp.asarray(content_image) * 0.9 + 0.05
    targets = nst_jax.make_targets(params, content_image, style_image, cfg)
    layers = objective.used_layers(cfg)
    features, network_vjp = jax.vjp(lambda im: vgg.image_features(params, im, layers, "max"), x)

    def layer_gradient(layer, term):
        def loss(f):
            if term == "content":
                return losses.content_loss({layer: f}, {layer: targets["content"][layer]})
            gram = {layer: losses.gram_matrix(f)}
            return losses.style_loss(gram, {layer: targets["style"][layer]})

        g = jax.grad(loss)(features[layer])
        unit = g / jnp.sum(jnp.abs(g))
        assert abs(float(jnp.sum(jnp.abs(unit))) - 1.0) <= 1e-5  # the unit direction
        return unit  # coefficient 1: content weight 1 / 1 layer, style weight 2 / 2 layers

    cotangent = {layer: jnp.zeros_like(f) for layer, f in features.items()}
    for layer in cfg.content_layers:
        cotangent[layer] = cotangent[layer] + layer_gradient(layer, "content")
    for layer in cfg.style_layers:
        cotangent[layer] = cotangent[layer] + layer_gradient(layer, "style")
    (expected,) = network_vjp(cotangent)
    got = jax.jit(jax.grad(lambda im: nst_jax.loss_fn(params, im, targets, cfg)[0]))(x)
    scale = float(jnp.max(jnp.abs(expected)))
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), atol=1e-5 * scale)


def test_normalize_gradient_has_unit_l1_norm():
    # The primitive itself: any gradient comes out with L1 norm = strength (1e-8 added).
    f = jnp.linspace(-1.0, 2.0, 30).reshape(5, 6)
    g = jax.grad(lambda v: jnp.sum(losses.normalize_gradient(v, 1.0) ** 3))(f)
    assert abs(float(jnp.sum(jnp.abs(g))) - 1.0) <= 1e-5
    assert float(losses.normalize_gradient(f, 3.0).sum()) == float(f.sum())  # forward: identity


# --- iterate averaging -------------------------------------------------------------------


@pytest.mark.slow
def test_decay_zero_returns_the_last_iterate_exactly(params, content_image, style_image):
    seen = []
    cfg = config(steps=20, average=0.0)
    result = nst_jax.stylize(content_image, style_image, params=params, config=cfg,
                             on_event=into(seen))  # fmt: skip
    np.testing.assert_array_equal(np.asarray(result.image), np.asarray(seen[-1].images[0]))


@pytest.mark.slow
def test_averaging_resumes_exactly_from_a_checkpoint(tmp_path, params, content_image, style_image):
    seen = []
    cfg = config(steps=20, average=0.9)
    full = nst_jax.stylize(content_image, style_image, params=params, config=cfg,
                           on_event=into(seen))  # fmt: skip
    last = np.asarray(seen[-1].images[0])
    assert np.abs(np.asarray(full.image) - last).max() > 1e-3  # an average, not the iterate
    checkpoint.save(tmp_path / "ckpt", seen[0], {"config": {}})
    saved, _ = checkpoint.load(tmp_path / "ckpt")
    resumed = nst_jax.stylize(content_image, style_image, params=params, config=cfg,
                              resume=saved)  # fmt: skip
    np.testing.assert_array_equal(np.asarray(resumed.image), np.asarray(full.image))


@pytest.mark.slow
def test_the_average_is_the_bias_corrected_ema_in_float64(params64, content_image, style_image):
    # Reference: crowsonkb's EMA written out over the iterates the run reports.
    with jax.enable_x64():
        content = jnp.asarray(content_image, jnp.float64)
        cfg = nst_jax.StyleConfig(steps=3, steps_per_call=1, average=0.5)
        seen = []
        result = nst_jax.stylize(content, style_image, params=params64, config=cfg,
                                 on_event=into(seen))  # fmt: skip
        iterates = [np.asarray(content)] + [np.asarray(s.images[0]) for s in seen]
        total, power = 0.5 * iterates[0], 0.5
        for x in iterates[1:]:
            total, power = 0.5 * total + 0.5 * x, 0.5 * power
        np.testing.assert_allclose(np.asarray(result.image), total / (1 - power), rtol=1e-12)


# --- the command line ----------------------------------------------------------------------


@pytest.fixture
def mask_files(files, second_style):
    """files' inputs plus b.png (a second style), left/right half masks drawn at half the
    content's size (they are resized), a two-colour label image and an all-black mask."""
    from PIL import Image

    from nst_jax.files import image

    Image.fromarray(image.to_uint8(second_style)).save(files / "b.png")
    left = np.zeros((32, 48), np.uint8)
    left[:, :24] = 255
    Image.fromarray(left).save(files / "left.png")
    Image.fromarray(255 - left).save(files / "right.png")
    labels = np.where(np.arange(96) < 48, 100, 200).astype(np.uint8)
    Image.fromarray(np.repeat(labels[None], 64, 0)).save(files / "labels.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(files / "black.png")
    return files


def masked_argv(files, *middle, out="out/m.png"):
    return ["stylize", str(files / "content.png"), *[str(m) for m in middle], "-o",
            str(files / out), "--weights", str(files / "w.h5"), "--steps", "2", *FAST]  # fmt: skip


@pytest.mark.slow
def test_masks_and_per_style_settings_on_the_command_line(mask_files):
    f = mask_files
    argv = masked_argv(
        f, "--mask", f / "left.png", "--style", f / "style.png", "--style-scale", "0.5",
        "--per-style-weight", "2", "--mask", f / "right.png", "--style", f / "b.png",
    )  # fmt: skip
    assert exit_code(argv) == 0
    config = image.read_provenance(f / "out/m.png")["config"]
    assert config["style_weights"] == [2.0, 1.0] and config["style_scales"] == [0.5, None]
    labels = masked_argv(
        f,
        "--mask-labels",
        f / "labels.png",
        "--style",
        f / "style.png",
        "--style",
        f / "b.png",
        "--style-mask",
        f / "left.png",
        out="out/l.png",
    )
    assert exit_code(labels) == 0 and (f / "out/l.png").is_file()
    # Masks of different sizes, each fitted to the content (a hostile probe found np.stack
    # failing on them in a single run, where a job fitted them).
    Image.open(f / "right.png").resize((96, 64)).save(f / "right_full.png")
    middle = ["--mask", f / "left.png", "--style", f / "style.png"]
    middle += ["--mask", f / "right_full.png", "--style", f / "b.png"]
    sizes = masked_argv(f, *middle, out="out/s.png")
    assert exit_code(sizes) == 0 and (f / "out/s.png").is_file()


@pytest.mark.slow
def test_a_style_loss_sweep_writes_each_result(files):
    # Two losses (each compiles its own program): the naming is the same for any number.
    argv = stylize_argv(files, "--style-loss", "gram,mean_std", out="out/losses")
    assert exit_code(argv) == 0
    written = sorted(p.name for p in (files / "out/losses").iterdir())
    losses = ("gram", "mean_std")
    assert written == [".nst-jax"] + [f"content_{loss}.png" for loss in losses]


BAD_CLI = {
    "more_masks_than_styles": (
        ["--mask", "left.png", "--mask", "right.png", "--style", "style.png"],
        ["2 mask regions for 1 --style"],
    ),  # fmt: skip
    "more_styles_than_masks": (
        ["--mask", "left.png", "--style", "style.png", "--style", "b.png"],
        ["1 mask regions for 2 --style"],
    ),  # fmt: skip
    "labels_for_fewer_styles": (
        ["--mask-labels", "labels.png", "--style", "style.png"],
        ["labels.png", "2 regions", "1 --style"],
    ),  # fmt: skip
    "mask_not_an_image": (["--mask", "w.h5", "--style", "style.png"], ["w.h5"]),
    "black_mask": (["--mask", "black.png", "--style", "style.png"], ["black.png", "no pixel"]),
    "missing_mask": (["--mask", "nope.png", "--style", "style.png"], ["nope.png"]),
    "style_mask_without_masks": (
        ["--style", "style.png", "--style-mask", "left.png"],
        ["--style-mask", "--mask"],
    ),  # fmt: skip
    "per_style_weight_first": (
        ["--per-style-weight", "2", "--style", "style.png"],
        ["--per-style-weight", "--style"],
    ),  # fmt: skip
    "mask_with_w2": (
        ["--mask", "left.png", "--style", "style.png", "--style-loss", "w2"],
        ["--mask", "gram"],
    ),  # fmt: skip
    "unknown_loss": (["--style", "style.png", "--style-loss", "gram,l1"], ["l1"]),
    "average_one": (["--style", "style.png", "--average", "1"], ["average", "[0, 1)"]),
}


@pytest.mark.parametrize("case", BAD_CLI)
def test_bad_control_inputs_are_one_line(mask_files, case, capsys):
    middle, fragments = BAD_CLI[case]
    middle = [str(mask_files / m) if m.endswith((".png", ".h5")) else m for m in middle]
    assert_refused(mask_files, masked_argv(mask_files, *middle), *fragments, capsys=capsys)
