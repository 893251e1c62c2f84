"""The library checks its arguments where they enter: a wrong type, shape, dtype, range or
order is one ``TypeError`` or ``ValueError`` naming the argument, never a failure deep in
JAX or Flax, a bare ``ZeroDivisionError``, nor a meaningless number."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import nst_jax
from nst_jax import dataset, metrics
from nst_jax.core.targets import check_image, stack_trees
from nst_jax.errors import InputError
from nst_jax.feedforward import model as models
from nst_jax.feedforward import train

from conftest import eight_bit_image


@pytest.mark.parametrize(
    "changes, named",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"styles_per_image": 1.5}, "styles_per_image"),
        ({"max_dim": 0}, "max_dim"),
        ({"fit": "stretch"}, "fit"),
        ({"buckets": "weird"}, "buckets"),
        ({"ext": "png"}, "ext"),
        ({"size": (32,)}, "size"),
        ({"buckets": "fixed"}, "size"),
    ],
)
def test_job_settings_name_what_is_wrong(changes, named):
    with pytest.raises(ValueError, match=named):
        dataset.JobSettings(**changes)


def test_plan_job_takes_a_path_or_paths_and_refuses_anything_else(files, tmp_path):
    config = nst_jax.StyleConfig()
    plan = dataset.plan_job(str(files / "content.png"), files / "style.png", tmp_path, config)
    assert len(plan.items) == 1  # one path, not its characters
    for bad, named in (
        ({"inputs": 3}, "inputs"),
        ({"styles": [None]}, "styles"),
        ({"out": None}, "out"),
        ({"config": {"steps": 1}}, "config"),
        ({"job": {"batch_size": 1}}, "job"),
    ):
        arguments = {"inputs": [files / "content.png"], "styles": [files / "style.png"],
                     "out": tmp_path, "config": config, **bad}  # fmt: skip
        with pytest.raises(TypeError, match=named):
            dataset.plan_job(**arguments)


def test_run_job_checks_its_shard_and_that_the_job_was_started(files, tmp_path, params):
    config = nst_jax.StyleConfig()
    plan = dataset.plan_job(files / "content.png", files / "style.png", tmp_path / "o", config)
    resources = dataset.Resources(params, config)
    with pytest.raises(InputError, match="start the job first"):
        next(dataset.run_job(plan, resources))
    dataset.start(plan)
    for shard, kind in (((0, 0), ValueError), ((2, 1), ValueError), ((-1, 2), ValueError),
                        ((0, 1.0), TypeError), ("0/1", TypeError)):  # fmt: skip
        with pytest.raises(kind, match="shard"):
            next(dataset.run_job(plan, resources, shard))
    with pytest.raises(TypeError, match="resources"):
        next(dataset.run_job(plan, params))


@pytest.fixture(scope="module")
def tiny_johnson(tmp_path_factory):
    settings = train.TrainSettings("johnson", steps=1, batch_size=1, size=16, width=4,
                                   residual_blocks=1).resolved()  # fmt: skip
    folder = tmp_path_factory.mktemp("model")
    models.save_model(folder, settings, train.init_params(settings), {})
    return models.load_model(folder)


def test_apply_model_names_its_bad_arguments(tiny_johnson, params):
    image = eight_bit_image(16, 16, seed=1)
    out = models.apply_model(tiny_johnson, image[None])
    assert out.shape == (1, 16, 16, 3)
    for contents, named in (
        (image, "add the batch axis"),
        ((image * 255).astype(np.uint8)[None], "floating-point"),
        (np.concatenate([image, image[..., :1]], -1)[None], "3 channels"),
    ):
        with pytest.raises(ValueError, match=named):
            models.apply_model(tiny_johnson, contents)
    with pytest.raises(TypeError, match="model must be a loaded Model"):
        models.apply_model({"params": 1}, image[None])
    with pytest.raises(TypeError, match="folder must be"):
        models.load_model(None)


def test_adain_apply_checks_its_encoder_styles_weights_and_alpha(params, tmp_path):
    settings = train.TrainSettings("adain", steps=1, batch_size=1, size=16).resolved()
    models.save_model(tmp_path, settings, train.init_params(settings), {})
    adain = models.load_model(tmp_path)
    content = eight_bit_image(16, 16, seed=2)[None]
    style = eight_bit_image(16, 16, seed=3)
    cases = (
        ({"vgg_params": None, "styles": [style]}, "vgg_params"),
        ({"vgg_params": params, "styles": []}, "at least one style"),
        ({"vgg_params": params, "styles": [style], "weights": (0.5, 0.5)}, "weights"),
        ({"vgg_params": params, "styles": [style], "alpha": 2.0}, "alpha"),
        ({"vgg_params": params, "styles": [style * 255]}, "styles\\[0\\]"),
    )
    for arguments, named in cases:
        with pytest.raises(ValueError, match=named):
            models.apply_model(adain, content, **arguments)


def test_a_model_request_s_alpha_is_checked_as_apply_model_checks_it():
    """One rule (feedforward.model.check_alpha): the request is refused before the model is
    loaded, as apply_model would refuse it after (True is no number here)."""
    from nst_jax.session import models as model_requests

    record = {"method": "adain"}
    for bad in (True, 2, -0.5, "1", float("nan")):
        with pytest.raises(InputError, match="alpha must be a number from 0 to 1"):
            model_requests.check_model_inputs("m", record, ["s.png"], bad, (), None, False)
        with pytest.raises(ValueError, match="alpha must be a number from 0 to 1"):
            models.check_alpha(bad)
    model_requests.check_model_inputs("m", record, ["s.png"], 0.5, (), None, False)


def test_train_settings_are_checked_when_made_and_fit_resolves_them():
    with pytest.raises(ValueError, match="learning_rate"):
        train.TrainSettings("johnson", learning_rate=float("nan"))
    with pytest.raises(ValueError, match="method"):
        train.TrainSettings("neither")
    for seed in (-1, 2**63, 1.0, True):  # NumPy's generators take no negative seed
        with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*63\)"):
            train.TrainSettings("johnson", seed=seed)
    settings = train.TrainSettings("johnson", steps=1, batch_size=1, size=16, width=4)
    assert train.check_fit(settings, nst_jax.ObjectiveConfig()).learning_rate == 1e-3


def test_metrics_refuse_what_would_give_a_meaningless_number(params):
    a, b = eight_bit_image(32, 32, seed=1), eight_bit_image(16, 16, seed=2)
    with pytest.raises(ValueError, match="one size"):
        metrics.content_distance(params, a, b)
    with pytest.raises(ValueError, match="floating-point"):
        metrics.content_distance(params, (a * 255).astype(np.uint8), a)
    with pytest.raises(ValueError, match="non-finite"):
        metrics.content_distance(params, np.full_like(a, np.nan), a)
    pytest.importorskip("dm_pix")
    with pytest.raises(ValueError, match="at least 11 px"):
        metrics.ssim(a[:4, :4], a[:4, :4])
    assert float(metrics.ssim(a, a)) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("host", [True, False], ids=["numpy", "jax"])
def test_an_image_is_checked_alike_on_the_host_and_on_the_device(host):
    # check_image reads a NumPy array's values by NumPy and a device array's in one
    # compiled program: the same refusals either way, each naming the argument.
    as_given = (lambda a: a) if host else jnp.asarray
    good = eight_bit_image(8, 6, seed=0)
    assert check_image(as_given(good), "content").shape == (8, 6, 3)
    cases = [
        (np.where(np.arange(144).reshape(8, 6, 3) == 7, np.nan, good), "content: has non-finite"),
        (good * 255, "content: values must lie in .* \\(0-255 values\\? divide by 255\\)"),
        (good - 0.5, "content: values must lie in \\[0, 1\\]"),
    ]
    for image, message in cases:
        with pytest.raises(ValueError, match=message):
            check_image(as_given(image.astype(np.float32)), "content")
    style = np.full((8, 6, 3), 1.5, np.float32)  # a style may leave [0, 1] up to STYLE_RANGE
    assert check_image(as_given(style), "style").shape == (8, 6, 3)
    with pytest.raises(ValueError, match="style: values must lie"):
        check_image(as_given(style + 1.0), "style")


def test_stack_trees_stacks_rows_and_broadcasts_one_given_for_all():
    rows = [{"a": np.full((2, 3), k, np.float32), "b": (np.arange(4.0) + k,)} for k in range(3)]
    stacked = stack_trees(rows)
    np.testing.assert_array_equal(stacked["a"], np.stack([r["a"] for r in rows]))
    np.testing.assert_array_equal(stacked["b"][0], np.stack([r["b"][0] for r in rows]))
    shared = stack_trees([rows[1]] * 4)  # one style for a batch of 4: broadcast, same values
    np.testing.assert_array_equal(shared["a"], np.stack([rows[1]["a"]] * 4))
    assert shared["b"][0].shape == (4, 4)
    with pytest.raises(ValueError, match="stack_trees: no pytrees"):
        stack_trees([])
    with pytest.raises(TypeError, match="stack_trees: trees must be a list or tuple, got dict"):
        stack_trees(rows[0])


def test_a_count_argument_takes_numpy_integers_and_a_config_setting_does_not():
    # core.fields: as_count for function arguments (cfsd's rows, score_folders' max_dim, the
    # ONNX export's batch); check_count for settings, which a JSON record stores as ints.
    from nst_jax.core.fields import as_count

    assert as_count("rows", np.int64(5)) == 5 and type(as_count("rows", np.int64(5))) is int
    assert as_count("batch", None, optional=True) is None
    for bad in (0, -1, True, np.bool_(True), 2.0, 2**31, "3"):
        with pytest.raises(ValueError, match="rows must be"):
            as_count("rows", bad)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        nst_jax.StyleConfig(steps=np.int64(5))


@pytest.mark.parametrize(
    "changes, named",
    [
        # A string where a flag goes was read as its truth value ("no" turned it on).
        ({"normalize_gradients": "no"}, "normalize_gradients must be True or False, got 'no'"),
        ({"remat": 1}, "remat must be True or False, got 1"),
        # A string where numbers go was split into its characters ("12": 1.0 and 2.0).
        ({"style_layer_weights": "12"}, "style_layer_weights must be a number or numbers"),
        ({"content_weight": "3"}, "content_weight must be a number or numbers, got '3'"),
        # An empty sweep was accepted, then an IndexError at the run's start.
        ({"tv_weight": []}, "tv_weight: an empty list"),
        ({"learning_rate": ()}, "learning_rate: an empty list"),
        ({"style_layers": 5}, "style_layers must be layer names, got 5"),
    ],
)
def test_style_config_names_a_wrong_type_or_an_empty_sweep(changes, named):
    """Found by a hostile probe: each was accepted (or a TypeError naming no setting)."""
    with pytest.raises(ValueError) as caught:
        nst_jax.StyleConfig(**changes)
    assert str(caught.value).startswith(named), caught.value
    assert nst_jax.StyleConfig(normalize_gradients=np.bool_(True)).normalize_gradients


def test_the_research_core_names_a_wrong_config_optimizer_or_loss_when_called(params):
    """Found by a hostile probe: a wrong config was an AttributeError naming no argument;
    make_step took any tx, loss or donate and failed at the step's first call; a blend's
    style count and a style mask per style were zip() errors."""
    content = np.full((16, 16, 3), 0.5, np.float32)
    cfg = nst_jax.StyleConfig(content_layers=("block1_conv2",), style_layers=("block1_conv1",))
    tx = nst_jax.make_optimizer(cfg)
    refused = [
        (lambda: nst_jax.make_targets(params, content, content, None), "config must be an Obj"),
        (lambda: nst_jax.make_optimizer({}), "config must be an OptimizerConfig"),
        (lambda: nst_jax.make_step(None, tx), "config must be an ObjectiveConfig"),
        (lambda: nst_jax.loss_fn(params, content, {}, "gram"), "config must be an Objective"),
        (lambda: nst_jax.make_step(cfg, "adam"), "tx must be an optax GradientTransformation"),
        (lambda: nst_jax.make_step(cfg, tx, loss=3), "loss must be a function"),
        (lambda: nst_jax.make_step(cfg, tx, donate="yes"), "donate must be True or False"),
        (lambda: nst_jax.make_targets(params, content, content, cfg.replace(style_blend=(1, 1))),
         "style: give the styles as a list"),
    ]  # fmt: skip
    for call, message in refused:
        with pytest.raises(TypeError, match=message):
            call()
    three = [content] * 3
    with pytest.raises(ValueError, match="style_blend has 2 weights for 3 style images"):
        nst_jax.make_targets(params, content, three, cfg.replace(style_blend=(1, 1)))
    masks = np.ones((2, 16, 16), np.float32)
    with pytest.raises(ValueError, match="style_masks has 1 entries for 2 styles"):
        nst_jax.make_targets(params, content, three[:2], cfg, masks=masks, style_masks=[None])
    stacked = np.stack(three[:2])  # K styles as one array stay accepted
    nst_jax.make_targets(params, content, stacked, cfg.replace(style_blend=(1, 1)))


def test_masks_and_the_optimised_image_are_checked_as_images_are(params):
    """Found by a hostile probe: masks of NaN or 0-255 values became targets silently, and
    loss_fn took a uint8 or complex image (a huge or complex loss)."""
    content = np.full((16, 16, 3), 0.5, np.float32)
    cfg = nst_jax.StyleConfig(content_layers=("block1_conv2",), style_layers=("block1_conv1",))
    styles = [content, content]
    nan = np.ones((2, 16, 16), np.float32)
    nan[1, 3, 4] = np.nan
    for masks, message in [
        (nan, "masks: has non-finite values"),
        (np.full((2, 16, 16), 255, np.uint8), r"masks: values must lie in \[0, 1\], got 255"),
        (-np.ones((2, 16, 16), np.float32), r"masks: values must lie in \[0, 1\], got -1"),
    ]:
        with pytest.raises(ValueError, match=message):
            nst_jax.make_targets(params, content, styles, cfg, masks=masks)
    halves = np.ones((2, 16, 16), np.float32)
    with pytest.raises(ValueError, match="style_masks: has non-finite values"):
        nst_jax.make_targets(params, content, styles, cfg, masks=halves, style_masks=[None, nan[1]])
    with pytest.raises(ValueError, match="content: float16 overflows in VGG's features"):
        nst_jax.make_targets(params, content.astype(np.float16), content, cfg)  # diverged at step 1
    targets = nst_jax.make_targets(params, content, content, cfg)
    for image in (np.full((16, 16, 3), 128, np.uint8), content.astype(np.complex64)):
        with pytest.raises(TypeError, match="x must be a floating-point RGB image"):
            nst_jax.loss_fn(params, image, targets, cfg)
