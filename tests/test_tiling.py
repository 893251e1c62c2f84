"""Exact tiled loss and gradient (nst_jax.tiling) against the untiled ones.

Small images keep the suite fast: 96 x 240 px with 128 px tiles is one row of two tiles, the
second partial, whose windows reach 86 px past their tile and are cut at every border, which
is what makes tiling exact or not (each window is a compile, so two rather than four; rows
and columns are the same code). The Adam steps use layers up to block3 (a 14 px halo) and
32 px tiles on a 70 x 90 image: a 3 x 3 grid, tiled both ways, in a fraction of the time.
scripts/check_tiling.py runs the comparison at 517 x 771 and 512 x 512 with 128 and 256 px
tiles, and 20 Adam steps (figures in scripts/README.md).

Bounds: in float64 the tiled sums differ from the untiled ones by summation order only
(~1e-15 relative); we assert 1e-10 for the loss and 1e-9 for the gradient (max abs over max
abs), the acceptance bounds. In float32, 1e-5 for both: the loss is a sum over ~1e5 products
per Gram entry, rounded differently when split over tiles (measured below 1e-6).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nst_jax
from nst_jax.core import geometry
from nst_jax.core.extractors import FeatureSpec
from nst_jax.run import tiling

from conftest import eight_bit_image, texture_image

SHAPE = (96, 240)
TILE = 128


def relative(a, b) -> float:
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


@pytest.fixture(scope="module")
def images():
    content = eight_bit_image(*SHAPE, seed=1)
    noise = np.random.default_rng(0).uniform(-0.1, 0.1, content.shape)
    return content, texture_image(96, 128), np.clip(content + noise, 0, 1)


def test_receptive_field_and_halo_come_from_the_network():
    # block1_conv1: one 3x3 conv reaches 1 px each way. block5_conv2, counted by hand from
    # VGG19's 2-2-4-4 convs and 4 pools: 86 px before, 101 after, stride 16.
    assert geometry.receptive_span("block1_conv1") == (1, 1, 1)
    assert geometry.receptive_span("block5_conv2") == (86, 101, 16)
    # The halo of a tile on the 16 px grid, walking back from block5_conv2 (a conv adds one
    # position of its map, a pool doubles): (((2 * 2 + 4) * 2 + 4) * 2 + 2) * 2 + 2 = 86.
    assert geometry.halo(nst_jax.StyleConfig().content_layers) == 86
    assert geometry.tile_alignment(nst_jax.STYLE_LAYERS) == 16


def test_each_layers_map_is_cut_to_what_deeper_layers_need():
    # Positions 32..63 of block5_conv2 in a 2048 px image: the walk above, layer by layer.
    (start, end), spans = geometry.needed_spans({"block5_conv2": (32, 64)}, 2048)
    assert (start, end) == (512 - 86, 1024 + 86)
    assert spans["block5_conv1"] == (31, 65) and spans["block4_pool"] == (30, 66)
    assert spans["block4_conv4"] == (60, 132) and spans["block1_conv1"] == (427, 1109)
    # At the image's borders nothing is needed past them (the zero padding is the image's).
    assert geometry.needed_spans({"block5_conv2": (0, 32)}, 2048)[0] == (0, 512 + 86)
    assert geometry.needed_spans({"block5_conv2": (96, 127)}, 2040)[0] == (1536 - 86, 2040)


@pytest.mark.slow
def test_tiled_equals_untiled_in_float64(params, images):
    # The tutorial's layers; block4_conv2 content too in scripts/check_tiling.py.
    config = nst_jax.StyleConfig()
    with jax.enable_x64():
        params64 = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), params)
        content, style, x = (jnp.asarray(a, jnp.float64) for a in images)
        targets = nst_jax.make_targets(params64, content, style, config)
        # Jitted: eagerly, each of the network's operations would be compiled on its own.
        value_and_grad = jax.jit(
            jax.value_and_grad(nst_jax.loss_fn, 1, has_aux=True), static_argnums=3
        )
        (loss, terms), grad = value_and_grad(params64, x, targets, config)
        (tiled_loss, tiled_terms), tiled_grad = tiling.tiled_value_and_grad(
            params64, x, targets, config, TILE
        )
        assert abs(float(tiled_loss - loss)) <= 1e-10 * abs(float(loss))
        for term in terms:
            assert abs(float(tiled_terms[term] - terms[term])) <= 1e-10 * abs(float(loss))
        assert relative(tiled_grad, grad) <= 1e-9


@pytest.mark.slow
def test_tiled_features_and_grams_equal_untiled_in_float32(params, images):
    config = nst_jax.StyleConfig()
    content, _, x = (jnp.asarray(a) for a in images)
    whole = nst_jax.vgg19_features(params, content, config.content_layers)
    tiled = tiling.tiled_features(params, content, config.content_layers, FeatureSpec(), TILE)
    for layer in config.content_layers:
        assert relative(tiled[layer], whole[layer]) <= 1e-5
    grams = tiling.tiled_grams(params, x, config.style_layers, FeatureSpec(), TILE)
    features = nst_jax.vgg19_features(params, x, config.style_layers)
    for layer in config.style_layers:
        assert relative(grams[layer], nst_jax.losses.gram_matrix(features[layer])) <= 1e-5


@pytest.mark.slow
def test_tiled_adam_steps_equal_untiled_in_float64(params):
    # 3 steps here (20 in scripts/check_tiling.py): the image after each step is the same.
    config = nst_jax.StyleConfig(
        content_layers=("block3_conv2",),
        style_layers=("block1_conv1", "block2_conv1", "block3_conv1"),
    )
    assert geometry.halo(config.content_layers + config.style_layers) == 14  # ((2*2+2)*2+2)
    with jax.enable_x64():
        params64 = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), params)
        content = jnp.asarray(eight_bit_image(70, 90, seed=2), jnp.float64)
        style = jnp.asarray(texture_image(40, 60), jnp.float64)
        targets = nst_jax.make_targets(params64, content, style, config)
        tx = nst_jax.make_optimizer(config)
        step = nst_jax.make_step(config, tx)
        tiled = tiling.tiled_step(config, tx, 32)
        x, state = content, tx.init(content)
        y, tiled_state = jnp.array(content), tx.init(content)  # the tiled step donates y
        for _ in range(3):
            x, state, _, _ = step(params64, targets, x, state)
            y, tiled_state, _, _ = tiled(params64, targets, y, tiled_state)
        assert float(jnp.max(jnp.abs(x - y))) <= 1e-9


@pytest.mark.slow
def test_a_tiled_run_holds_each_whole_image_array_once(params):
    # At print sizes each whole-image float32 array is gigabytes (805 MB at 8192 px). Counted
    # during pass 2 of step 2, with a hook that keeps the last state (as the command's
    # checkpointing hook does): the content, the hook's copies of the image and Adam's two
    # moments, and the step's image, moments and gradient: 8 (14 when the batched arrays
    # and the scale's first ones stayed alive beside the per-image ones).
    config = nst_jax.StyleConfig(
        content_layers=("block3_conv2",),
        style_layers=("block1_conv1", "block2_conv1", "block3_conv1"),
        steps=2, steps_per_call=1, tile=32,
    )  # fmt: skip
    content = eight_bit_image(32, 60, seed=2)  # two windows: two compiles a pass
    last, counts = {}, []

    def count_whole_images(done, total):
        shapes = [a.shape for a in jax.live_arrays()]
        counts.append((len(last), sum(s[-3:] == content.shape for s in shapes)))

    nst_jax.stylize(content, texture_image(40, 60), params=params, config=config,
                    on_event=lambda e: last.update(state=e.state),
                    on_tile=count_whole_images)  # fmt: skip
    assert max(n for kept, n in counts if kept) == 8
    # The hook's state outlives the chunks that followed it.
    assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(last["state"][1:3]))


@pytest.mark.parametrize(
    "tile, message", [(120, "multiple of 16"), (80, "smaller than the 86 px halo")]
)
def test_bad_tiles_are_refused(tile, message):
    with pytest.raises(ValueError, match=message):
        geometry.check_tile(tile, nst_jax.StyleConfig().content_layers)


@pytest.mark.slow
def test_the_command_line_runs_tiled_and_refuses_bad_tiles(files, capsys):
    # Layers up to block3 (a 14 px halo on a 4 px grid), so the 64 x 96 test content is a
    # 2 x 3 grid of 32 px tiles and the run takes seconds.
    from nst_jax.cli import main as cli
    from nst_jax.files import image

    argv = ["stylize", str(files / "content.png"), "--style", str(files / "style.png"),
            "--weights", str(files / "w.h5"), "--steps", "1", "--steps-per-call", "1", "-q",
            "--compile-cache", "off", "--max-dim", "96", "--content-layers", "block3_conv2",
            "--style-layers", "block1_conv1,block2_conv1,block3_conv1"]  # fmt: skip
    assert cli.main([*argv, "-o", str(files / "out/t.png"), "--tile", "32"]) == 0
    assert "runs in 32 px tiles" in capsys.readouterr().err
    assert image.read_provenance(files / "out/t.png")["config"]["tile"] == 32
    for tile, message in (("30", "multiple of 4"), ("12", "14 px halo")):
        assert cli.main([*argv, "-o", str(files / "out/bad.png"), "--tile", tile]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert not (files / "out/bad.png").exists()


@pytest.mark.slow
def test_auto_tiles_only_the_scales_that_do_not_fit(files, monkeypatch, capsys):
    # Memory is simulated: the 96 px scale "needs" 100 GiB untiled, the 68 px one 1 GiB, and
    # 10 GiB are available. Coarse-to-fine then runs the coarse scale untiled and only the
    # last one in tiles (48 px: the only candidate offered, a 2 x 2 grid).
    from nst_jax.cli import main as cli
    from nst_jax.run import memory, tile_memory

    monkeypatch.setattr(memory, "available_bytes", lambda device=None: 10 * memory.GIB)
    monkeypatch.setattr(
        memory, "estimate_bytes", lambda c, n, h, w: (100 if max(h, w) > 80 else 1) * memory.GIB
    )
    monkeypatch.setattr(tile_memory, "tiled_bytes", lambda *args: memory.GIB)
    monkeypatch.setattr(tile_memory, "TILE_CANDIDATES", (48,))
    chosen, scale_tile = [], tile_memory.scale_tile

    def spy(config, n, height, width):
        chosen.append((max(height, width), scale_tile(config, n, height, width)))
        return chosen[-1][1]

    monkeypatch.setattr(tile_memory, "scale_tile", spy)
    argv = ["stylize", str(files / "content.png"), "--style", str(files / "style.png"),
            "--weights", str(files / "w.h5"), "--steps", "1", "--coarse-steps", "1",
            "--scales", "2", "--steps-per-call", "1", "-q", "--compile-cache", "off",
            "--max-dim", "96", "--content-layers", "block3_conv2",
            "--style-layers", "block1_conv1,block2_conv1,block3_conv1",
            "-o", str(files / "out/auto.png")]  # fmt: skip
    assert cli.main(argv) == 0
    assert "runs in 48 px tiles" in capsys.readouterr().err
    assert chosen == [(68, None), (96, 48)]  # 96 / sqrt(2), rounded
