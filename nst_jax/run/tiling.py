"""Exact tiled loss and gradient: one large image through VGG19 a tile at a time.

At print sizes the untiled step does not fit in memory: block 1's full-resolution
activations alone are 64 channels x 4 bytes x 2 (forward and backward) per pixel. Tiling is
*exact* for this loss, not an approximation:

- **Features are local.** A feature depends on the input pixels of its receptive field only.
  A tile computed inside a *window* that reaches that far past it (the halo, 86 px for
  ``block5_conv2``) has, inside the tile, the whole image's features.
  :func:`nst_jax.core.geometry.needed_spans` walks the network back from the deepest layer
  used, so the halo is computed from the layers, not hard-coded, and every layer's map is cut
  to what the deeper layers still need: the halo shrinks with depth (block 4 computes 8
  positions past the tile, not 86 / 8), so the windows' extra work is small
  (scripts/README.md, "Print sizes: tiles and rows"). Tiles are multiples
  of ``2 ** pools`` (16 for the tutorial's layers), so every layer's part of a tile starts on
  that layer's grid and the poolings see the same 2x2 windows as the whole image's. At the
  image's true borders windows are cut where the image ends, so the zero padding is where it
  is untiled.
- **Content is a sum over positions**, so its value and gradient split over tiles. Total
  variation is cheap and element-wise: it is computed on the whole image.
- **A Gram matrix is a sum over positions too, but the style loss is quadratic in it.** So
  pass 1 sums each style layer's Gram over the tiles' interiors (forward only). Then
  ``dL/dG`` is a constant (``2 w (G - A) / c^2`` per layer, in the tutorial's
  normalisation), and pass 2 back-propagates, tile by tile, ``<dL/dG, G_tile>`` plus the
  tile's content term, adding each window's input gradient into one whole-image gradient.

The sum is the untiled gradient up to float rounding (tests: float64, 1e-9). The image, the
gradient and the optimiser state stay whole; only VGG's activations are per tile. Given
several devices, each pass deals its windows over them in turn (each window's pixels go to
its device, its Grams or gradient come back to the image's): the windows are independent
within a pass, so the devices compute them at once, each holding one window's pass. Tiled
runs use the Gram style loss and a gradient optimiser (Adam): other style losses, masks,
gradient normalisation and L-BFGS's line search need the whole image at once.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from nst_jax.config import StyleConfig
from nst_jax.core import extractors, geometry, losses
from nst_jax.core.extractors import FeatureSpec, feature_spec
from nst_jax.core.fields import program_key
from nst_jax.core.objective import Params, Targets, used_layers
from nst_jax.core.step import update_image


def _interior(features, layers, interior):
    return {
        name: features[name][top:bottom, left:right]
        for name, (top, bottom, left, right) in zip(layers, interior, strict=True)
    }


def _network(spec) -> tuple[str, ...]:
    """The layers of the extractor of ``spec`` (a :class:`FeatureSpec` or a config), whose
    receptive fields a tiled run needs."""
    return extractors.network(spec.extractor, "a tiled run")


@functools.partial(jax.jit, static_argnames=("layers", "spec", "crops", "interior", "grams"))
def window_forward(params, window, layers, spec: FeatureSpec, crops, interior, grams: bool):
    """Pass 1 on one window (compiled per window shape): the features of its interior at
    ``layers``, or with ``grams`` their unnormalised Gram sums."""
    features = extractors.extract(params, window, layers, spec._replace(remat=False), crops)
    features = _interior(features, layers, interior)
    if not grams:
        return features
    # Unnormalised: the tiles' sums add up to the whole map's h w G.
    return {name: losses.gram_sum(f) for name, f in features.items()}


def _each_window(image: jax.Array, tile: int, layers: Sequence[str], network: tuple):
    """Each tile's :class:`~nst_jax.core.geometry.WindowPlan` and its window's pixels, one
    window at a time."""
    for plan in geometry.window_plans(*image.shape[:2], tile, layers, network):
        window = plan.window
        yield plan, image[window.wtop : window.wbottom, window.wleft : window.wright]


def tiled_features(
    params: Params, image: jax.Array, layers: Sequence[str], spec: FeatureSpec, tile: int
) -> dict[str, jax.Array]:
    """The features of a large ``(H, W, 3)`` image (extractor and pooling of ``spec``),
    computed tile by tile: equal to the untiled features (up to float rounding), with only a
    window's activations at once."""
    layers = tuple(layers)
    rows: dict[str, list[list[jax.Array]]] = {name: [] for name in layers}
    last_top = None
    for plan, pixels in _each_window(image, tile, layers, _network(spec)):
        parts = window_forward(params, pixels, layers, spec, plan.crops, plan.interior, False)
        for name in layers:
            if plan.window.top != last_top:
                rows[name].append([])
            rows[name][-1].append(parts[name])
        last_top = plan.window.top
    return {
        name: jnp.concatenate([jnp.concatenate(row, axis=1) for row in rows[name]], axis=0)
        for name in layers
    }


def tiled_grams(
    params: Params,
    image: jax.Array,
    layers: Sequence[str],
    spec: FeatureSpec,
    tile: int,
    devices: Sequence[jax.Device] | None = None,
) -> dict[str, jax.Array]:
    """Gram matrices (:func:`nst_jax.losses.gram_matrix`) of a large image, summed over tiles
    (pass 1 of the tiled gradient; also a large style image's targets), the windows dealt
    over ``devices`` when several are given."""
    deal = _Dealer(image, devices)
    return _summed_grams(deal, deal.replicate(params), image, tuple(layers), spec, tile)


def _summed_grams(deal, params_on: list, image, layers: tuple, spec: FeatureSpec, tile: int):
    """:func:`tiled_grams` with the dealer and its copies of the params given."""
    sums, network = None, _network(spec)
    for k, (plan, pixels) in enumerate(_each_window(image, tile, layers, network)):
        on = deal.on(k, params_on)
        parts = window_forward(on, deal.send(pixels, k), layers, spec, *plan[1:], True)
        parts = deal.home(parts)
        sums = parts if sums is None else jax.tree.map(jnp.add, sums, parts)
    height, width = image.shape[:2]
    positions = {name: geometry.positions(name, height, width, network) for name in layers}
    return {name: sums[name] / float(positions[name]) for name in layers}


class _Dealer:
    """Deals windows over devices in turn, from and back to the device of ``image``; with
    fewer than two devices it moves nothing."""

    def __init__(self, image: jax.Array, devices: Sequence[jax.Device] | None):
        self.devices = list(devices) if devices is not None and len(devices) > 1 else []
        if self.devices:
            if len(image.devices()) != 1:
                raise ValueError("a tiled image is whole on one device, not sharded")
            (self.home_device,) = image.devices()

    def replicate(self, tree) -> list:
        """``tree`` (params, a pass's constants) on each device, copied once per pass."""
        return [jax.device_put(tree, d) for d in self.devices] or [tree]

    def on(self, k: int, copies: list):
        """Of :meth:`replicate`'s copies, the one on the device of window ``k``."""
        return copies[k % len(copies)]

    def send(self, tree, k: int):
        """``tree`` on the device of window ``k``."""
        return jax.device_put(tree, self.devices[k % len(self.devices)]) if self.devices else tree

    def home(self, tree):
        """A window's results on the image's device."""
        return jax.device_put(tree, self.home_device) if self.devices else tree


@functools.partial(jax.jit, static_argnames=("config", "crops", "interior"))
def window_backward(
    params, window, gram_cotangents, content_targets, content_coefs, config, crops, interior
):
    """Pass 2 on one window (compiled per window shape): the content term of its interior,
    and the gradient of ``<dL/dG, G_tile> + content_tile`` with respect to its pixels."""
    layers = used_layers(config)

    def surrogate(pixels):
        features = extractors.extract(params, pixels, layers, config, crops)
        inside = _interior(features, layers, interior)
        style = sum(
            jnp.vdot(gram_cotangents[name], losses.gram_sum(inside[name]))
            for name in config.style_layers
        )
        content = sum(
            content_coefs[name] * jnp.sum(jnp.square(inside[name] - content_targets[name]))
            for name in config.content_layers
        )
        return style + content, content

    (_, content), grad = jax.value_and_grad(surrogate, has_aux=True)(window)
    return content, grad


@functools.partial(jax.jit, donate_argnums=0)
def _add_window(total, grad, top, left):
    # The windows overlap by their halos: gradients there add up.
    here = jax.lax.dynamic_slice(total, (top, left, 0), grad.shape)
    return jax.lax.dynamic_update_slice(total, here + grad, (top, left, 0))


@functools.partial(jax.jit, static_argnames=("config", "height", "width"))
def _whole_image_terms(config: StyleConfig, grams, targets, x, height: int, width: int):
    """What a step computes on the whole image between the passes, as one program (op by
    op, each small operation compiled a program of its own per shape, and total
    variation's would hold several whole-image temporaries): pass 2's constants (the style
    cotangents and the content coefficients), the style term, and total variation's value
    and gradient."""
    weights = targets["weights"]
    cotangents, style = _style_cotangents(
        config, grams, targets["style"], weights["style"], height, width
    )
    content_weights = config.content_layer_weights or (1.0,) * len(config.content_layers)
    coefs = {
        name: weights["content"] * w / len(config.content_layers) / targets["content"][name].size
        for name, w in zip(config.content_layers, content_weights, strict=True)
    }
    tv, tv_grad = jax.value_and_grad(losses.total_variation_loss)(x, weights["tv"])
    return cotangents, coefs, style, tv, tv_grad


def _style_cotangents(config: StyleConfig, grams, targets, weight, height, width):
    """``dL/dG_l`` per style layer (pass 1's Grams, constants of pass 2), divided by the
    layer's positions so they multiply unnormalised Gram sums; and the style term."""
    layer_weights = config.style_layer_weights or (1.0,) * len(config.style_layers)
    n = len(config.style_layers)
    cotangents, value = {}, 0.0
    for name, w in zip(config.style_layers, layer_weights, strict=True):
        diff = grams[name] - targets[name]
        coef = weight * w / n
        value = value + coef * jnp.mean(jnp.square(diff))
        positions = geometry.positions(name, height, width, _network(config))
        cotangents[name] = coef * 2 * diff / diff.size / positions
    return cotangents, value


def tiled_value_and_grad(
    params: Params,
    x: jax.Array,
    targets: Targets,
    config: StyleConfig,
    tile: int,
    on_tile: Callable[[int, int], None] | None = None,
    devices: Sequence[jax.Device] | None = None,
) -> tuple[tuple[jax.Array, dict[str, jax.Array]], jax.Array]:
    """``jax.value_and_grad(loss_fn, argnums=1, has_aux=True)`` of one ``(H, W, 3)`` image,
    computed tile by tile (two passes, module docstring).

    Args:
      params: VGG19 params (direct or prepared).
      x: the image.
      targets: :func:`nst_jax.make_targets`' pytree (content features of the whole image;
        :func:`tiled_features` computes them at sizes the untiled pass cannot).
      config: Gram style loss, no masks, no gradient normalisation.
      tile: interior size in pixels (:func:`nst_jax.core.geometry.check_tile`).
      on_tile: called with ``(tiles done, tiles in all)`` after each of pass 2's tiles.
      devices: several devices to deal both passes' windows over (``x`` and the gradient
        stay on ``x``'s device), or None: ``x``'s device alone.

    Returns:
      ``((loss, {"content", "style", "tv"}), gradient)``, as the untiled call.
    """
    check_tiled(config)
    layers, network = used_layers(config), _network(config)
    geometry.check_tile(tile, layers, network)
    height, width = x.shape[:2]
    deal = _Dealer(x, devices)
    params_on = deal.replicate(params)  # once a step, for both passes
    spec = feature_spec(config)
    grams = _summed_grams(deal, params_on, x, tuple(config.style_layers), spec, tile)
    whole = {"grams": grams, "targets": targets, "x": x, "height": height, "width": width}
    cotangents, coefs, style, tv, grad = _whole_image_terms(program_key(config), **whole)
    content = 0.0
    constants_on = deal.replicate((cotangents, coefs))
    # One window's pixels at a time: together the windows hold more than the whole image.
    count = sum(1 for _ in geometry.tile_edges(height, width, tile))
    for k, (plan, pixels) in enumerate(_each_window(x, tile, layers, network)):
        content_targets = {
            name: _target_slice(
                targets["content"][name], plan.window, name, (height, width), network
            )
            for name in config.content_layers
        }
        here_cotangents, here_coefs = deal.on(k, constants_on)
        part, window_grad = window_backward(
            deal.on(k, params_on),
            deal.send(pixels, k),
            here_cotangents,
            deal.send(content_targets, k),
            here_coefs,
            program_key(config),
            plan.crops,
            plan.interior,
        )
        part, window_grad = deal.home((part, window_grad))
        content = content + part
        grad = _add_window(grad, window_grad, plan.window.wtop, plan.window.wleft)
        if on_tile is not None:
            on_tile(k + 1, count)
    terms = {"content": content, "style": style, "tv": tv}
    return (content + style + tv, terms), grad


def _target_slice(features: jax.Array, window: geometry.Window, layer: str, size, network):
    """The content target's features of a window's interior, in a ``size`` image."""
    height, width = size
    step = geometry.stride(layer, network)
    top, bottom = geometry.interior_span(window.top, window.bottom, height, step)
    left, right = geometry.interior_span(window.left, window.right, width, step)
    return features[top:bottom, left:right]


def check_tiled(config: StyleConfig) -> None:
    """Raise ``ValueError`` for settings a tiled run cannot honour
    (:meth:`StyleConfig.untileable`)."""
    reason = config.untileable()
    if reason is not None:
        raise ValueError(f"tiled runs {reason}")


def tiled_step(
    config: StyleConfig,
    tx: optax.GradientTransformation,
    tile: int,
    devices: Sequence[jax.Device] | None = None,
) -> Callable:
    """The optimisation step of one image, its loss and gradient tiled (the windows dealt
    over ``devices`` when several are given: :func:`tiled_value_and_grad`).

    Returns:
      ``step(params, targets, x, opt_state, on_tile=None) -> (x, opt_state, loss, terms)``,
      :func:`nst_jax.make_step`'s contract: the update and the clip run on the whole image.
    """
    check_tiled(config)
    geometry.check_tile(tile, used_layers(config), _network(config))
    update = _update(tx)

    def step(params, targets, x, opt_state, on_tile=None):
        (loss, terms), grad = tiled_value_and_grad(
            params, x, targets, config, tile, on_tile, devices
        )
        with warnings.catch_warnings():
            # Donation is best effort: where XLA cannot reuse a buffer it says so once per
            # compile, a line a user can do nothing about.
            warnings.filterwarnings("ignore", "Some donated buffers were not usable")
            x, opt_state = update(grad, opt_state, x, loss)
        return x, opt_state, loss, terms

    return step


@functools.lru_cache(maxsize=8)
def _update(tx: optax.GradientTransformation) -> Callable:
    # One compiled update of the whole image: op by op, each of Adam's operations would
    # allocate another whole-image array. The image, gradient and state are donated.
    return jax.jit(
        lambda grad, state, x, loss: update_image(tx, grad, state, x, loss),
        donate_argnums=(0, 1, 2),
    )


def window_bytes(config: StyleConfig, params, tile: int, dtype=jnp.float32) -> int:
    """Bytes XLA needs for pass 2 on one full window (``tile`` plus a halo on each side):
    what a tiled step needs besides the whole-image arrays (``params``: arrays or shapes)."""
    config = program_key(config)
    layers = used_layers(config)
    # A tile in the middle of an image: halos on all four sides.
    window, crops, interior = geometry.plan_window(
        tile, 2 * tile, tile, 2 * tile, 3 * tile, 3 * tile, layers, _network(config)
    )
    shape = (window.wbottom - window.wtop, window.wright - window.wleft, 3)
    spec = lambda shape: jax.ShapeDtypeStruct(shape, dtype)  # noqa: E731

    def interior_features(p, x):
        features = extractors.extract(p, x, layers, feature_spec(config), crops)
        return _interior(features, layers, interior)

    features = jax.eval_shape(interior_features, params, spec(shape))
    cotangents = {name: spec((features[name].shape[-1],) * 2) for name in config.style_layers}
    targets = {name: spec(features[name].shape) for name in config.content_layers}
    coefs = {name: spec(()) for name in config.content_layers}
    lowered = window_backward.lower(
        params, spec(shape), cotangents, targets, coefs, config, crops, interior
    )
    stats = lowered.compile().memory_analysis()
    return int(stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes)
