"""The feed-forward networks against independent PyTorch implementations, in float64.

The references below are written with PyTorch's own operations (``F.conv2d``,
``F.instance_norm``, ``F.pad(mode="reflect")``, ``F.interpolate``, ``Tensor.var``), layer by
layer as the papers and their public code describe them, and take the Flax parameters
(kernels HWIO -> OIHW). Bound: 1e-10 (float64 on both sides; the sums run in different
orders, so the two agree to rounding).
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nst_jax
from nst_jax.core.layers import LAYERS
from nst_jax.feedforward import adain, johnson, objective, train

from conftest import random_params

torch = pytest.importorskip("torch")
F = torch.nn.functional

TOLERANCE = 1e-10


def as_torch(array) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array
    return torch.from_numpy(np.asarray(array, np.float64).copy())


def torch_conv(p: dict, x: torch.Tensor, stride: int = 1) -> torch.Tensor:
    kernel = as_torch(p["Conv_0"]["kernel"]).permute(3, 2, 0, 1)  # HWIO -> OIHW
    pad = kernel.shape[-1] // 2
    x = F.pad(x, [pad] * 4, mode="reflect")
    return F.conv2d(x, kernel, as_torch(p["Conv_0"]["bias"]), stride=stride)


def torch_norm(p: dict, x: torch.Tensor) -> torch.Tensor:
    return F.instance_norm(x, weight=as_torch(p["scale"]), bias=as_torch(p["bias"]), eps=1e-5)


def torch_up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


def torch_transformer(params: dict, image, blocks: int) -> torch.Tensor:
    """Johnson et al.'s network (PyTorch examples' fast_neural_style layout, with instance
    normalisation and upsample-convolutions), a sigmoid at the end."""
    p = params["params"]
    x = as_torch(image).permute(2, 0, 1)[None]
    x = F.relu(torch_norm(p["InstanceNorm_0"], torch_conv(p["ReflectConv_0"], x)))
    x = F.relu(torch_norm(p["InstanceNorm_1"], torch_conv(p["ReflectConv_1"], x, 2)))
    x = F.relu(torch_norm(p["InstanceNorm_2"], torch_conv(p["ReflectConv_2"], x, 2)))
    for k in range(blocks):
        b = p[f"ResidualBlock_{k}"]
        y = F.relu(torch_norm(b["InstanceNorm_0"], torch_conv(b["ReflectConv_0"], x)))
        x = x + torch_norm(b["InstanceNorm_1"], torch_conv(b["ReflectConv_1"], y))
    x = F.relu(torch_norm(p["InstanceNorm_3"], torch_conv(p["ReflectConv_3"], torch_up(x))))
    x = F.relu(torch_norm(p["InstanceNorm_4"], torch_conv(p["ReflectConv_4"], torch_up(x))))
    x = torch.sigmoid(torch_conv(p["ReflectConv_5"], x))
    return x[0].permute(1, 2, 0)


def torch_decoder(params: dict, features) -> torch.Tensor:
    """Huang & Belongie's decoder (their code's ``nn.Sequential``)."""
    p = params["params"]
    x = as_torch(features).permute(2, 0, 1)[None]
    ups = {1, 5, 7}  # before the 2nd, 6th and 8th convolutions
    for k in range(8):
        if k in ups:
            x = torch_up(x)
        x = F.relu(torch_conv(p[f"ReflectConv_{k}"], x))
    return torch_conv(p["ReflectConv_8"], x)[0].permute(1, 2, 0)


def torch_mean_std(f) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's code's ``calc_mean_std``: ``var(unbiased) + eps``, then the root."""
    flat = as_torch(f).reshape(-1, f.shape[-1])
    return flat.mean(0), (flat.var(0) + 1e-5).sqrt()


def torch_adain(content, style) -> torch.Tensor:
    (cm, cs), (sm, ss) = torch_mean_std(content), torch_mean_std(style)
    return (as_torch(content) - cm) / cs * ss + sm


def test_adain_and_its_blend_equal_pytorch_in_float64():
    # The decoder is compared through the training loss and its gradient (below).
    rng = np.random.default_rng(1)
    content, style, other = (rng.random((h, w, 512)) for h, w in ((3, 4), (5, 3), (4, 4)))
    with jax.enable_x64(True):
        transferred = np.asarray(adain.adain(content, style))
        mixed = np.asarray(adain.blend_targets(content, [style, other], [0.25, 0.75], alpha=0.6))
    np.testing.assert_allclose(transferred, torch_adain(content, style), rtol=0, atol=TOLERANCE)
    # The paper's interpolation (its section 7.3), written out.
    expected = (
        0.6 * (0.25 * torch_adain(content, style) + 0.75 * torch_adain(content, other))
        + 0.4 * content
    )
    np.testing.assert_allclose(mixed, expected, rtol=0, atol=TOLERANCE)


# --- Training objectives: PyTorch's own VGG19 forward on the same Keras weights -----------

BGR_MEAN = (103.939, 116.779, 123.68)
SMALL = nst_jax.StyleConfig(
    content_layers=("block2_conv2",),
    style_layers=("block1_conv1", "block2_conv1"),
)


def torch_vgg(vgg: dict, image, layers) -> dict:
    """Keras' VGG19 with caffe preprocessing, in PyTorch: ``{layer: (h, w, c)}``."""
    x = as_torch(image).flip(-1) * 255 - torch.tensor(BGR_MEAN, dtype=torch.float64)
    x = x.permute(2, 0, 1)[None]
    out, last = {}, max(LAYERS.index(name) for name in layers)
    for name in LAYERS[: last + 1]:
        if name.endswith("_pool"):
            x = F.max_pool2d(x, 2)
        else:
            kernel = as_torch(vgg[name]["kernel"]).permute(3, 2, 0, 1)
            x = F.relu(F.conv2d(x, kernel, as_torch(vgg[name]["bias"]), padding=1))
        if name in layers:
            out[name] = x[0].permute(1, 2, 0)
    return out


def torch_gram(f: torch.Tensor) -> torch.Tensor:
    flat = f.reshape(-1, f.shape[-1])
    return flat.T @ flat / flat.shape[0]


def torch_objective(vgg, x, content, style, config) -> torch.Tensor:
    """The tutorial's loss (Grams over h * w, means of squares, TV as a sum)."""
    ours = torch_vgg(vgg, x, config.style_layers + config.content_layers)
    wanted = torch_vgg(vgg, content, config.content_layers)
    styled = torch_vgg(vgg, style, config.style_layers)
    content_term = sum(((ours[n] - wanted[n]) ** 2).mean() for n in config.content_layers)
    style_term = sum(
        ((torch_gram(ours[n]) - torch_gram(styled[n])) ** 2).mean() for n in config.style_layers
    )
    tv = (x[:, 1:] - x[:, :-1]).abs().sum() + (x[1:] - x[:-1]).abs().sum()
    return (
        config.content_weight / len(config.content_layers) * content_term
        + config.style_weight / len(config.style_layers) * style_term
        + config.tv_weight * tv
    )


def torch_tree(tree) -> dict:
    """A params tree as float64 PyTorch leaves that collect gradients."""
    return jax.tree.map(lambda a: as_torch(a).clone().requires_grad_(True), jax.device_get(tree))


@pytest.mark.slow
def test_five_johnson_training_steps_equal_pytorch_in_float64(params64):
    # Adam on both sides (optax.adam and torch.optim.Adam: bias-corrected, epsilon after
    # the root). Bound: 1e-10 relative on the 5 losses and on the trained networks' outputs
    # for a new image (so the network's forward pass is compared too, on 16 x 20 px). Not
    # on every param: a convolution's bias in front of an instance normalisation has no
    # effect, so its gradient is rounding noise, which Adam normalises into steps of either
    # sign, different on each side (and irrelevant).
    rng = np.random.default_rng(3)
    contents, style = rng.random((2, 16, 20, 3)), rng.random((16, 16, 3))
    net = johnson.TransformerNet(width=4, residual_blocks=1)
    tx = optax.adam(1e-2)
    with jax.enable_x64(True):
        params = random_params(net, (16, 20, 3), seed=4)
        targets = nst_jax.make_targets(params64, jnp.asarray(contents[0]), style, SMALL)
        loss = functools.partial(objective.johnson_loss, net, config=SMALL)
        step = objective.make_train_step(loss, tx)
        state, ours = tx.init(params), []
        trained = params
        for _ in range(5):
            trained, state, value, _ = step(trained, state, params64, contents, targets)
            ours.append(float(value))
    leaves = torch_tree(params)
    flat = [leaf for leaf in jax.tree.leaves(leaves)]
    optimizer = torch.optim.Adam(flat, lr=1e-2)
    theirs = []
    for _ in range(5):
        optimizer.zero_grad()
        outputs = [torch_transformer(leaves, c, blocks=1) for c in contents]
        value = (
            sum(
                torch_objective(params64, o, c, style, SMALL)
                for o, c in zip(outputs, contents, strict=True)
            )
            / 2
        )
        value.backward()
        optimizer.step()
        theirs.append(value.item())
    np.testing.assert_allclose(ours, theirs, rtol=1e-10)
    new = rng.random((16, 20, 3))
    with jax.enable_x64(True):
        applied = np.asarray(jax.jit(net.apply)(trained, jnp.asarray(new)))
    with torch.no_grad():
        reference = torch_transformer(leaves, new, blocks=1).numpy()
    np.testing.assert_allclose(applied, reference, rtol=0, atol=1e-10)
    assert np.max(np.abs(applied - net.apply(params, new))) > 1e-3  # the steps changed it


def torch_adain_loss(params64, leaves, contents, styles) -> torch.Tensor:
    """The AdaIN paper's loss of a batch (its code's: means of squares, style weight 10)."""
    total = 0.0
    for content, style in zip(contents, styles, strict=True):
        theirs = torch_vgg(params64, style, adain.STYLE_LAYERS)
        target = torch_adain(torch_vgg(params64, content, ["block4_conv1"])["block4_conv1"],
                             theirs["block4_conv1"])  # fmt: skip
        decoded = torch_vgg(params64, torch_decoder(leaves, target), adain.STYLE_LAYERS)
        style_term = sum(
            ((torch_mean_std(decoded[n])[k] - torch_mean_std(theirs[n])[k]) ** 2).mean()
            for n in adain.STYLE_LAYERS
            for k in (0, 1)
        )
        total = total + ((decoded["block4_conv1"] - target) ** 2).mean() + 10.0 * style_term
    return total / len(contents)


@pytest.mark.slow
def test_adain_loss_gradient_and_five_training_steps_equal_pytorch_in_float64(params64):
    # The training's own optimiser (train.make_optimizer: Adam at rate / (1 + decay * step),
    # decay 0.5 so the schedule matters) against torch.optim.Adam with a LambdaLR of the
    # same schedule. Bound: 1e-10 relative on the loss and the gradient of the first step,
    # and on the 5 losses; 1e-10 on the decoded image of new features after the steps.
    rng = np.random.default_rng(5)
    contents, styles = rng.random((2, 16, 16, 3)), rng.random((2, 16, 24, 3))
    settings = train.TrainSettings("adain", learning_rate=1e-3, decay=0.5).resolved()
    tx = train.make_optimizer(settings)
    with jax.enable_x64(True):
        params = random_params(adain.Decoder(), (2, 2, 512), seed=6)
        # One compiled program (the loss and its gradient); the updates run eagerly.
        value_and_grad = jax.jit(jax.value_and_grad(objective.adain_batch_loss, has_aux=True))
        trained, state, ours, first = params, tx.init(params), [], None
        for _ in range(5):
            (loss, _), grads = value_and_grad(trained, params64, contents, styles)
            first = first or (float(loss), grads)
            updates, state = tx.update(grads, state, trained)
            trained = optax.apply_updates(trained, updates)
            ours.append(float(loss))
        value, grads = first
    leaves = torch_tree(params)
    optimizer = torch.optim.Adam(jax.tree.leaves(leaves), lr=1e-3)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 / (1 + 0.5 * s))
    theirs = []
    for index in range(5):
        optimizer.zero_grad()
        total = torch_adain_loss(params64, leaves, contents, styles)
        total.backward()
        if index == 0:
            np.testing.assert_allclose(float(value), total.item(), rtol=1e-10)
            for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(leaves), strict=True):
                scale = float(b.grad.abs().max())
                ours_grad, theirs_grad = np.asarray(a) / scale, b.grad.numpy() / scale
                np.testing.assert_allclose(ours_grad, theirs_grad, atol=1e-10)
        optimizer.step()
        schedule.step()
        theirs.append(total.item())
    np.testing.assert_allclose(ours, theirs, rtol=1e-10)
    assert ours[-1] < ours[0]  # the steps did train
    features = rng.random((2, 2, 512))
    with jax.enable_x64(True):
        applied = np.asarray(adain.Decoder().apply(trained, jnp.asarray(features)))
    with torch.no_grad():
        reference = torch_decoder(leaves, as_torch(features)).numpy()
    np.testing.assert_allclose(applied, reference, rtol=0, atol=1e-10)


@pytest.mark.slow
def test_training_data_parallel_over_four_cpu_devices_equals_one_device(weights_h5):
    # In its own process (XLA_FLAGS before JAX starts): a batch of 8 split over 4 devices,
    # the params replicated. Bound: 1e-10 relative on the 5 losses and 1e-10 on the trained
    # network's output (float64; the gradient's sum over the batch runs in another order).
    from test_batch import run_on_four_cpu_devices

    report = run_on_four_cpu_devices(Path(__file__).with_name("sharded_train.py"), weights_h5)
    print("data-parallel training:", report)
    assert (report["devices"], report["steps"]) == (4, 5)
    assert report["loss_difference"] <= 1e-10
    assert report["output_difference"] <= 1e-10
    assert report["changed"] > 1e-3  # the steps did train
