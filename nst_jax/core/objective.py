"""The objective for one image: its settings (:class:`ObjectiveConfig`) and the loss that is
minimised (:func:`loss_fn`); the targets it compares against are made by
:mod:`nst_jax.core.targets`.

A run's targets are a pytree, computed once before the loop::

    {"content": {layer: (h, w, c)},   # the content image's features
     "style":   {layer: (c, c)},      # the style image's Gram matrices (or a blend of several)
     "weights": {"content", "style", "tv"},   # the three term weights, as scalars
     "key":     PRNG key}             # where a random term draws (optional; see below)

Randomness: a random style term (``sw``) and a custom loss draw from ``targets["key"]``. The
step replaces it by the key of step ``t``, ``fold_in(key, t)``
(:func:`nst_jax.core.targets.step_targets`), so each step draws anew and the same step
draws the same, resumed or not; ``stylize`` gives image ``i`` the key of its seed
(:func:`nst_jax.core.targets.objective_key`), so an image draws the same in any batch. Any
other entry (``make_targets(..., extra=)``) reaches a custom loss untouched.

With spatial control (``masks``: K content regions, each paired with a style), ``"style"``
holds K statistics per layer, ``{layer: (K, c, c)}``, and two entries are added:
``"masks": {layer: (K, h, w)}`` (each region at the layer's resolution) and
``"weights"["regions"]: (K,)``. Pixels outside every region have no style term.

With ``normalize_gradients`` (jcjohnson/neural-style's ``-normalize_gradients``), each
content and style layer's features pass through :func:`losses.normalize_gradient`: the
loss's value is unchanged, and the gradient reaching each (term, layer) is a unit-L1 direction
times that layer's coefficient (term weight x layer weight / n_layers).

The term weights travel with the targets rather than the config so that they stay traced: a
batch that sweeps them is ``jax.vmap`` over targets, one compiled program. ``loss_fn`` reads
everything structural (layers, per-layer weights, pooling, remat) from the config, whose
``static`` fields are the key of its compiled program (:func:`nst_jax.core.fields.program_key`).

Loss (the TensorFlow tutorial's, https://www.tensorflow.org/tutorials/generative/style_transfer;
Gatys et al., "Image Style Transfer Using Convolutional Neural Networks", CVPR 2016)::

    style_weight / n_style * sum_l mean((G_l(x) - A_l)^2)
      + content_weight / n_content * sum_l mean((F_l(x) - P_l)^2)
      + tv_weight * total_variation(x)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax.core import extractors, losses
from nst_jax.core.fields import (
    check_choice,
    check_config,
    check_finite,
    check_flags,
    check_sweep,
    refuse_traced,
    setting,
)
from nst_jax.core.style_terms import style_term
from nst_jax.errors import InputError

# The tutorial's layers (https://www.tensorflow.org/tutorials/generative/style_transfer).
CONTENT_LAYERS: tuple[str, ...] = ("block5_conv2",)
STYLE_LAYERS: tuple[str, ...] = tuple(f"block{b}_conv1" for b in range(1, 6))
MRF_STYLE_LAYERS = ("block3_conv1", "block4_conv1")  # Li & Wand's (relu3_1, relu4_1)
POOLINGS = ("max", "avg")
TERMS = ("content", "style", "tv")
# Each term's weight, by the config field that sets it.
WEIGHT_FIELDS = {"content": "content_weight", "style": "style_weight", "tv": "tv_weight"}

Params = Mapping[str, Mapping[str, jax.Array]]
Targets = Mapping[str, Mapping[str, jax.Array]]


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
    """What an image is made to share with its content and style: layers, statistics,
    weights, pooling. Defaults are the TensorFlow tutorial's.

    The ``static`` fields shape the compiled loss; the weights (and the blend of several
    styles) only change the targets' values, so one program serves every value and a batch
    may sweep them: each weight may be a number or, for a batch of N images, N numbers.
    ``nst_jax.StyleConfig`` holds every field of this config (and of the optimiser's).
    """

    extractor: str = setting(
        "vgg19",
        "the network whose features are compared: vgg19 (the tutorial's), vgg16, or one "
        "registered (nst_jax.register_extractor)",
        static=True,
    )
    content_layers: tuple[str, ...] = setting(
        CONTENT_LAYERS,
        "the extractor's layers whose features the result shares with the content",
        "layers",
        static=True,
    )
    style_layers: tuple[str, ...] = setting(
        STYLE_LAYERS,
        "the extractor's layers whose statistics (Gram matrices) the result shares with the "
        "style (with style_loss mrf, unless given: block3_conv1,block4_conv1)",
        "layers",
        static=True,
    )
    content_layer_weights: tuple[float, ...] | None = setting(
        None, "one multiplier per content layer (default: 1 each)", "floats", static=True
    )
    style_layer_weights: tuple[float, ...] | None = setting(
        None, "one multiplier per style layer (default: 1 each)", "floats", static=True
    )
    style_loss: str = setting(
        "gram",
        "what of the style is matched: gram (the tutorial's Gram matrices), mean_std (channel "
        "means and deviations, Huang & Belongie 2017), w2 (Wasserstein-2 between the "
        "features' Gaussians), mrf (nearest 3x3 patches, Li & Wand 2016), or a registered "
        "term (nst_jax.register_style_term)",
        static=True,
    )
    content_weight: float | Sequence[float] = setting(1e4, "weight of the content term", "sweep")
    style_weight: float | Sequence[float] = setting(1e-2, "weight of the style term", "sweep")
    tv_weight: float | Sequence[float] = setting(
        30.0, "weight of the total-variation term", "sweep"
    )
    style_blend: tuple[float, ...] | None = setting(
        None,
        "with several styles, one weight each: one style target, their Grams' weighted mean",
        "floats",
    )
    style_weights: tuple[float, ...] | None = setting(
        None,
        "one multiplier of style_weight per style: with masks, each region's weight; "
        "with one style per image, that image's (not with style_blend)",
        "per_style",
    )
    normalize_gradients: bool = setting(
        False,
        "each content and style layer's gradient divided by its L1 norm, then "
        "multiplied by the layer's weight (jcjohnson/neural-style's -normalize_gradients; "
        "losses.normalize_gradient)",
        static=True,
    )
    pooling: str = setting(
        "max", "VGG pooling: max (Keras) or avg (Gatys et al.)", choices=POOLINGS, static=True
    )
    remat: bool = setting(
        False,
        "recompute each VGG block's activations in the backward pass (less memory "
        "on accelerators, ~1/3 more time)",
        static=True,
    )

    def __post_init__(self) -> None:
        self._normalise_objective()
        self.validate_objective()

    def _normalise_objective(self) -> None:
        """Lists stored as tuples, so configs stay hashable (static under ``jax.jit``)."""
        refuse_traced(self)
        for field in ("content_layers", "style_layers"):
            layers = getattr(self, field)
            if not isinstance(layers, (str, tuple, list)):
                raise ValueError(f"{field} must be layer names, got {layers!r}")
            object.__setattr__(self, field, (layers,) if isinstance(layers, str) else tuple(layers))
        for field in ("content_layer_weights", "style_layer_weights", "style_blend"):
            _as_floats(self, field)
        _as_floats(self, "style_weights")
        for field in WEIGHT_FIELDS.values():
            _as_floats(self, field, scalar=True)
        if self.style_loss == "mrf" and self.style_layers == STYLE_LAYERS:
            object.__setattr__(self, "style_layers", MRF_STYLE_LAYERS)

    def validate_objective(self) -> None:
        """Raise ``ValueError`` with one line naming the first bad setting of the objective."""
        check_flags(self)
        if not self.content_layers or not self.style_layers:
            raise ValueError("content_layers and style_layers must each name at least one layer")
        if not isinstance(self.extractor, str) or self.extractor not in extractors.names():
            # Named first: the layers are the extractor's, and would be blamed instead.
            name = self.extractor
            shown_as = name if isinstance(name, str) and name.isidentifier() else repr(name)
            known = ", ".join(extractors.names())
            raise ValueError(f"extractor={shown_as}: unknown extractor; known: {known}")
        for field in ("content_layers", "style_layers"):
            try:
                extractors.check_layers(self.extractor, getattr(self, field))
            except ValueError as e:
                raise ValueError(f"{field}: {e}") from None
        for layers, field in (
            ("content_layers", "content_layer_weights"),
            ("style_layers", "style_layer_weights"),
        ):
            weights = getattr(self, field)
            if weights is not None and len(weights) != len(getattr(self, layers)):
                raise ValueError(
                    f"{field} has {len(weights)} values for {len(getattr(self, layers))} {layers}"
                )
        check_choice("pooling", self.pooling, POOLINGS)
        if self.pooling != "max" and not extractors.has_known_fields(self.extractor):
            raise ValueError(
                f"pooling avg replaces VGG's pools; extractor {self.extractor} pools itself"
            )
        style_term(self.style_loss)  # registered, by name
        for field in ("content_layer_weights", "style_layer_weights", "style_blend"):
            check_finite(field, getattr(self, field) or ())
        check_finite("style_weights", self.style_weights or ())
        for field in WEIGHT_FIELDS.values():
            check_finite(field, getattr(self, field))
        self._validate_blend()
        _ = self.sweep_size  # sweeps must agree in length

    def _validate_blend(self) -> None:
        if self.style_weights is not None and self.style_blend is not None:
            raise ValueError("style_blend already weights each style: give no style_weights")
        if self.style_blend is not None and self.style_loss != "gram":
            raise ValueError("style_blend blends Gram matrices: it needs style_loss gram")
        if self.style_blend is not None and not sum(self.style_blend) > 0:
            raise ValueError("style_blend needs at least one weight > 0")

    def check_style_count(self, count: int) -> None:
        """Raise ``ValueError`` unless ``count`` style images fit the per-style settings:
        ``style_blend`` has one weight per style image."""
        if self.style_blend is not None and len(self.style_blend) != count:
            raise ValueError(
                f"style_blend has {len(self.style_blend)} weights for {count} style images"
            )

    def unmaskable(self) -> str | None:
        """Why these settings cannot take content masks (spatial control), or ``None``."""
        if self.style_loss != "gram":
            return (
                "a masked run takes guided Gram matrices: it needs style_loss gram, "
                f"not {self.style_loss}"
            )
        if self.style_blend is not None:
            return "a masked run pairs each style with a region: give no style_blend"
        return None

    @property
    def sweep_size(self) -> int | None:
        """Length of the swept settings, or ``None`` when every setting is a single number."""
        lengths = {len(v) for v in self._swept() if isinstance(v, tuple)}
        if len(lengths) > 1:
            raise ValueError(f"swept settings have different lengths {sorted(lengths)}")
        return lengths.pop() if lengths else None

    def _swept(self) -> list:
        return [getattr(self, field) for field in WEIGHT_FIELDS.values()]

    def replace(self, **changes):
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)


def _as_floats(config, field: str, scalar: bool = False) -> None:
    """Store field ``field`` as a tuple of floats (or, with ``scalar``, a single number as a
    float): NumPy and 0-d JAX numbers are accepted as Python's."""
    value = getattr(config, field)
    if value is None or isinstance(value, bool):
        return  # None is "not set"; a bool is refused by the checks
    if isinstance(value, (str, bytes)):  # a string is not its characters' numbers
        raise ValueError(f"{field} must be a number or numbers, got {value!r}")
    if scalar:
        check_sweep(field, value)
    try:
        one = scalar and np.ndim(value) == 0
        value = float(value) if one else tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{field} must be a number or numbers, got {value!r}") from None
    object.__setattr__(config, field, value)


def used_layers(config: ObjectiveConfig) -> tuple[str, ...]:
    """Style and content layers, each once, in that order."""
    return tuple(dict.fromkeys(config.style_layers + config.content_layers))


def _layer_weights(layers: Sequence[str], weights: Sequence[float] | None):
    return None if weights is None else dict(zip(layers, weights, strict=True))


def loss_fn(
    params: Params, x: jax.Array, targets: Targets, config: ObjectiveConfig
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The total loss of one image and its three weighted terms. Pure; differentiable in ``x``.

    Args:
      params: the extractor's params (VGG19's by default, direct or
        :func:`nst_jax.prepare_params`'d: Winograd on CPU).
      x: ``(H, W, 3)`` float RGB image, the one being optimised.
      targets: from :func:`nst_jax.make_targets` (term weights included; with ``"key"``,
        the PRNG key of this step, which a random style term draws from).
      config: an :class:`ObjectiveConfig` or a ``nst_jax.StyleConfig``: extractor, layers,
        per-layer weights, pooling and ``remat`` (static under ``jax.jit``).

    Returns:
      ``(loss, {"content", "style", "tv"})``, scalars; ``loss`` is their sum.
    """
    check_config(config, ObjectiveConfig)  # at trace time: free under jit
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):  # values: make_targets checks
        raise TypeError(f"x must be a floating-point RGB image in [0, 1], got {jnp.result_type(x)}")
    features = extractors.extract(params, x, used_layers(config), config)
    weights = targets["weights"]
    content_weights = _layer_weights(config.content_layers, config.content_layer_weights)
    style_weights = _layer_weights(config.style_layers, config.style_layer_weights)
    normalize = config.normalize_gradients
    content = _term_features(
        features, config.content_layers, content_weights, weights["content"], normalize
    )
    style = _term_features(
        features, config.style_layers, style_weights, weights["style"], normalize
    )
    content_term = losses.content_loss(
        content, targets["content"], weights["content"], content_weights
    )
    if "masks" in targets:
        style_value = _regions_style_loss(style, targets, style_weights)
    else:
        term = style_term(config.style_loss)
        stats = {name: term.statistic(f) for name, f in style.items()}
        extra = {"key": _key(targets, config)} if term.random else {}
        style_value = term.loss(stats, targets["style"], weights["style"], style_weights, **extra)
        if jnp.shape(style_value) != ():
            raise InputError(
                f"style_loss {config.style_loss}: its loss returned shape "
                f"{tuple(jnp.shape(style_value))}, not a scalar"
            )
    terms = {
        "content": content_term,
        "style": style_value,
        "tv": losses.total_variation_loss(x, weights["tv"]),
    }
    return terms["style"] + terms["content"] + terms["tv"], terms


def _key(targets: Targets, config: ObjectiveConfig) -> jax.Array:
    """The targets' PRNG key, for a random style term."""
    if "key" not in targets:
        raise ValueError(
            f'style_loss {config.style_loss} draws at random: its targets need a "key" '
            "(make_targets(..., key=...), or a config with a seed)"
        )
    return targets["key"]


def _term_features(features, layers, layer_weights, weight, normalize: bool):
    """The features one term sees; with ``normalize``, each behind
    :func:`losses.normalize_gradient` with its coefficient in the term (weight x layer
    weight / n_layers)."""
    if not normalize:
        return {name: features[name] for name in layers}
    return {
        name: losses.normalize_gradient(
            features[name],
            weight * (1.0 if layer_weights is None else layer_weights[name]) / len(layers),
        )
        for name in layers
    }


def _regions_style_loss(style, targets: Targets, layer_weights) -> jax.Array:
    """The sum over regions k of the Gram style loss between the image's guided Grams over
    region k and style k's, weighted by style weight x region weight. A Python loop over the
    (few) regions: one region with an all-ones mask is today's loss bit for bit."""
    weights, masks = targets["weights"], targets["masks"]
    total = 0.0
    for k in range(weights["regions"].shape[0]):
        grams = {name: losses.guided_gram(f, masks[name][k]) for name, f in style.items()}
        target = {name: targets["style"][name][k] for name in style}
        total = total + losses.style_loss(
            grams, target, weights["style"] * weights["regions"][k], layer_weights
        )
    return total
